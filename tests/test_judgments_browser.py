"""The task pages in a real headless browser: they render a filled-in row, take an answer by
keyboard, send back what the ingester reads, and the JND page keeps its timing and order.

Drives Debian's chromium over the Chrome DevTools Protocol on a pipe (--remote-debugging-pipe),
so nothing beyond chromium itself is needed (no driver, no websocket library, no download).
The task folder is served on 127.0.0.1 by a threaded http.server; every other host name is
made unresolvable, so the page's MTurk script (assets.crowd.aws) is never fetched.
"""
import functools
import http.server
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from judgments.catalog import resolve_subset
from judgments.ingest import ingest_files
from judgments.layouts import fill_template
from judgments.tasks import TaskSettings, build_task_set
from test_judgments_common import tiny_dataset  # noqa: F401  (a fixture)


def find_chromium():
    for candidate in ("/usr/lib/chromium/chromium", shutil.which("chromium"), shutil.which("chromium-browser"),
                      shutil.which("google-chrome")):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs a headless browser: apt-get install -y chromium (Debian's package)")


class Browser:
    """The smallest CDP client: one page, commands answered in order, events skipped."""

    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="bapps-chromium-")
        cmd_read, self.cmd_write = os.pipe()
        self.res_read, res_write = os.pipe()

        def wire_fds():  # chromium reads commands on fd 3 and writes answers on fd 4
            os.dup2(cmd_read, 3)
            os.dup2(res_write, 4)

        args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
                "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                f"--user-data-dir={self.profile}", "--remote-debugging-pipe", "--window-size=1200,900", "about:blank"]
        self.proc = subprocess.Popen(args, pass_fds=(3, 4), preexec_fn=wire_fds,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(cmd_read)
        os.close(res_write)
        self.buffer = b""
        self.next_id = 0
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]

    def send(self, method, params=None, session=None):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.cmd_write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 30
        while True:
            while b"\0" not in self.buffer:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no answer from chromium to {method}")
                chunk = os.read(self.res_read, 1 << 16)
                if not chunk:
                    raise RuntimeError("chromium closed the pipe")
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\0", 1)
            reply = json.loads(line)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def page(self, method, params=None):
        return self.send(method, params, self.session)

    def js(self, expression):
        result = self.page("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.js(expression):
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {expression}")

    def goto(self, url):
        self.page("Page.navigate", {"url": url})
        self.wait_for("document.readyState === 'complete'")

    def key(self, key, code, keycode, text=None):
        base = {"key": key, "code": code, "windowsVirtualKeyCode": keycode, "nativeVirtualKeyCode": keycode}
        self.page("Input.dispatchKeyEvent", {"type": "keyDown", **base, **({"text": text} if text else {})})
        self.page("Input.dispatchKeyEvent", {"type": "keyUp", **base})

    def screenshot(self, path):
        import base64

        data = self.page("Page.captureScreenshot", {"format": "png"})["data"]
        Path(path).write_bytes(base64.b64decode(data))

    def close(self):
        try:
            self.send("Browser.close")
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()
            self.proc.wait()
        os.close(self.cmd_write)
        os.close(self.res_read)
        shutil.rmtree(self.profile, ignore_errors=True)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A folder served on http://127.0.0.1:<port>/ for the whole module."""
    folder = tmp_path_factory.mktemp("www")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    b = Browser()
    yield b
    b.close()


def mturk_row(tasks_dir, hit=0):
    import csv

    with open(tasks_dir / "mturk" / "input.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))[hit]


def test_2afc_page_renders_a_row_and_takes_keyboard_answers(tiny_dataset, served, browser):
    www, base = served
    subset = resolve_subset(tiny_dataset, "2afc/val/traditional")
    tasks = www / "afc"
    record = build_task_set(subset, tasks, TaskSettings("mturk", 2, 4, 0.2, 0, f"{base}/afc/images", 0, "browser-afc"))
    row = mturk_row(tasks)
    page = fill_template((tasks / "mturk" / "layout.html").read_text(), row)  # what MTurk does with a row
    (tasks / "hit1.html").write_text(page)
    browser.goto(f"{base}/afc/hit1.html")
    browser.wait_for("window.bappsReady === true")
    browser.key("Enter", "Enter", 13, "\r")
    browser.wait_for("!document.getElementById('stage').hidden")
    n = record["derived"]["trials_per_hit"]
    # the first trial shows this row's images where the row puts them, all loaded
    shown = browser.js("['ref','left','right'].map(k => { const im = document.getElementById('img-' + k); "
                       "return [im.src, im.complete && im.naturalWidth]; })")
    assert [s[0] for s in shown] == [row["ref1"], row["left1"], row["right1"]]
    assert all(w == 64 for _, w in shown)
    keys = [("ArrowLeft", "ArrowLeft", 37), ("ArrowRight", "ArrowRight", 39), ("f", "KeyF", 70), ("j", "KeyJ", 74)]
    for k in range(n):
        browser.key(*keys[k % 4])
    browser.wait_for("!document.getElementById('done').hidden")
    answers = browser.js("Array.from(document.querySelectorAll('#trials input')).map(i => [i.name, i.value])")
    fields = dict(answers)
    expected_sides = ["left", "right", "left", "right"]
    for i in range(1, n + 1):
        assert fields[f"item{i}"] == row[f"item{i}"]
        assert fields[f"p0side{i}"] == row[f"p0side{i}"]
        assert fields[f"choice{i}"] == expected_sides[(i - 1) % 4]
        assert int(fields[f"rt{i}"]) >= 0
    # opened outside MTurk, the page offers its answers in the generic format, which ingests
    lines = [json.loads(x) for x in browser.js("window.bappsResults").splitlines()]
    assert [x["item"] for x in lines] == [row[f"item{i}"] for i in range(1, n + 1)]
    results = tasks / "from-page.jsonl"
    results.write_text(browser.js("window.bappsResults"))
    summary = ingest_files([results], tiny_dataset, write_labels=False)
    assert summary["rows_read"] == n


def test_jnd_page_keeps_timing_and_order(tiny_dataset, served, browser):
    www, base = served
    subset = resolve_subset(tiny_dataset, "jnd/val/traditional")
    tasks = www / "jnd"
    build_task_set(subset, tasks, TaskSettings("mturk", 3, 3, 0.25, 2, f"{base}/jnd/images", 0, "browser-jnd"))
    row = mturk_row(tasks, 1)
    (tasks / "hit2.html").write_text(fill_template((tasks / "mturk" / "layout.html").read_text(), row))
    browser.goto(f"{base}/jnd/hit2.html")
    browser.wait_for("window.bappsReady === true")
    browser.js("document.getElementById('start').click()")
    browser.wait_for("!document.getElementById('stage').hidden")
    assert browser.js("document.getElementById('answer-same').disabled") is True  # nothing shown yet
    browser.key("s", "KeyS", 83, "s")  # an answer before the pair is ignored
    assert browser.js("document.querySelector(\"input[name='choice1']\").value") == ""
    browser.key(" ", "Space", 32, " ")
    time.sleep(0.3)
    # mid-sequence: no answer possible, the second patch not yet shown
    assert browser.js("document.getElementById('answer-same').disabled && "
                      "document.getElementById('answer-different').disabled") is True
    browser.key("d", "KeyD", 68, "d")
    assert browser.js("document.querySelector(\"input[name='choice1']\").value") == ""
    browser.wait_for("!document.getElementById('answer-same').disabled", timeout=5)
    log = browser.js("window.bappsLog.filter(e => e.trial === 1)")
    phases = [e["phase"] for e in log]
    assert phases == ["first", "blank", "second", "end"]
    at = {e["phase"]: e["at"] for e in log}
    src = {e["phase"]: e["src"] for e in log}
    assert src["first"] == row["first1"] and src["second"] == row["second1"]  # the reference comes first
    durations = [at["blank"] - at["first"], at["second"] - at["blank"], at["end"] - at["second"]]
    for measured, wanted in zip(durations, (1000, 250, 1000)):
        assert abs(measured - wanted) <= 75, durations
    timing = browser.js("document.querySelector(\"input[name='timing1']\").value")
    assert [abs(int(x) - w) <= 75 for x, w in zip(timing.split(","), (1000, 250, 1000))] == [True] * 3
    browser.key("s", "KeyS", 83, "s")
    assert browser.js("document.querySelector(\"input[name='choice1']\").value") == "same"
    # the next trial needs its own sequence before an answer counts
    assert browser.js("document.getElementById('answer-same').disabled") is True
    # play the rest: the page's own answers (generic format) carry each trial's timing and the
    # submit time, and ingest reads both (a trial off the protocol would be excluded)
    n = sum(1 for k in row if k.startswith("item"))
    for i in range(2, n + 1):
        browser.key(" ", "Space", 32, " ")
        browser.wait_for("!document.getElementById('answer-same').disabled", timeout=5)
        browser.key("d", "KeyD", 68, "d")
    browser.wait_for("!document.getElementById('done').hidden", timeout=5)
    lines = [json.loads(x) for x in browser.js("window.bappsResults").splitlines()]
    assert len(lines) == n and all(len(x["timing"].split(",")) == 3 for x in lines)
    assert lines[0]["submitted"].endswith("Z")
    results = tasks / "from-page.jsonl"
    results.write_text(browser.js("window.bappsResults"))
    from judgments.store import read_rows
    summary = ingest_files([results], tiny_dataset, write_labels=False)
    assert summary["rows_read"] == n
    stored = read_rows(tiny_dataset / "jnd/val/traditional" / "judgments" / "rows.tsv")
    assert stored.timing == [x["timing"] for x in lines] and set(stored.submitted) == {
        lines[0]["submitted"].replace("Z", "")[:23] + "Z"}
    report = summary["subsets"]["jnd/val/traditional"]
    assert report["timing"]["untimed_rows"] == 0


def test_page_with_metacharacters_in_its_values_escapes_them_and_still_works(tiny_dataset, served, browser):
    """A base URL with '&' (allowed by --base-url), a task-set name with markup, and trial values
    holding </script>, a tag and quotes: all arrive as text, and the page still runs to the end."""
    from judgments.layouts import render_layout
    from judgments.tasks import ImageFolder, hit_row

    www, base = served
    subset = resolve_subset(tiny_dataset, "2afc/val/traditional")
    tasks = www / "a&b"
    base_url = f"{base}/a&b/images"
    record = build_task_set(subset, tasks, TaskSettings("generic", 1, 3, 0.0, 0, base_url, 0, "<i>\"'&name"))
    hit_page = (tasks / "generic" / "hit-0001.html").read_text()
    assert f"{base}/a&amp;b/images/" in hit_page and "/a&b/" not in hit_page and "<i>" not in hit_page
    hostile = "</script><bapps-evil>\"'&"
    row = hit_row(record, record["hits"][0], ImageFolder(tasks / "images", base_url, "../images/"))
    n = record["derived"]["trials_per_hit"]
    for i in range(1, n + 1):
        row[f"item{i}"] = f"{hostile}{i}"
        for k in ("ref", "left", "right"):
            row[f"{k}{i}"] += "?v=" + hostile  # the server ignores the query: the image still loads
    (tasks / "hostile.html").write_text(render_layout("2afc", n, 0, crowd_form=False, row=row))
    for page in ("generic/hit-0001.html", "hostile.html"):
        browser.goto(f"{base}/a&b/{page}")
        browser.wait_for("window.bappsReady === true")
        browser.key("Enter", "Enter", 13, "\r")
        browser.wait_for("!document.getElementById('stage').hidden")
        shown = browser.js("['ref','left','right'].map(k => { const im = document.getElementById('img-' + k); "
                           "return [im.getAttribute('src'), im.complete && im.naturalWidth]; })")
        assert all(w == 64 for _, w in shown)
        assert browser.js("document.querySelector('bapps-evil, i') === null")
        for _ in range(n):
            browser.key("f", "KeyF", 70)
        browser.wait_for("!document.getElementById('done').hidden")
        lines = [json.loads(x) for x in browser.js("window.bappsResults").splitlines()]
        assert [x["response"] for x in lines] == ["left"] * n
    assert [s for s, _ in shown] == [row["ref1"], row["left1"], row["right1"]]  # as given, quotes and all
    assert [x["item"] for x in lines] == [f"{hostile}{i}" for i in range(1, n + 1)]
