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

  // The file's name as upload messages show it: the server's shown_filename does the same (no invisible
  // characters, at most 60 characters with the extension kept).
  var MAX_SHOWN_FILENAME = 60;

  function shownFilename(raw) {
    var name = raw.replace(/[\p{Cc}\p{Cf}\p{Co}\p{Cs}\p{Zl}\p{Zp}]/gu, "").split(/\s+/).join(" ").trim();
    var chars = Array.from(name);
    if (chars.length <= MAX_SHOWN_FILENAME) return name;
    var dot = name.lastIndexOf(".");
    var extension = dot > 0 ? Array.from(name.slice(dot)) : [];
    var tail = extension.length > 0 && extension.length <= 11 ? extension : chars.slice(-10);
    return chars.slice(0, MAX_SHOWN_FILENAME - tail.length - 1).join("") + "…" + tail.join("");
  }

  // MB of 10^6 bytes with one decimal, rounded up as the server does, in the page's language.
  function megabytesText(size) {
    var lang = document.documentElement.lang || undefined;
    var value = Math.ceil(size / 100000) / 10;
    return value.toLocaleString(lang, { minimumFractionDigits: 1, maximumFractionDigits: 1 });
  }

  // The server puts its size limit on the file field (data-max-bytes) and the translated message, with
  // {name} and {size} still to fill in, in data-too-large. Returns the message, or "" when the file fits.
  function fileTooLargeMessage(input) {
    var file = input.files && input.files[0];
    var limit = Number(input.dataset.maxBytes);
    if (!file || !limit || file.size <= limit || !input.dataset.tooLarge) return "";
    return input.dataset.tooLarge.replace(/\{(name|size)\}/g, function (match, key) {
      return key === "name" ? shownFilename(file.name) : megabytesText(file.size);
    });
  }

  // Show or clear the size message under the file field. A server message about an earlier file is
  // hidden while the browser's own message is shown.
  function showFileCheck(input, message) {
    var box = document.getElementById(input.id + "-check-error");
    var serverError = document.getElementById(input.id + "-error");
    if (!box) return;
    box.querySelector("[data-file-check-message]").textContent = message;
    box.hidden = !message;
    if (serverError) serverError.hidden = Boolean(message);
    var described = (input.getAttribute("aria-describedby") || "").split(" ").filter(function (id) {
      return id && id !== box.id;
    });
    if (message) {
      described.push(box.id);
      input.setAttribute("aria-invalid", "true");
    } else if (!serverError) {
      input.removeAttribute("aria-invalid");
    }
    input.setAttribute("aria-describedby", described.join(" "));
  }

  function checkFileSize(input) {
    var message = fileTooLargeMessage(input);
    showFileCheck(input, message);
    return !message;
  }

  // Report uploads go through XMLHttpRequest so the form can show upload progress. The server responds as
  // it does to the plain form: a redirect to the new report's page, or the page again with the errors.
  // A file over the size limit is not sent at all. Without this script the plain form submits as usual,
  // and without XMLHttpRequest upload events it does so after the size check.
  function wireUploadForms(root) {
    root.querySelectorAll("form[data-upload-form]").forEach(function (form) {
      if (form.dataset.uploadWired) return;
      form.dataset.uploadWired = "true";
      var fileInput = form.querySelector("input[type=file][data-max-bytes]");
      var sendsWithProgress = window.FormData && "upload" in new XMLHttpRequest();
      if (fileInput) fileInput.addEventListener("change", function () { checkFileSize(fileInput); });
      form.addEventListener("submit", function (event) {
        if (fileInput && !checkFileSize(fileInput)) {
          event.preventDefault();
          fileInput.focus();
          return;
        }
        if (!sendsWithProgress) return;
        event.preventDefault();
        sendUpload(form);
      });
    });
  }

  function sendUpload(form) {
    var box = form.querySelector("[data-upload-progress]");
    var bar = box && box.querySelector("progress");
    var status = box && box.querySelector("[data-upload-status]");
    var button = form.querySelector("button[type=submit]");
    var token = form.querySelector("input[name=_csrf_token]");
    var request = new XMLHttpRequest();

    function show(percent, text) {
      if (!bar) return;
      box.hidden = false;
      bar.value = percent;
      bar.textContent = percent + " %";
      status.textContent = text;
    }

    request.open("POST", form.action);
    if (token) request.setRequestHeader("x-csrftoken", token.value);
    request.upload.addEventListener("progress", function (event) {
      if (!event.lengthComputable) return;
      var percent = Math.floor((event.loaded / event.total) * 100);
      show(percent, percent + " %");
    });
    request.upload.addEventListener("load", function () { show(100, "100 % · " + (box ? box.dataset.textChecking : "")); });
    request.addEventListener("load", function () { finishUpload(form, request); });
    request.addEventListener("error", function () {
      show(0, box ? box.dataset.textFailed : "");
      if (button) button.disabled = false;
    });
    if (button) button.disabled = true;
    show(0, "0 %");
    request.send(new FormData(form));
  }

  function finishUpload(form, request) {
    // A redirect was followed: the new report's page is where the browser goes next.
    if (request.status < 400 && request.responseURL && request.responseURL.indexOf("/staff/documents/") !== -1) {
      window.location.assign(request.responseURL);
      return;
    }
    var incoming = new DOMParser().parseFromString(request.responseText, "text/html").querySelector("main");
    var current = document.querySelector("main");
    if (!incoming || !current) {
      window.location.assign(request.responseURL || form.action);
      return;
    }
    // A page rendered by the server cannot hold the chosen file, so the file moves over to the new form:
    // after an error elsewhere in the form, it need not be chosen again.
    var sentFile = form.querySelector("input[type=file]");
    var newFile = incoming.querySelector("form[data-upload-form] input[type=file]");
    current.replaceWith(incoming);
    if (sentFile && newFile && sentFile.files && sentFile.files.length) {
      try { newFile.files = sentFile.files; } catch (error) { /* older browsers: the field stays empty */ }
    }
    if (window.htmx) window.htmx.process(incoming);
    wireUploadForms(incoming);
    focusErrorSummary();
  }

  // htmx keeps the old content when a response has an error status. A region marked data-swap-errors
  // gets a 400 that carries the form's error summary, shown instead of results that no longer match.
  // The download count, marked data-swap-gone, gets a 410 whose text gives the reason the report is no
  // longer available.
  function swapValidationErrors(event) {
    var target = event.detail.target;
    var status = event.detail.xhr.status;
    var swap = (target && target.hasAttribute("data-swap-errors") && status === 400) ||
      (target && target.hasAttribute("data-swap-gone") && status === 410);
    if (swap) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  }

  document.addEventListener("htmx:beforeSwap", swapValidationErrors);

  // The expiry and download fields may only shorten what the chosen recipient type allows, so their
  // maximum follows the chosen type, and the download field is disabled for a view-only type. The server checks the same limits. The date-of-birth field shows
  // only for a type with the date-of-birth check, and the server ignores it for the others.
  function applyProfileLimits(choice) {
    if (!choice.matches || !choice.matches("input[name=profile][data-expiry-days]") || !choice.form) return;
    var expiry = choice.form.querySelector("input[name=expiry_days]");
    var downloads = choice.form.querySelector("input[name=max_downloads]");
    var birthDate = choice.form.querySelector("[data-date-of-birth-field]");
    if (expiry) expiry.max = choice.dataset.expiryDays;
    if (downloads) {
      downloads.max = choice.dataset.maxDownloads;
      // A view-only type allows no download, so there is nothing to lower.
      downloads.disabled = choice.dataset.maxDownloads === "0";
    }
    if (birthDate) birthDate.hidden = choice.dataset.secondFactor !== "date_of_birth";
  }

  document.addEventListener("change", function (event) { applyProfileLimits(event.target); });

  // A click on a download link marked data-download-started dispatches "download-started" on the body
  // 1.5 s later, by when the server has usually counted the download, and the download count
  // (hx-trigger="download-started from:body") reloads. Each click gets its own reload, so quick clicks do
  // not delay it. htmx listening on the link itself would cancel the click, and with it the download.
  // The link has no download attribute, so a refusal (limit reached, session ended) opens as a page
  // instead of being saved as a file. The copy itself comes as an attachment.
  var COUNT_RELOAD_DELAY_MS = 1500;

  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("a[data-download-started]");
    if (!link) return;
    window.setTimeout(function () {
      document.body.dispatchEvent(new CustomEvent("download-started"));
    }, COUNT_RELOAD_DELAY_MS);
  });

  // Filters travel in POST bodies, so a language link (a GET) would reload the page without them. When a
  // filter is set, the link's GET only stores the language, and the filter form is posted again. If that
  // GET fails, the link is followed as usual.
  function hasFilterValue(form) {
    return Array.prototype.some.call(form.elements, function (field) {
      var ignored = field.type === "hidden" || field.type === "submit";
      return field.name && !ignored && field.value !== "";
    });
  }

  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest(".language-switcher a[hreflang]");
    var form = document.querySelector("form[data-language-resubmit]");
    if (!link || !form || !hasFilterValue(form)) return;
    event.preventDefault();
    fetch(link.href, { credentials: "same-origin" }).then(
      function () { form.submit(); },
      function () { window.location.href = link.href; }
    );
  });

  // A link or token that the portal shows only once has a button that copies it. The button stays hidden
  // where the Clipboard API is missing (a page served without HTTPS, other than on localhost).
  function showCopyButtons() {
    if (!navigator.clipboard) return;
    document.querySelectorAll("button[data-copy]").forEach(function (button) { button.hidden = false; });
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("button[data-copy]");
    if (!button) return;
    var source = document.getElementById(button.dataset.copy);
    var status = document.getElementById(button.dataset.copy + "-status");
    if (!source || !navigator.clipboard) return;
    navigator.clipboard.writeText(source.textContent.trim()).then(
      function () { if (status) status.textContent = button.dataset.copied; },
      function () { if (status) status.textContent = button.dataset.copyFailed; }
    );
  });

  document.addEventListener("DOMContentLoaded", function () {
    forgetHtmxPath();
    focusErrorSummary();
    wirePrintButtons();
    showCopyButtons();
    fillCodeFromFragment();
    wireUploadForms(document);
    document.querySelectorAll("input[name=profile][data-expiry-days]:checked").forEach(applyProfileLimits);
  });
})();
