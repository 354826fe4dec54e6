// Rota dashboard: live parts over server-sent events, select-all, confirmations.
// No inline script anywhere: the Content-Security-Policy allows only files from /assets/.
(function () {
  "use strict";

  var source = null;

  function liveParts() {
    return document.querySelectorAll("[data-live]");
  }

  function applyFrame(event) {
    if (!event.data) return;
    var parts;
    try {
      parts = JSON.parse(event.data);
    } catch (e) {
      return;
    }
    liveParts().forEach(function (el) {
      var html = parts[el.getAttribute("data-live")];
      // The server rendered and escaped every part; it is markup, not script.
      if (typeof html === "string" && el.innerHTML !== html) {
        el.innerHTML = html;
      }
    });
    var stamp = document.getElementById("live-status");
    if (stamp) stamp.textContent = "live";
  }

  function connect() {
    if (source || liveParts().length === 0 || !window.EventSource) return;
    source = new EventSource("/events");
    source.addEventListener("frame", applyFrame);
    source.onerror = function () {
      var stamp = document.getElementById("live-status");
      if (stamp) stamp.textContent = "reconnecting";
    };
  }

  function disconnect() {
    if (source) {
      source.close();
      source = null;
    }
    var stamp = document.getElementById("live-status");
    if (stamp) stamp.textContent = "paused";
  }

  // A hidden tab costs the server nothing: its stream is closed until it is shown again.
  document.addEventListener("visibilitychange", function () {
    if (document.hidden) disconnect();
    else connect();
  });

  document.addEventListener("change", function (event) {
    var box = event.target;
    if (box.id === "select-page") {
      document.querySelectorAll("input[name=ids]").forEach(function (row) {
        row.checked = box.checked;
      });
    }
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var submitter = event.submitter;
    var question =
      (submitter && submitter.getAttribute("data-confirm")) || form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", connect);
  } else {
    connect();
  }
})();
