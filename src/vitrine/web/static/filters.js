// The lists' filter fields (the catalogue's, a product page's similar list's, the photo
// search's): on every page, before app.js.
(function () {
  "use strict";
  // Firefox shows a suggestion's label alone, and suggests by it: a category's count
  // ("6 produtos", shown beside the name elsewhere) gets the name in front of it there.
  if (/\bFirefox\//.test(navigator.userAgent)) {
    document.querySelectorAll("datalist option[label]").forEach(function (option) {
      option.label = option.value + " (" + option.label + ")";
    });
  }

  // A listed page's filter fields say its address's filter: shown again (Back), they showed
  // a value typed and sent since ("abc" beside a list up to R$ 60,00: hunt395).
  window.addEventListener("pageshow", function () {
    document.querySelectorAll("form.filters [data-filter], form.similar-filters [data-filter]")
      .forEach(function (f) {
        const served = f.tagName === "SELECT" && Array.from(f.options).find(function (o) {
          return o.defaultSelected; });
        if (f.tagName === "SELECT") f.selectedIndex = served ? served.index : 0;
        else f.value = f.defaultValue;
      });
  });

  // A filter form sent by GET writes only the fields that hold a value, as the pages' own
  // links do ("/?max_price=100", not "/?category=&q=&min_price=&max_price=100&attr=&attr="):
  // the server reads an empty field as no field. (Without this script the address keeps
  // them, to the same list.)
  document.querySelectorAll("form.filters, form.similar-filters").forEach(function (form) {
    form.addEventListener("formdata", function (event) {
      const data = event.formData;
      const kept = Array.from(data.entries()).filter(function (pair) {
        return typeof pair[1] !== "string" || pair[1] !== "";
      });
      Array.from(new Set(Array.from(data.keys()))).forEach(function (name) {
        data.delete(name);
      });
      kept.forEach(function (pair) { data.append(pair[0], pair[1]); });
    });
  });
})();
