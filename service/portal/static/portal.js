// The portal works without this file; it only keeps relative times fresh, asks before
// forms marked data-confirm, and selects a revealed secret when it is focused.
"use strict";

(function () {
  function relative(moment) {
    const seconds = (moment.getTime() - Date.now()) / 1000;
    const span = Math.abs(seconds);
    if (span < 45) return "just now";
    let text;
    if (span < 3600) text = Math.max(1, Math.round(span / 60)) + " min";
    else if (span < 86400) text = Math.round(span / 3600) + " h";
    else {
      const days = Math.round(span / 86400);
      text = days + (days === 1 ? " day" : " days");
    }
    return seconds > 0 ? "in " + text : text + " ago";
  }

  function refresh() {
    for (const element of document.querySelectorAll("time[data-relative]")) {
      const moment = new Date(element.getAttribute("datetime"));
      if (!Number.isNaN(moment.getTime())) element.textContent = relative(moment);
    }
  }

  document.addEventListener("submit", function (event) {
    const message = event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) event.preventDefault();
  });

  document.addEventListener("focusin", function (event) {
    if (event.target.matches("[data-select-all]")) event.target.select();
  });

  setInterval(refresh, 30000);
})();
