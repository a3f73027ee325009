"""Whole participant sessions in headless Chromium through a real `bapps-build serve`: consent,
2AFC and JND trials answered by key, a reload in the middle, the completion page and redirect;
then every answer is checked in the study database.

The browser is the DevTools-pipe client of test_judgments_browser (no driver, no download)."""
import sqlite3
import time

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from serve_helpers import Server, free_port, make_tasks  # noqa: E402
from test_judgments_browser import CHROMIUM, Browser  # noqa: E402
from test_judgments_common import tiny_dataset  # noqa: E402,F401  (a fixture)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs a headless browser: apt-get install -y chromium (Debian's package)")

KEYS = {"left": [("ArrowLeft", "ArrowLeft", 37, None), ("f", "KeyF", 70, "f")],
        "right": [("ArrowRight", "ArrowRight", 39, None), ("j", "KeyJ", 74, "j")],
        "same": [("s", "KeyS", 83, "s")], "different": [("d", "KeyD", 68, "d")]}


@pytest.fixture(scope="module")
def browser():
    b = Browser()
    yield b
    b.close()


def settle(browser, expression, timeout=15.0):
    """Wait for a condition across navigations (evaluation fails while a page is replaced)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if browser.js(expression):
                return
        except (AssertionError, RuntimeError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {expression}")


def press(browser, answer, k):
    key, code, keycode, text = KEYS[answer][k % len(KEYS[answer])]
    browser.key(key, code, keycode, text)


def start_block(browser):
    settle(browser, "location.pathname === '/task' && document.readyState === 'complete' && window.bappsReady === true")
    browser.key("Enter", "Enter", 13, "\r")
    settle(browser, "!document.getElementById('stage').hidden")


def stored_answers(db, pid):
    with sqlite3.connect(db) as c:
        return c.execute("SELECT x.position, x.item, x.response, x.side, x.rt_ms, x.timing, a.hit FROM answers x "
                         "JOIN assignments a ON a.id = x.assignment WHERE a.participant = ? ORDER BY x.position",
                         (pid,)).fetchall()


def test_2afc_session_with_keys_reload_and_prolific_redirect(tiny_dataset, tmp_path, browser):
    record = make_tasks(tiny_dataset, tmp_path / "afc", task="2afc", judgments=2, per_hit=4)
    n = record["derived"]["trials_per_hit"]
    port = free_port()
    done_url = f"http://127.0.0.1:{port}/health?cc=TESTCC"
    db = tmp_path / "afc.sqlite"
    server = Server(tmp_path / "afc", tiny_dataset, db, "--completion-url", done_url, port=port)
    try:
        browser.goto(server.url + "?PROLIFIC_PID=pp1&STUDY_ID=study9&SESSION_ID=sess3")
        assert "I agree" in browser.js("document.body.innerText")
        browser.js("document.getElementById('consent').click()")
        start_block(browser)
        wanted = ["left", "right", "right", "left", "right", "left", "left"][:n]
        split = 2
        for k in range(split):
            press(browser, wanted[k], k)
        settle(browser, f"window.bappsSaved === {split}")
        # a reload in the middle: the page comes back with the trials still to answer
        browser.page("Page.reload")
        start_block(browser)
        assert browser.js("document.getElementById('progress').textContent") == f"Trial {split + 1} of {n}"
        assert browser.js("document.querySelectorAll('#trials .trial').length") == n - split
        for k in range(split, n):
            press(browser, wanted[k], k)
        settle(browser, "location.pathname === '/done'")
        assert "TESTCC" in browser.js("document.getElementById('code').textContent")
        settle(browser, f"location.href === {done_url!r}", timeout=10)  # Prolific's redirect
    finally:
        server.stop()
    rows = stored_answers(db, "pp1")
    hit = record["hits"][rows[0][6] - 1]
    assert [r[0] for r in rows] == list(range(1, n + 1))
    assert [r[1] for r in rows] == [t["item"] for t in hit["trials"]]
    assert [r[2] for r in rows] == wanted
    assert [r[3] for r in rows] == [t["p0side"] for t in hit["trials"]]
    assert all(isinstance(r[4], int) and r[4] >= 0 for r in rows)
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT source, study_id, session_id, consented IS NOT NULL FROM participants "
                         "WHERE id = 'pp1'").fetchone() == ("prolific", "study9", "sess3", 1)
        assert c.execute("SELECT status FROM assignments WHERE participant = 'pp1'").fetchall() == [("complete",)]


def test_jnd_session_keeps_timing_through_a_reload(tiny_dataset, tmp_path, browser):
    record = make_tasks(tiny_dataset, tmp_path / "jnd", task="jnd", judgments=3, per_hit=2, sentinel_rate=0.25,
                        practice=2)
    n = record["derived"]["trials_per_hit"]
    db = tmp_path / "jnd.sqlite"
    server = Server(tmp_path / "jnd", tiny_dataset, db, "--completion-code", "LAB-OK")
    try:
        browser.goto(server.url + "?participant=lab7")
        browser.js("document.getElementById('consent').click()")
        start_block(browser)
        wanted = ["same", "different", "different", "same", "same", "different"][:n]
        for k in range(n):
            if k == 3:
                settle(browser, "window.bappsSaved === 3")
                browser.page("Page.reload")
                start_block(browser)
                assert browser.js("document.getElementById('practice-note').hidden") is True  # practice is over
            assert browser.js("document.getElementById('answer-same').disabled") is True
            press(browser, wanted[k], 0)  # before the pair: ignored
            browser.key(" ", "Space", 32, " ")
            settle(browser, "!document.getElementById('answer-same').disabled", timeout=6)
            press(browser, wanted[k], 0)
        settle(browser, "location.pathname === '/done'")
        assert browser.js("document.getElementById('code').textContent") == "LAB-OK"
    finally:
        server.stop()
    rows = stored_answers(db, "lab7")
    hit = record["hits"][rows[0][6] - 1]
    assert [r[0] for r in rows] == list(range(1, n + 1))
    assert [r[1] for r in rows] == [t["item"] for t in hit["trials"]]
    assert [r[2] for r in rows] == wanted
    for r in rows:
        first, blank, second = map(int, r[5].split(","))
        assert abs(first - 1000) <= 75 and abs(blank - 250) <= 75 and abs(second - 1000) <= 75, r[5]
    # the measured phases reach ingest, whose protocol check sees every trial as timed
    from judgments.ingest import ingest_files

    report = ingest_files([db], tiny_dataset, timing_tolerance_ms=75)["subsets"]["jnd/val/traditional"]
    assert report["timing"]["untimed_rows"] == 0
