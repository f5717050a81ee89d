// Live parts of the page: every element with data-live="URL" is replaced by the HTML
// fragment at URL every few seconds, unless the reader is typing in it (a focused field,
// or a reason already written). Polling stops while the tab is hidden.
(function () {
  "use strict";
  var period = parseInt(document.body.getAttribute("data-poll"), 10) || 2000;
  function busy(el) {
    if (el.contains(document.activeElement) && document.activeElement !== el) return true;
    var fields = el.querySelectorAll("textarea, input[type=text]");
    for (var i = 0; i < fields.length; i++) if (fields[i].value) return true;
    return false;
  }
  function refresh(el) {
    var url = el.getAttribute("data-live");
    var headers = {};
    var tag = el.getAttribute("data-etag");
    if (tag) headers["If-None-Match"] = tag;  // unchanged: 304, nothing drawn or sent
    return fetch(url, {credentials: "same-origin", cache: "no-store", headers: headers}).then(function (r) {
      if (r.status === 304) return null;
      if (!r.ok) throw new Error(r.status);
      var etag = r.headers.get("ETag");
      return r.text().then(function (html) { return {html: html, etag: etag}; });
    }).then(function (got) {
      if (got === null) { document.body.classList.remove("offline"); return; }
      var html = got.html;
      if (!busy(el)) {  // while the reader types, the old tag stays: asked again next time
        if (got.etag) el.setAttribute("data-etag", got.etag);
        if (html !== el.getAttribute("data-last")) {
          el.innerHTML = html;
          el.setAttribute("data-last", html);
          el.dispatchEvent(new CustomEvent("live:updated", {bubbles: true}));
        }
      }
      document.body.classList.remove("offline");
    }).catch(function () { document.body.classList.add("offline"); });
  }
  function tick() {
    if (!document.hidden) {
      var els = document.querySelectorAll("[data-live]");
      Promise.all(Array.prototype.map.call(els, refresh)).then(function () {
        document.body.setAttribute("data-refreshed", String(Date.now()));
      });
    }
    setTimeout(tick, period);
  }
  setTimeout(tick, period);
})();
