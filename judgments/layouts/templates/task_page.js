(function () {
  "use strict";
  var TASK = {{ task|tojson }}, PRACTICE = {{ practice|tojson }};
  var FIRST_MS = {{ first_ms|tojson }}, BLANK_MS = {{ blank_ms|tojson }}, SECOND_MS = {{ second_ms|tojson }};
  var root = document.getElementById("bapps");
  var trials = Array.prototype.map.call(root.querySelectorAll(".trial"), function (el) {
    var i = el.getAttribute("data-i");
    function field(name) { return el.querySelector("input[name='" + name + i + "']"); }
    return {i: i, el: el, data: el.dataset, item: field("item").value,
            side: TASK === "2afc" ? field("p0side").value : "",
            choice: field("choice"), rt: field("rt"), timing: TASK === "jnd" ? field("timing") : null};
  });
  var params = new URLSearchParams(window.location.search);
  var previewOnly = params.get("assignmentId") === "ASSIGNMENT_ID_NOT_AVAILABLE";
  var current = -1, shownAt = 0, busy = false;
  var sessionId = "s" + Date.now().toString(36) + Math.floor(Math.random() * 1e6).toString(36);
  window.bappsLog = [];  // [{trial, phase, at (performance.now() ms), src}] for checks and QC
  function $(id) { return document.getElementById(id); }
  function log(phase, src) {
    window.bappsLog.push({trial: current + 1, phase: phase, at: performance.now(), src: src || ""});
  }

  // Preload every image before the first trial: a patch still loading would break the timing.
  function preload(done) {
    var urls = [];
    trials.forEach(function (t) {
      ["ref", "left", "right", "first", "second"].forEach(function (k) { if (t.data[k]) urls.push(t.data[k]); });
    });
    var left = urls.length;
    if (!left) { done(); return; }
    urls.forEach(function (u) {
      var im = new Image();
      im.onload = im.onerror = function () { left -= 1; if (!left) done(); };
      im.src = u;
    });
  }

  function setAnswerButtons(enabled) {
    Array.prototype.forEach.call(root.querySelectorAll("button[data-answer]"), function (b) { b.disabled = !enabled; });
  }

  function showTrial(k) {
    current = k;
    var t = trials[k];
    $("progress").textContent = "Trial " + (k + 1) + " of " + trials.length;
    $("practice-note").hidden = k >= PRACTICE;
    if (TASK === "2afc") {
      $("img-ref").src = t.data.ref; $("img-left").src = t.data.left; $("img-right").src = t.data.right;
      setAnswerButtons(true);
      requestAnimationFrame(function () { shownAt = performance.now(); log("shown", t.data.ref); });
    } else {
      $("img-first").src = t.data.first; $("img-second").src = t.data.second;
      $("img-first").style.visibility = "hidden"; $("img-second").style.visibility = "hidden";
      setAnswerButtons(false);
      $("next-pair").disabled = false;
    }
  }

  // JND: first patch, blank, second patch. Each phase starts at the frame it is painted in and
  // ends at the first frame at least its duration later (minus a few ms: the frame is ~16 ms).
  function playPair() {
    if (busy || TASK !== "jnd" || current < 0 || current >= trials.length || trials[current].choice.value) return;
    busy = true;
    $("next-pair").disabled = true;
    var first = $("img-first"), second = $("img-second"), t = trials[current];
    var phases = [
      {name: "first", ms: FIRST_MS, show: function () { first.style.visibility = "visible"; }, src: t.data.first},
      {name: "blank", ms: BLANK_MS, show: function () { first.style.visibility = "hidden"; }, src: ""},
      {name: "second", ms: SECOND_MS, show: function () { second.style.visibility = "visible"; }, src: t.data.second}];
    var marks = [], k = 0;
    function begin() {
      phases[k].show();
      requestAnimationFrame(function () { marks.push(performance.now()); log(phases[k].name, phases[k].src); wait(); });
    }
    function wait() {
      requestAnimationFrame(function () {
        if (performance.now() - marks[k] < phases[k].ms - 4) { wait(); return; }
        k += 1;
        if (k < phases.length) { begin(); return; }
        second.style.visibility = "hidden";
        requestAnimationFrame(function () {
          marks.push(performance.now()); log("end", "");
          t.timing.value = [marks[1] - marks[0], marks[2] - marks[1], marks[3] - marks[2]]
            .map(function (x) { return Math.round(x); }).join(",");
          busy = false; shownAt = performance.now();
          setAnswerButtons(true);
        });
      });
    }
    begin();
  }

  function answer(value) {
    if (current < 0 || current >= trials.length || busy) return;
    var t = trials[current];
    if (TASK === "jnd" && !t.timing.value) return;  // the pair has not been shown yet
    t.choice.value = value;
    t.rt.value = String(Math.round(performance.now() - shownAt));
    log("answer", value);
    setAnswerButtons(false);
    if (current + 1 < trials.length) showTrial(current + 1); else finish();
  }

  function resultsAsJsonLines() {
    var worker = ($("worker-id") && $("worker-id").value) || params.get("workerId") || params.get("worker") || "anonymous";
    return trials.map(function (t) {
      var row = {worker: worker, assignment: sessionId, item: t.item, response: t.choice.value,
                 time_ms: Number(t.rt.value), submitted: submittedAt};
      if (TASK === "2afc") row.side = t.side;
      if (TASK === "jnd") row.timing = t.timing.value;
      return JSON.stringify(row);
    }).join("\n") + "\n";
  }

  var submittedAt = "";
  function finish() {
    current = trials.length;
    submittedAt = new Date().toISOString();
    $("stage").hidden = true; $("done").hidden = false;
    window.bappsResults = resultsAsJsonLines();
    var turkSubmitTo = params.get("turkSubmitTo");
    if (turkSubmitTo) {  // HTMLQuestion / ExternalQuestion: a plain form post to MTurk
      var form = document.createElement("form");
      form.method = "post"; form.action = turkSubmitTo.replace(/\/$/, "") + "/mturk/externalSubmit";
      var a = document.createElement("input");
      a.type = "hidden"; a.name = "assignmentId"; a.value = params.get("assignmentId") || ""; form.appendChild(a);
      form.appendChild($("trials"));
      document.body.appendChild(form);
      $("submit-answers").onclick = function () { form.submit(); };
      $("submit-answers").hidden = false;
    } else if (window.customElements && customElements.get("crowd-form")) {
      $("crowd-submit").style.display = "";  // crowd-form collects the hidden inputs itself
    } else {  // opened directly: offer the answers in the generic format
      var link = $("download");
      link.href = "data:application/x-ndjson;charset=utf-8," + encodeURIComponent(window.bappsResults);
      link.download = "results-" + sessionId + ".jsonl";
      link.hidden = false;
    }
  }

  document.addEventListener("keydown", function (e) {
    if (e.target && e.target.tagName === "INPUT" && e.target.type === "text") return;
    var key = e.key.toLowerCase();
    if (current < 0 && key === "enter") { $("start").click(); return; }
    if (TASK === "2afc") {
      if (key === "arrowleft" || key === "f") answer("left");
      else if (key === "arrowright" || key === "j") answer("right");
      else return;
    } else {
      if (key === " " || key === "spacebar") playPair();
      else if (key === "s") { if (!$("answer-same").disabled) answer("same"); }
      else if (key === "d") { if (!$("answer-different").disabled) answer("different"); }
      else return;
    }
    e.preventDefault();
  });
  Array.prototype.forEach.call(root.querySelectorAll("button[data-answer]"), function (b) {
    b.addEventListener("click", function () { if (!b.disabled) answer(b.getAttribute("data-answer")); });
  });
  if ($("next-pair")) $("next-pair").addEventListener("click", playPair);
  var form = document.querySelector("crowd-form");
  if (form) form.addEventListener("submit", function (e) {
    if (trials.some(function (t) { return !t.choice.value; })) { e.preventDefault(); alert("Please answer every trial."); }
  });

  if (previewOnly) {
    $("start").disabled = true;
    $("start").textContent = "Accept the HIT to start";
    return;
  }
  $("start").disabled = true;
  $("start").textContent = "Loading the images...";
  preload(function () {
    $("start").disabled = false;
    $("start").textContent = "Start";
    window.bappsReady = true;
  });
  $("start").addEventListener("click", function () {
    $("instructions").hidden = true; $("stage").hidden = false;
    showTrial(0);
  });
})();
