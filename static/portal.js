// Small progressive enhancements; every page works without this file.
(function () {
  "use strict";

  function focusErrorSummary() {
    var summary = document.querySelector("[data-autofocus]");
    if (summary) summary.focus();
  }

  function wirePrintButtons() {
    document.querySelectorAll("[data-print]").forEach(function (button) {
      button.addEventListener("click", function () { window.print(); });
    });
  }

  // A slip's QR code opens /access#code=XXXX: the fragment never reaches the server, and this copies it
  // into the form, then removes it from the address bar and history.
  function fillCodeFromFragment() {
    var field = document.getElementById("code");
    if (!field || !window.location.hash) return;
    var match = /^#code=([0-9A-Za-z-]{1,40})$/.exec(window.location.hash);
    if (match) field.value = match[1].toUpperCase();
    history.replaceState(null, "", window.location.pathname);
  }

  // htmx records the current path in sessionStorage when it loads; pages here never rely on it.
  function forgetHtmxPath() {
    try { window.sessionStorage.removeItem("htmx-current-path-for-history"); } catch (error) { /* storage blocked */ }
  }

  document.addEventListener("DOMContentLoaded", function () {
    forgetHtmxPath();
    focusErrorSummary();
    wirePrintButtons();
    fillCodeFromFragment();
  });
})();
