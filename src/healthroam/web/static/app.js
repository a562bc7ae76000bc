// The clinician page's only script: keep the scan box focused so a keyboard-wedge scanner
// can type into it at any time, and stop a double submission.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var scan = document.getElementById("code");
  if (scan) {
    scan.value = "";
    scan.focus();
  }
  document.querySelectorAll("form").forEach(function (form) {
    form.addEventListener("submit", function () {
      var button = form.querySelector("button[type=submit]");
      if (button) {
        window.setTimeout(function () { button.disabled = true; }, 0);
      }
    });
  });
});
