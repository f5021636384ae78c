// The photo searched, carried to the page in the other language (the language toggle of
// the search page): app.js searches it again there. Loaded on every page, before app.js.
(function () {
  "use strict";
  // The language toggle after a photo search: the page in the other language searches the
  // same photo again (the results were lost, the photo to be chosen again). A file cannot
  // travel in an address: it is kept in this browser's IndexedDB for the next page this tab
  // opens, which deletes it whatever page it is (used only within CARRY_MS); a page opened
  // otherwise does not open the storage (a flag in this tab's sessionStorage says a photo
  // was carried).
  const CARRIED = "search";
  const CARRYING = "vitrine-carrying";
  const CARRY_MS = 60000;
  const CARRY_WAIT_MS = 500;
  let storage = null;
  try { storage = window.indexedDB || null; } catch (error) { /* (an opaque origin) */ }
  function carriedStore(mode, use) {
    return new Promise(function (resolve) {
      let opening;
      try {
        opening = storage.open("vitrine-carried", 1);
      } catch (error) { resolve(null); return; }
      opening.onupgradeneeded = function () { opening.result.createObjectStore("kept"); };
      opening.onerror = opening.onblocked = function () { resolve(null); };
      opening.onsuccess = function () {
        const db = opening.result;
        try {
          const step = db.transaction("kept", mode);
          const asked = use(step.objectStore("kept"));
          step.oncomplete = function () { db.close(); resolve(asked ? asked.result : true); };
          step.onerror = step.onabort = function () { db.close(); resolve(null); };
        } catch (error) { db.close(); resolve(null); }
      };
    });
  }
  let carrying = false;
  try {
    carrying = sessionStorage.getItem(CARRYING) !== null;
    sessionStorage.removeItem(CARRYING);
  } catch (error) { /* no session storage: nothing was carried */ }
  const taken = carrying && storage ? carriedStore("readwrite", function (store) {
    const found = store.get(CARRIED);
    store.delete(CARRIED);
    return found;
  }) : null;

  // The photo carried here, for this very address and not too long ago (a promise of
  // {file, category}, else of null), and the toggle's click that carries the one `shown()`
  // gives (null: none searched, the link goes as any link does).
  window.vitrineCarry = {
    taken: taken === null ? null : taken.then(function (carried) {
      if (!carried || !(carried.file instanceof Blob) || carried.to !== window.location.href ||
          !(Date.now() - carried.at < CARRY_MS)) return null;
      return carried;
    }),
    offer: function (toggle, shown) {
      if (!storage) return;
      toggle.addEventListener("click", async function (event) {
        const photo = shown();
        if (!photo || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey ||
            event.altKey) return;  // (a new tab or window: this page stays as it is)
        event.preventDefault();
        const to = toggle.href;
        try { sessionStorage.setItem(CARRYING, "1"); } catch (error) { /* not carried */ }
        // (a storage that never answers, an extension's or an old Safari's, kept the page
        // where it was: the link goes on after CARRY_WAIT_MS, the photo not carried)
        await Promise.race([
          carriedStore("readwrite", function (store) {
            store.put({ file: photo.file, category: photo.category, to: to, at: Date.now() },
                      CARRIED);
          }),
          new Promise(function (resolve) { setTimeout(resolve, CARRY_WAIT_MS); })]);
        window.location.assign(to);
      });
    }
  };
})();
