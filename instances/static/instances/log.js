/* Follow an instance's log on its page: the server sends the last lines, then new ones, for a
   limited time per connection (CLAWORC_LOG_FOLLOW_SECONDS); "Follow again" starts a new one. */
(function () {
  "use strict";
  var section = document.getElementById("log");
  if (!section || !window.fetch || !window.TextDecoder) { return; }
  var button = document.getElementById("log-follow");
  var pre = document.getElementById("log-text");
  var state = document.getElementById("log-state");
  var empty = document.getElementById("log-empty");
  var MAX_CHARS = 400000;  // what the page keeps: the newest text
  var controller = null;

  function append(text) {
    var atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    var all = pre.textContent + text;
    pre.textContent = all.length > MAX_CHARS ? all.slice(all.length - MAX_CHARS) : all;
    if (atBottom) { pre.scrollTop = pre.scrollHeight; }
  }

  function done(why) {
    controller = null;
    button.textContent = "Follow again";
    state.textContent = why;
    section.setAttribute("data-following", "no");
  }

  function follow() {
    controller = new AbortController();
    button.textContent = "Stop following";
    state.textContent = "following…";
    pre.textContent = "";
    pre.hidden = false;
    if (empty) { empty.hidden = true; }
    fetch(section.getAttribute("data-follow-url"), {
      credentials: "same-origin", signal: controller.signal
    }).then(function (response) {
      if (!response.ok) {
        return response.text().then(function (text) { append(text); done("not following"); });
      }
      var limit = response.headers.get("X-Claworc-Follow-Seconds");
      state.textContent = "following" + (limit ? " (for up to " + limit + " s)" : "");
      section.setAttribute("data-following", "yes");
      var reader = response.body.getReader();
      var decoder = new TextDecoder();
      function read() {
        return reader.read().then(function (chunk) {
          if (chunk.done) { done("stopped following: time limit reached"); return; }
          append(decoder.decode(chunk.value, { stream: true }));
          return read();
        });
      }
      return read();
    }).catch(function () { done("stopped following"); });
  }

  button.addEventListener("click", function () {
    if (controller) { controller.abort(); } else { follow(); }
  });
})();
