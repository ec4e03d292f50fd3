/* Live status for the status pages and the admin: polls a small JSON endpoint and updates the
   elements marked data-live-name / data-live-field / data-live-action in place. No build step,
   no library. Polling pauses while the tab is hidden, so a page left open costs nothing then. */
(function () {
  "use strict";
  var source = document.querySelector("[data-live-url]");
  if (!source || !window.fetch) { return; }
  var url = source.getAttribute("data-live-url");
  var interval = 2000;
  var timer = null;

  function marked() { return document.querySelectorAll("[data-live-name]"); }

  function names() {
    var seen = {};
    marked().forEach(function (el) { seen[el.getAttribute("data-live-name")] = true; });
    return Object.keys(seen);
  }

  function setText(el, text, empty) {
    var value = text || (empty === undefined ? "" : empty);
    if (el.textContent !== value) { el.textContent = value; }
  }

  var fields = {
    status: function (el, d) {
      setText(el, d.status_display);
      el.className = el.className.replace(/\bstatus-[a-z_-]+/, "status-" + d.status);
    },
    message: function (el, d) {
      setText(el, d.message);
      el.title = d.message || "";
      el.hidden = !d.message;
    },
    desired: function (el, d) { setText(el, d.desired_display); },
    cpu: function (el, d) { setText(el, d.cpu, "—"); },
    memory: function (el, d) { setText(el, d.memory, "—"); },
    volumes: function (el, d) { setText(el, d.volumes, "—"); },
    usage: function (el, d) {
      var parts = [d.cpu, d.memory].filter(Boolean);
      setText(el, parts.length ? parts.join(" · ") : (d.usage_message || ""), "—");
    },
    vnc: function (el, d) {
      var links = d.vnc || [];
      var key = JSON.stringify(links);
      if (el.getAttribute("data-vnc-shown") === key) { return; }
      el.setAttribute("data-vnc-shown", key);
      var buttons = el.hasAttribute("data-vnc-buttons");
      var off = el.querySelector("[data-vnc-off]");
      Array.prototype.slice.call(el.childNodes).forEach(function (node) {
        if (node !== off) { node.remove(); }
      });
      links.forEach(function (link) {
        var a = document.createElement("a");
        a.className = buttons ? "vnc claworc-btn" : "vnc";
        a.href = link.url;
        a.target = "_blank";
        a.rel = "noopener";
        a.title = link.note;
        a.textContent = (buttons ? "Open " : "") + link.label;
        el.insertBefore(a, off);
        el.insertBefore(document.createTextNode(" "), off);
      });
      if (off) {
        off.hidden = links.length > 0;
        off.textContent = d.status !== "running" ? "not running"
          : (buttons ? "" : "You do not have permission to use desktops.");
      }
    }
  };

  function apply(data) {
    if (data.interval) { interval = Math.max(1, data.interval) * 1000; }
    var all = data.instances || {};
    marked().forEach(function (el) {
      var d = all[el.getAttribute("data-live-name")];
      if (!d) { return; }
      var action = el.getAttribute("data-live-action");
      if (action) {
        el.hidden = d.actions.indexOf(action) < 0;
        return;
      }
      var update = fields[el.getAttribute("data-live-field")];
      if (update) { update(el, d); }
    });
    document.documentElement.setAttribute("data-live-updated", String(Date.now()));
  }

  function schedule() { timer = window.setTimeout(poll, interval); }

  function poll() {
    timer = null;
    if (document.hidden) { return; }  // resumed by visibilitychange
    var wanted = names();
    if (!wanted.length) { return; }
    fetch(url + "?names=" + encodeURIComponent(wanted.join(",")), {
      credentials: "same-origin", headers: { "Accept": "application/json" }
    }).then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) { apply(data); } })
      .catch(function () { /* the next poll tries again */ })
      .then(schedule);
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && timer === null) { poll(); }
  });
  schedule();
})();
