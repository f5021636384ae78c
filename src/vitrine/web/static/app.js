// Search by photo: drag and drop, a preview, and results put in place without reloading.
// Without this script the same form posts normally and the server renders the results page.
(function () {
  "use strict";
  // The photo carried from the page in the other language (carry.js; none without it).
  const carry = window.vitrineCarry || { taken: null, offer: function () {} };

  const form = document.getElementById("photo-search");
  if (!form) return;
  const toggle = document.querySelector("a.lang-switch");
  const input = form.querySelector('input[type="file"]');
  // a list of the categories, or for a store with many a text field (typed, with suggestions)
  const category = form.querySelector("[name=category]");
  // the price and attribute filter's fields (their values sent with each search, as the
  // form without this script sends them)
  const filterFields = Array.from(form.querySelectorAll("[data-filter]"));
  function filterValues() {
    return filterFields.filter(function (f) { return f.value !== ""; })
      .map(function (f) { return [f.name, f.value]; });
  }
  const results = document.getElementById("results");
  const status = document.getElementById("search-status");
  const preview = form.querySelector(".preview");
  const previewImg = document.getElementById("preview-img");
  const caption = preview.querySelector("figcaption");
  const yourPhoto = caption.textContent;
  let chosenName = "";
  let undrawn = false; // the chosen photo is one this browser does not draw (HEIC outside Safari)
  const maxBytes = Number(form.dataset.maxBytes);
  // The page says "choose a photo first" itself, in its language, not the browser's bubble
  // (which stays for a browser without this script).
  form.noValidate = true;
  let previewUrl = null;
  let latest = 0; // the newest search; an older answer arriving late is dropped
  let inFlight = null; // the AbortController of the search on its way
  const CATEGORY_WAIT_MS = 400; // a list stepped through with the arrow keys: one search
  let categoryTimer = null;

  // Screen readers hear one short sentence from the status region (an error is an alert of
  // its own); focus stays where the shopper is.
  function announce(text) {
    status.textContent = text;
  }

  // The page's title says what it shows, as the server's own pages do ("Erro: …",
  // "Resultados · …"), and the photo field is marked invalid, described by the sentence,
  // while the photo is what was refused (a screen reader back on the field hears why).
  const formats = "photo-formats";
  function titled(state) {
    document.title = state === "results" ? form.dataset.titleResults
      : state === "error" ? form.dataset.titleError : form.dataset.title;
  }
  function photoRefused(refused) {
    // (a filter's bad value is the filter's fault: its fields are marked, not the photo)
    // (price fields named by id, attributes by the values refused: an emptied field is not
    // sent, so the server's numbers named the wrong one: hunt395)
    const bad = results.querySelector(".filter-error");
    const invalid = bad ? (bad.dataset.fields || "").split(" ") : [];
    let refusedValues = [];
    try { refusedValues = bad ? JSON.parse(bad.dataset.values || "[]") : []; } catch (e) { }
    filterFields.forEach(function (f) {
      const wrong = f.name === "attr" ? f.value !== "" && refusedValues.indexOf(f.value) >= 0
        : invalid.indexOf(f.id) >= 0;
      if (wrong) {
        f.setAttribute("aria-invalid", "true");
        f.setAttribute("aria-describedby", "filter-error");
      } else {
        f.removeAttribute("aria-invalid");
        f.removeAttribute("aria-describedby");
      }
    });
    const alert = refused && !bad && results.querySelector("[role=alert]");
    if (alert) {
      alert.id = "photo-error";
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("aria-describedby", formats + " photo-error");
    } else {
      input.removeAttribute("aria-invalid");
      input.setAttribute("aria-describedby", formats);
    }
  }

  function showMessage(text, isError, photoFault) {
    const p = document.createElement("p");
    p.className = isError ? "message error" : "message";
    if (isError) p.setAttribute("role", "alert");
    p.textContent = text;
    results.replaceChildren(p);
    announce(isError ? "" : text);
    titled(isError ? "error" : "");
    photoRefused(isError && photoFault);
  }

  // How many products were found and what the page says beside them (the category the photo
  // looks like, or that there are none), not every card read aloud.
  function summary() {
    if (results.querySelector("[role=alert]")) return "";
    const n = results.querySelectorAll("li.card").length;
    const found = n === 1 ? form.dataset.foundOne : form.dataset.found;
    const notes = Array.from(results.querySelectorAll(".guess, .message"),
                             function (e) { return e.textContent.replace(/\s+/g, " ").trim(); });
    return (n ? [found.replace("{n}", n)] : []).concat(notes).join(" ");
  }

  function hidePreview() {
    preview.hidden = true;
    previewImg.removeAttribute("src");
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = null;
    undrawn = false;
  }

  function showPreview(file) {
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(file);
    chosenName = file.name;
    undrawn = false;
    previewImg.hidden = false;
    caption.textContent = yourPhoto;
    previewImg.src = previewUrl;
    preview.hidden = false;
  }

  // A photo the server read but this browser cannot draw: its name instead of the image.
  function nameOnly() {
    previewImg.hidden = true;
    // (a function: "$&" or "$'" in a file name is not a replacement pattern)
    caption.textContent = form.dataset.noPreview.replace("{name}", function () {
      return chosenName;
    });
    preview.hidden = false;
  }

  // A file the browser cannot show: no broken image beside the answer. A photo the search
  // then reads (HEIC outside Safari) is named; a file it refuses shows nothing.
  previewImg.addEventListener("error", function () {
    if (!previewImg.getAttribute("src")) return;
    undrawn = true;
    if (shown && shown.file === input.files[0]) nameOnly();
    else preview.hidden = true;
  });

  // A refusal before sending is the newest answer: a search still on its way is dropped.
  function refuse(text) {
    ++latest;
    cancel();
    sending = null;
    results.removeAttribute("aria-busy");
    hidePreview();
    showMessage(text, true, true);
    reveal();  // (below a phone's screen, a tap seemed to do nothing: helper-225)
  }

  // The language toggle keeps the category and filter chosen since the page was made.
  // The value a field was served with (a list: its option marked selected, else its first).
  function asServed(field) {
    if (field.tagName !== "SELECT") return field.defaultValue;
    const marked = Array.from(field.options).find(function (o) { return o.defaultSelected; });
    return (marked || field.options[0] || {value: ""}).value;
  }

  function keepCategoryInToggle() {
    if (!toggle || !category) return;
    const url = new URL(toggle.href, window.location.href);
    if (category.value) url.searchParams.set("category", category.value);
    else url.searchParams.delete("category");
    ["min_price", "max_price", "attr"].forEach(function (name) { url.searchParams.delete(name); });
    filterValues().forEach(function (pair) { url.searchParams.append(pair[0], pair[1]); });
    toggle.href = url.pathname + url.search;
  }

  // The photo and category of the search on its way (Enter in a typed category sends both
  // its change and the form's submit: one search), and of the newest one shown (a suggestion
  // picked searches at once; leaving the field then changes nothing).
  let sending = null;
  let shown = null;

  function same(a, b) {
    return a && b && a.file === b.file && a.category === b.category && a.filter === b.filter;
  }

  // A newer search drops the one on its way (the server stops reading it; the answer would
  // be dropped anyway).
  function cancel() {
    if (inFlight) inFlight.abort();
    inFlight = null;
  }

  // The sentence for an answer that is not results: the catalogue being rewritten (409),
  // not available now (503: its store replaced under the server, the server stopping or
  // short of memory), the server's failure (other 5xx), else the photo.
  function failure(status) {
    if (status === 409) return form.dataset.busy;
    if (status === 503) return form.dataset.unavailable;
    if (status >= 500) return form.dataset.serverError;
    return form.dataset.error;
  }

  // Results below a phone's screen (under the photo's preview) are brought into view; focus
  // stays where it is, and in view: the page scrolls no further than puts the focused field
  // (the category or the photo, chosen by keyboard) at the top (scrolled to the results,
  // the focused list was 344 px above a 667-px screen, its focus ring unseen).
  // Whether a focused field shows its ring (focused from the keyboard); a browser that
  // cannot tell: as if it did.
  function focusShown(field) {
    try { return field.matches(":focus-visible"); } catch (error) { return true; }
  }

  function reveal() {
    const top = results.getBoundingClientRect().top;
    if (top <= window.innerHeight - 80) return;
    const focused = document.activeElement;
    // (a field focused by a tap shows no ring: the results come into view as before;
    // helper-191)
    const keep = focused && form.contains(focused) && focusShown(focused)
      ? focused.getBoundingClientRect().top - 8 : top;
    const by = Math.min(top, keep);
    if (by > 0) window.scrollBy(0, by);
  }

  // The result a shopper opened, and where the page was: a page the browser did not keep
  // whole (its back/forward cache) searches again on Back, and focus and the scroll went to
  // the top of the results (helper-232); both come back once the results are in.
  // Kept for the search it was opened from (the photo and the category): not a link opened
  // in a new tab (its page stays), nor for another search (helper-235).
  const OPENED = "vitrine-opened";
  function searched(asked) {
    const f = asked.file;
    return [f.name, f.size, f.lastModified, asked.category, asked.filter].join("\n");
  }
  function forget() {
    try { sessionStorage.removeItem(OPENED); } catch (error) { /* no storage: nothing kept */ }
  }
  results.addEventListener("click", function (event) {
    const link = event.target.closest && event.target.closest("a[href]");
    if (!link || !shown || event.defaultPrevented || event.button !== 0 || event.ctrlKey ||
        event.metaKey || event.shiftKey || event.altKey || link.target) return;
    try {
      sessionStorage.setItem(OPENED, JSON.stringify({ href: link.getAttribute("href"),
                                                      y: window.scrollY,
                                                      category: shown.category,
                                                      search: searched(shown) }));
    } catch (error) { /* storage refused: Back shows the results' top */ }
  });
  function opened() {
    try {
      const kept = JSON.parse(sessionStorage.getItem(OPENED));
      sessionStorage.removeItem(OPENED);
      return kept && typeof kept.href === "string" ? kept : null;
    } catch (error) { return null; }
  }
  // The category of the results shown, kept with this page's entry in the tab's history: a
  // typed category field is not restored by the browser (autocomplete off), so Back to this
  // page from anywhere but a result (the header's links, Forward then Back) searched the
  // photo in every category.
  function remember(asked) {
    try {
      history.replaceState(Object.assign({}, history.state, { searchedIn: asked.category }),
                           "");
    } catch (error) { /* (refused: Back searches as the field says) */ }
  }
  function searchedIn() {
    const state = history.state;
    return state && typeof state.searchedIn === "string" ? state.searchedIn : null;
  }
  function reopen(kept) {
    const link = kept && Array.from(results.querySelectorAll("a[href]")).find(
      function (a) { return a.getAttribute("href") === kept.href; });
    if (!link) return false;
    window.scrollTo(0, Number(kept.y) || 0);
    link.focus({ preventScroll: true });
    return true;
  }

  async function search(file, again, back) {
    if (!file) { refuse(form.dataset.noFile); return; }
    if (file.size > maxBytes) { refuse(form.dataset.tooLarge); return; }
    const asked = { file: file, category: category ? category.value : "",
                    filter: JSON.stringify(filterValues()) };
    if (same(sending, asked) || (!again && same(shown, asked))) return;
    const ticket = ++latest;
    if (!back) forget();
    cancel();
    const controller = new AbortController();
    inFlight = controller;
    // a server that stops answering (hung, overloaded) is said, not "searching…" for ever;
    // the wait starts with the upload, so it grows by the photo's time at 50 kB/s (a slow
    // uplink's 10 MB: 200 s)
    let late = false;
    const timer = setTimeout(function () { late = true; controller.abort(); },
                             (Number(form.dataset.waitMs) || 60000) + file.size / 50);
    sending = asked;
    shown = null;
    showPreview(file);
    showMessage(form.dataset.searching, false);
    results.setAttribute("aria-busy", "true");
    reveal();  // "searching…" seen from the start: on a phone it was below the screen for
    // the whole upload, the file's name the only change (helper-225)
    const body = new FormData();
    let unread = true;
    try {
      // the photo's bytes read here and sent: one that cannot be read (changed or moved since
      // it was chosen, a folder dropped) is said as such, not as a connection lost
      body.append("image", new File([await file.arrayBuffer()], file.name,
                                    { type: file.type, lastModified: file.lastModified }));
      unread = false;
      if (category) body.append("category", asked.category);
      JSON.parse(asked.filter).forEach(function (pair) { body.append(pair[0], pair[1]); });
      const response = await fetch(form.dataset.fragmentUrl,
                                   { method: "POST", body: body, signal: controller.signal });
      const type = response.headers.get("content-type") || "";
      // only the server's own results block, which it marks: a reverse proxy's HTML error
      // page (nginx's 502 or 504) is a failure to say, not a page to show among the results
      const ours = type.startsWith("text/html") &&
        response.headers.get("Vitrine-Fragment") === "results";
      const html = ours ? await response.text() : null;
      if (ticket !== latest) return;
      // (the photo refused: not the server busy, stopping or failing)
      const refused = response.status >= 400 && response.status < 500 && response.status !== 409;
      if (response.status === 413) {
        showMessage(form.dataset.tooLarge, true, true);
      } else if (html !== null) {
        // The fragment is rendered (and escaped) by the server's own template.
        results.innerHTML = html;
        announce(summary());
        titled(response.ok ? "results" : "error");
        photoRefused(refused);
        if (response.ok) {
          shown = asked;
          remember(asked);
          if (undrawn) nameOnly();
          if (back && back.search === searched(asked) && reopen(back)) return;
        }
      } else {
        showMessage(failure(response.status), true, refused);
      }
      reveal();
    } catch (err) {
      if (unread && ticket === latest) { refuse(form.dataset.unreadable); return; }
      // no answer at all: the server is down or the connection dropped, or is too slow
      if (ticket === latest) {
        showMessage(late ? form.dataset.slow : form.dataset.offline, true);
        reveal();
      }
    } finally {
      clearTimeout(timer);
      if (ticket === latest) {
        results.removeAttribute("aria-busy");
        sending = null;
        inFlight = null;
      }
    }
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    clearTimeout(categoryTimer);
    search(input.files[0], true);
  });
  // The photo taken away (the field cleared): its preview and results go with it, not left
  // under a form that no longer holds it (a category picked then searched nothing).
  function clearSearch() {
    ++latest;
    cancel();
    clearTimeout(categoryTimer);
    sending = shown = null;
    results.removeAttribute("aria-busy");
    results.replaceChildren();
    hidePreview();
    announce("");
    titled("");
    photoRefused(false);
  }
  input.addEventListener("change", function () {
    if (input.files[0]) search(input.files[0], true);
    else clearSearch();
  });
  // Another category searches the chosen photo again (a typed one once it is entered: Enter,
  // leaving the field, or a suggestion picked); the toggle follows each letter.
  if (category) category.addEventListener("change", function () {
    keepCategoryInToggle();
    clearTimeout(categoryTimer);
    if (!input.files[0]) return;
    categoryTimer = setTimeout(function () { search(input.files[0], false); },
                               CATEGORY_WAIT_MS);
  });
  if (category) category.addEventListener("input", function (event) {
    keepCategoryInToggle();
    // A suggestion picked is an input that is not typing (Chromium sends a plain Event,
    // Firefox and Safari insertReplacementText); a letter typed never searches.
    const picked = !(event instanceof InputEvent) || event.inputType === "insertReplacementText";
    if (picked && category.list && input.files[0] &&
        Array.from(category.list.options).some(function (o) { return o.value === category.value; })) {
      clearTimeout(categoryTimer);
      search(input.files[0], false);
    }
  });
  // Another price or attribute searches the chosen photo again (a price once entered: Enter,
  // or leaving the field); "Limpar filtros" under results empties the fields and does too.
  filterFields.forEach(function (f) {
    f.addEventListener("input", keepCategoryInToggle);  // (the toggle follows each digit)
    f.addEventListener("change", function () {
      keepCategoryInToggle();
      clearTimeout(categoryTimer);
      if (!input.files[0]) return;
      categoryTimer = setTimeout(function () { search(input.files[0], false); },
                                 CATEGORY_WAIT_MS);
    });
  });
  document.addEventListener("click", function (event) {
    const link = event.target.closest && event.target.closest("a.clear-filters");
    if (!link || !input.files[0] || event.button !== 0 || event.ctrlKey || event.metaKey ||
        event.shiftKey || event.altKey) return;
    event.preventDefault();
    filterFields.forEach(function (f) { f.value = ""; });
    keepCategoryInToggle();
    search(input.files[0], false);
  });
  // A browser that restores the form (Back, reload) sets the category without a change event,
  // and may keep the chosen photo without its results (a page not kept whole): search again.
  function restored(event) {
    if (event && event.persisted) forget();  // (the page kept whole: the browser restores
    // the place itself)
    // (only a value the browser restored: a category the store lacks, in the address, is no
    // option of the list, whose "" would drop it from the toggle: helper-188)
    if ((category && category.value !== asServed(category)) ||
        filterFields.some(function (f) { return f.value !== asServed(f); })) {
      keepCategoryInToggle();
    }
    // a filter the browser restored is shown, not kept shut under its summary (hunt385)
    if (filterFields.some(function (f) { return f.value !== asServed(f); })) {
      const box = form.querySelector("details.filter-box");
      if (box) box.open = true;
    }
    if (input.files[0] && !results.querySelector("li.card, .message")) {
      const kept = opened();  // (read once the photo is back: the page's first call may
      // come before the browser restored it)
      // a typed category field is not restored (autocomplete off): the one searched in,
      // kept with the result opened, is put back (the photo was searched in every
      // category: helper-240)
      const was = kept && typeof kept.category === "string" ? kept.category : searchedIn();
      if (was !== null && category && category.tagName === "INPUT" &&
          category.value === asServed(category) && was !== category.value) {
        category.value = was;
        keepCategoryInToggle();
      }
      search(input.files[0], true, kept);
    }
  }
  restored();
  window.addEventListener("pageshow", restored);

  if (toggle) carry.offer(toggle, function () { return shown; });
  if (carry.taken) {
    carry.taken.then(function (carried) {
      if (!carried || input.files.length) return;
      try {
        const files = new DataTransfer();
        files.items.add(carried.file);
        input.files = files.files;
      } catch (error) { return; }  // (a browser that cannot set a file field)
      if (category && typeof carried.category === "string" && !category.value) {
        category.value = carried.category;
        keepCategoryInToggle();
      }
      search(input.files[0], true);
    });
  }
  ["dragenter", "dragover"].forEach(function (name) {
    form.addEventListener(name, function (event) {
      event.preventDefault();
      form.classList.add("dragging");
    });
  });
  ["dragleave", "dragend", "drop"].forEach(function (name) {
    form.addEventListener(name, function () { form.classList.remove("dragging"); });
  });
  form.addEventListener("drop", function (event) {
    event.preventDefault();
    const files = event.dataTransfer && event.dataTransfer.files;
    if (!files || !files.length) return;
    input.files = files;
    search(files[0]);
  });
  // A photo dropped beside the drop zone must not make the browser leave the page.
  window.addEventListener("dragover", function (event) { event.preventDefault(); });
  window.addEventListener("drop", function (event) { event.preventDefault(); });
})();
