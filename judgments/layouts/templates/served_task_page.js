(function () {
  "use strict";
  var cfg = JSON.parse(document.getElementById("bapps-serve-config").textContent);
  var trials = Array.prototype.slice.call(document.querySelectorAll("#trials .trial"));
  var queue = [], queued = {}, sending = false, failures = 0, stopped = false;
  window.bappsSaved = 0;
  function field(el, name) { return el.querySelector("input[name='" + name + el.getAttribute("data-i") + "']"); }
  function say(text) { var s = document.getElementById("serve-status"); if (s) s.textContent = text; }
  function collect() {
    trials.forEach(function (el) {
      var i = Number(el.getAttribute("data-i")), choice = field(el, "choice");
      if (!choice || !choice.value || queued[i]) return;
      queued[i] = true;
      var rt = field(el, "rt"), timing = field(el, "timing");
      queue.push({token: cfg.token, position: cfg.offset + i, item: field(el, "item").value, response: choice.value,
                  rt_ms: rt && rt.value !== "" ? Number(rt.value) : null, timing: timing ? timing.value : ""});
    });
    flush();
  }
  function retry() {
    failures += 1;
    say("Saving your answers... (no connection to the server, trying again)");
    setTimeout(flush, Math.min(8000, 200 * Math.pow(2, failures)));
  }
  function flush() {
    if (sending || stopped || !queue.length) return;
    sending = true;
    fetch(cfg.answer_url, {method: "POST", credentials: "same-origin",
                           headers: {"Content-Type": "application/json"}, body: JSON.stringify(queue[0])})
      .then(function (r) { return r.json().then(function (b) { return {ok: r.ok, status: r.status, body: b}; }); })
      .then(function (res) {
        sending = false;
        if (res.ok) {
          queue.shift(); failures = 0; window.bappsSaved += 1; say("");
          if (res.body.done) { window.location.replace(cfg.done_url); return; }
          flush();
        } else if (res.status >= 500 || res.status === 429) {
          retry();
        } else {
          stopped = true;
          say((res.body && res.body.error) || ("The server refused an answer (" + res.status + "); reload the page."));
        }
      }, function () { sending = false; retry(); });
  }
  new MutationObserver(collect).observe(document.getElementById("trials"),
                                        {attributes: true, subtree: true, attributeFilter: ["value"]});
  setInterval(collect, 500);
  var progress = document.getElementById("progress");
  new MutationObserver(function () {  // "Trial k of n" of the whole HIT after a resume
    var m = /^Trial (\d+) of (\d+)$/.exec(progress.textContent);
    if (m && cfg.offset && Number(m[2]) !== cfg.total)
      progress.textContent = "Trial " + (Number(m[1]) + cfg.offset) + " of " + cfg.total;
  }).observe(progress, {childList: true, characterData: true, subtree: true});
})();
