"""The task page: one skeleton for 2AFC and JND, trials one at a time, keyboard shortcuts.

2AFC: the reference in the middle, the two patches left and right (the row says on which side
p0 is; the answer is the side chosen, `left` or `right`, and the page sends the side back).
JND: the reference alone for 1000 ms, a blank for 250 ms, the distorted patch for 1000 ms, then
"same" / "different"; the answer buttons stay disabled until the sequence has ended, and the
measured phase durations go into `timing<i>` and `window.bappsLog`.

No `${` appears in the script: MTurk would take it for a variable.
"""
from __future__ import annotations

from html import escape

FIRST_MS, BLANK_MS, SECOND_MS = 1000, 250, 1000
DISPLAY_PX = 256  # 64 px patches at 4x, pixelated: the browser adds no resampling blur of its own
CROWD_SCRIPT = '<script src="https://assets.crowd.aws/crowd-html-elements.js"></script>'

CSS = """
body { font-family: sans-serif; margin: 1em auto; max-width: 60em; background: #808080; color: #000; }
.panel { background: #eee; padding: 1em 1.5em; border-radius: 6px; }
.patches { display: flex; justify-content: center; gap: 2em; margin: 1.5em 0; min-height: @@PX@@px; }
.patches figure { margin: 0; text-align: center; }
.patches img { width: @@PX@@px; height: @@PX@@px; image-rendering: pixelated; display: block; }
.patches figcaption { margin-top: .3em; font-size: 90%; }
#jnd-view img { visibility: hidden; }
.answers { text-align: center; }
.answers button { font-size: 120%; padding: .5em 1.5em; margin: 0 1em; }
#progress { text-align: center; font-size: 90%; }
.practice-note { color: #a00; text-align: center; }
"""

INSTRUCTIONS = {
    "2afc": """<p>Each trial shows a <b>reference</b> patch in the middle and two other patches, one on
the left and one on the right. Choose the one that looks <b>more similar to the reference</b>.
There is no time limit, but go with your first impression (about 3 seconds).</p>
<p>Keys: <b>&larr;</b> or <b>F</b> for left, <b>&rarr;</b> or <b>J</b> for right.</p>""",
    "jnd": """<p>Each trial shows one patch for one second, a short blank, then a second patch for one
second. Tell whether the two patches were <b>the same</b> or <b>different</b>. Each pair is shown
only once. The first trials are practice.</p>
<p>Keys: <b>Space</b> to see the next pair, <b>S</b> for same, <b>D</b> for different.</p>""",
}

STAGE = {
    "2afc": """<div class="patches" id="afc-view">
  <figure><img id="img-left" alt="left patch"><figcaption>left</figcaption></figure>
  <figure><img id="img-ref" alt="reference patch"><figcaption>reference</figcaption></figure>
  <figure><img id="img-right" alt="right patch"><figcaption>right</figcaption></figure>
</div>
<div class="answers">
  <button type="button" id="answer-left" data-answer="left">&larr; Left (F)</button>
  <button type="button" id="answer-right" data-answer="right">Right (J) &rarr;</button>
</div>""",
    "jnd": """<div class="patches" id="jnd-view">
  <figure><img id="img-first" alt="first patch"><img id="img-second" alt="second patch"
    style="position: relative; margin-top: -@@PX@@px"></figure>
</div>
<div class="answers">
  <button type="button" id="next-pair">Show the pair (Space)</button>
  <button type="button" id="answer-same" data-answer="same" disabled>Same (S)</button>
  <button type="button" id="answer-different" data-answer="different" disabled>Different (D)</button>
</div>""",
}

SCRIPT = r"""
(function () {
  "use strict";
  var TASK = "@@TASK@@", PRACTICE = @@PRACTICE@@;
  var FIRST_MS = @@FIRST_MS@@, BLANK_MS = @@BLANK_MS@@, SECOND_MS = @@SECOND_MS@@;
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
"""


def trial_block(task: str, i: int) -> str:
    if task == "2afc":
        return (f'<div class="trial" data-i="{i}" data-ref="${{ref{i}}}" data-left="${{left{i}}}" '
                f'data-right="${{right{i}}}">'
                f'<input type="hidden" name="item{i}" value="${{item{i}}}">'
                f'<input type="hidden" name="p0side{i}" value="${{p0side{i}}}">'
                f'<input type="hidden" name="choice{i}" value=""><input type="hidden" name="rt{i}" value="">'
                f'</div>')
    return (f'<div class="trial" data-i="{i}" data-first="${{first{i}}}" data-second="${{second{i}}}">'
            f'<input type="hidden" name="item{i}" value="${{item{i}}}">'
            f'<input type="hidden" name="choice{i}" value=""><input type="hidden" name="rt{i}" value="">'
            f'<input type="hidden" name="timing{i}" value="">'
            f'</div>')


def render_page(task: str, n_trials: int, practice: int, crowd_form: bool) -> str:
    title = "Which patch is more similar?" if task == "2afc" else "Same or different?"
    trials = "\n".join(trial_block(task, i) for i in range(1, n_trials + 1))
    script = (SCRIPT.replace("@@TASK@@", task).replace("@@PRACTICE@@", str(int(practice)))
              .replace("@@FIRST_MS@@", str(FIRST_MS)).replace("@@BLANK_MS@@", str(BLANK_MS))
              .replace("@@SECOND_MS@@", str(SECOND_MS)))
    body = f"""<div id="bapps" data-task="{task}">
<section class="panel" id="instructions">
<h2>{escape(title)}</h2>
{INSTRUCTIONS[task]}
<p>{n_trials} trials.</p>
<p id="worker-line" hidden><label>Your participant id: <input type="text" id="worker-id"></label></p>
<button type="button" id="start" disabled>Start</button>
</section>
<section id="stage" hidden>
<p id="progress"></p>
<p class="practice-note" id="practice-note" hidden>Practice trial</p>
{STAGE[task]}
</section>
<section class="panel" id="done" hidden>
<p>Thank you: all trials are answered.</p>
<button type="button" id="submit-answers" hidden>Submit</button>
<crowd-button form-action="submit" variant="primary" id="crowd-submit" style="display: none">Submit</crowd-button>
<a id="download" hidden>Download your answers (JSON Lines)</a>
</section>
<div id="trials" hidden>
{trials}
</div>
</div>"""
    if crowd_form:
        body = f'{CROWD_SCRIPT}\n<crowd-form answer-format="flatten-objects">\n{body}\n</crowd-form>'
    else:
        body += '\n<script>document.getElementById("worker-line").hidden = false;</script>'
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{escape(title)}</title>
<style>{CSS.replace("@@PX@@", str(DISPLAY_PX))}</style>
</head>
<body>
{body.replace("@@PX@@", str(DISPLAY_PX))}
<script>{script}</script>
</body>
</html>
"""
