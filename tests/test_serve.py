"""`bapps-build serve`: assignment rules, hostile posts, crash safety, concurrency, and the study
database into labels through `ingest`.

In-process checks use Starlette's TestClient; crash and concurrency checks run the real command
(`python -m bapps_build.cli serve`, uvicorn on 127.0.0.1) in its own process and kill it with
SIGKILL."""
import json
import sqlite3
import urllib.request
import threading
import time

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

from starlette.testclient import TestClient  # noqa: E402

from judgments.catalog import resolve_subset  # noqa: E402
from judgments.ingest import IngestError, ingest_files  # noqa: E402
from judgments.serve.app import create_app, prepare_study  # noqa: E402
from judgments.serve.db import AnswerRefused, Study  # noqa: E402
from judgments.store import COUNTS, ROWS, read_counts  # noqa: E402
from serve_helpers import Participant, Server, answer_for, make_tasks  # noqa: E402
from test_judgments_common import tiny_dataset  # noqa: E402,F401  (a fixture)


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


def client_for(study, folder, **kw):
    return TestClient(create_app(study, folder, **kw))


def enter(client, pid):
    assert client.get(f"/?participant={pid}").status_code == 200
    r = client.post("/begin", follow_redirects=False)
    assert r.status_code == 303
    return client.get("/api/assignment").json()


def answer_all(client, a, task="2afc", upto=None):
    for t in a["trials"][a["answered"]:upto]:
        body = {"token": a["token"], "position": t["position"], "item": t["item"], "response": answer_for(task, t)}
        if task == "jnd":
            body["timing"] = "1000,250,1000"
        r = client.post("/api/answer", json=body)
        assert r.status_code == 200, r.text


def count_rows(db):
    with sqlite3.connect(db) as c:
        return c.execute("SELECT COUNT(*) FROM answers").fetchone()[0]


# ---------------------------------------------------------------- assignment rules


def test_assignment_quota_resume_release_and_no_hit_twice(tiny_dataset, tmp_path):
    record = make_tasks(tiny_dataset, tmp_path / "t", judgments=2, per_hit=4)  # 3 HITs of 5 trials
    clock = Clock()
    study = Study(tmp_path / "s.sqlite", record, judgments=2, assignment_timeout=600, clock=clock)
    hits = [h["hit"] for h in record["hits"]]
    # six participants fill the 3 x 2 slots, each HIT exactly twice; the seventh gets nothing
    got = {}
    for k in range(6):
        study.add_participant(f"p{k}", "lab")
        got[f"p{k}"] = study.assign(f"p{k}")
    assert sorted(a["hit"] for a in got.values()) == sorted(hits * 2)
    study.add_participant("late", "lab")
    assert study.assign("late") is None
    # a reload resumes: the same assignment, with what was answered
    a = got["p0"]
    t = a["trials"][0]
    study.record_answer(a["token"], 1, t["item"], answer_for("2afc", t), 500)
    again = study.assign("p0")
    assert (again["id"], again["answered"]) == (a["id"], 1)
    # everybody but p1 answers again later; p1 stays idle past the timeout and is released, and
    # its slot goes to "late", on that very HIT
    clock.now += 400
    for k in range(6):
        if k != 1:
            b = got[f"p{k}"]
            pos = 2 if k == 0 else 1
            t = b["trials"][pos - 1]
            study.record_answer(b["token"], pos, t["item"], answer_for("2afc", t), 400)
    clock.now += 201
    late = study.assign("late")
    assert late is not None and late["hit"] == got["p1"]["hit"]
    assert study.assign("p0")["id"] == got["p0"]["id"]  # not released: answered 201 s ago
    # the released assignment cannot take answers any more; p1 then gets a HIT it has not had
    t1 = got["p1"]["trials"][0]
    with pytest.raises(AnswerRefused) as exc:
        study.record_answer(got["p1"]["token"], 1, t1["item"], answer_for("2afc", t1), 500)
    assert exc.value.status == 409 and "released" in exc.value.reason
    p1_next = study.assign("p1")
    assert p1_next is None or p1_next["hit"] != got["p1"]["hit"]
    with sqlite3.connect(tmp_path / "s.sqlite") as c:
        pairs = c.execute("SELECT hit, participant FROM assignments").fetchall()
        per_hit = c.execute("SELECT hit, COUNT(*) FROM assignments WHERE status IN ('active','complete') "
                            "GROUP BY hit").fetchall()
    assert len(pairs) == len(set(pairs))
    assert all(n <= 2 for _, n in per_hit)


def test_assignment_is_atomic_under_threads(tiny_dataset, tmp_path):
    """40 threads ask for HITs at once, each looping until none is left: no HIT over its quota,
    nobody twice on one HIT, and every slot taken."""
    record = make_tasks(tiny_dataset, tmp_path / "t", judgments=3, per_hit=1)  # 12 HITs
    study = Study(tmp_path / "s.sqlite", record, judgments=3)
    taken, errors = [], []
    start = threading.Barrier(40)

    def worker(k):
        pid = f"w{k}"
        try:
            study.add_participant(pid, "lab")
            start.wait()
            for _ in range(20):
                a = study.assign(pid)
                if a is None:
                    return
                for t in a["trials"]:
                    study.record_answer(a["token"], t_pos(a, t), t["item"], answer_for("2afc", t), 300)
                taken.append((a["hit"], pid))
        except Exception as exc:  # surfaced below
            errors.append(repr(exc))

    def t_pos(a, t):
        return a["trials"].index(t) + 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(40)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors, errors[:3]
    assert len(taken) == len(set(taken)) == 12 * 3
    per_hit = {}
    for hit, _ in taken:
        per_hit[hit] = per_hit.get(hit, 0) + 1
    assert set(per_hit.values()) == {3}


# ---------------------------------------------------------------- hostile posts


@pytest.fixture
def served_study(tiny_dataset, tmp_path):
    make_tasks(tiny_dataset, tmp_path / "t", judgments=2, per_hit=4)
    study, folder = prepare_study(tmp_path / "t", tiny_dataset, tmp_path / "s.sqlite", admin_token="sesame")
    yield study, folder, tmp_path / "s.sqlite"
    study.close()


def test_hostile_posts_are_refused_and_store_nothing(served_study, tmp_path):
    study, folder, db = served_study
    alice, bob = client_for(study, folder), client_for(study, folder)
    a, b = enter(alice, "alice"), enter(bob, "bob")
    t_a, t_b = a["trials"][0], b["trials"][0]
    good_a = {"token": a["token"], "position": 1, "item": t_a["item"], "response": answer_for("2afc", t_a)}

    def post(client, body):
        return client.post("/api/answer", json=body)

    # bob with alice's item on his own token; bob's id with alice's assignment (forged signature)
    if t_a["item"] != t_b["item"]:
        assert post(bob, {**good_a, "token": b["token"]}).status_code == 400
    forged = a["token"].split(".")[0] + "." + b["token"].split(".")[1]
    assert post(bob, {**good_a, "token": forged}).status_code == 403
    assert post(bob, {**good_a, "token": "0" * 16 + "." + "0" * 32}).status_code == 403
    other = Study(tmp_path / "other.sqlite", study.record)  # another study's secret signs differently
    other.add_participant("alice", "lab")
    o = other.assign("alice")
    assert post(bob, {**good_a, "token": o["token"]}).status_code == 403
    other.close()
    # malformed, wrong types, extra fields, out of range, out of order
    for bad in ({**good_a, "position": "1"}, {**good_a, "position": True}, {**good_a, "position": 0},
                {**good_a, "position": 99}, {**good_a, "response": "p1"}, {**good_a, "response": ["left"]},
                {**good_a, "rt_ms": -1}, {**good_a, "rt_ms": 10 ** 9}, {**good_a, "rt_ms": "fast"},
                {**good_a, "timing": "<script>"}, {**good_a, "extra": 1}, {"token": a["token"]}, [good_a], "x", 7,
                {**good_a, "token": "x" * 500}, {**good_a, "item": "y" * 3000}):
        r = post(alice, bad)
        assert r.status_code in (400, 403, 413), (bad, r.status_code)
    assert post(alice, {**good_a, "position": 2, "item": a["trials"][1]["item"]}).status_code == 409  # skips 1
    assert alice.post("/api/answer", content=b"{not json", headers={"content-type": "application/json"}
                      ).status_code == 400
    assert alice.post("/api/answer", content=json.dumps(good_a), headers={"content-type": "text/plain"}
                      ).status_code == 415
    huge = json.dumps({**good_a, "rt_ms": 1, "timing": "1" * 100_000}).encode()
    assert alice.post("/api/answer", content=huge, headers={"content-type": "application/json"}).status_code == 413

    def chunks():  # no Content-Length: the limit holds on what arrives
        for _ in range(100):
            yield b" " * 1000

    assert alice.post("/api/answer", content=chunks(), headers={"content-type": "application/json"}
                      ).status_code == 413
    assert count_rows(db) == 0
    # the good answer is taken once; the same again is acknowledged, a changed one refused
    assert post(alice, good_a).json() == {"ok": True, "stored": True, "done": False}
    assert post(alice, good_a).json() == {"ok": True, "stored": False, "done": False}
    flipped = "right" if good_a["response"] == "left" else "left"
    assert post(alice, {**good_a, "response": flipped}).status_code == 409
    assert count_rows(db) == 1
    # ids and file names from the outside
    assert alice.get("/?participant=<script>").status_code == 400
    assert alice.get("/?participant=" + "a" * 65).status_code == 400
    assert alice.get("/?PROLIFIC_PID=x&STUDY_ID=a%20b").status_code == 400
    assert alice.get("/images/..%2Ftasks.json").status_code == 404
    assert alice.get("/images/" + "0" * 16 + ".png").status_code == 404
    name = study.record["files"][t_a["item"]]["ref"]
    assert alice.get(f"/images/{name}").content == (folder / "images" / name).read_bytes()
    # a cookie made up by hand is not a participant
    stranger = client_for(study, folder)
    stranger.cookies.set("bapps_participant", "alice.0123456789abcdef0123456789abcdef")
    assert stranger.get("/api/assignment").status_code == 403


def test_admin_needs_its_token(served_study):
    study, folder, db = served_study
    c = client_for(study, folder)
    a = enter(c, "carol")
    answer_all(c, a, upto=3)
    assert c.get("/admin").status_code == 401
    assert c.get("/admin?token=wrong").status_code == 401
    assert c.get("/admin.json").status_code == 401
    assert c.get("/admin.json", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert "carol" not in c.get("/admin?token=wrong").text
    page = c.get("/admin?token=sesame")
    assert page.status_code == 200 and "carol" in page.text
    p = c.get("/admin.json", headers={"Authorization": "Bearer sesame"}).json()
    assert p["hits"] == {"total": 3, "done": 0, "in_progress": 1, "left": 2}
    carol = next(x for x in p["participants"] if x["participant"] == "carol")
    assert carol["answers"] == 3 and carol["active"] == 1 and carol["median_rt_ms"] is None
    sentinels = [t for t in a["trials"][:3] if study.record["items"][t["item"]]["kind"] == "sentinel"]
    assert carol["sentinels"] == len(sentinels)
    if sentinels:  # answer_for prefers p0 on every trial: right exactly where p0 is expected
        right = sum(study.record["items"][t["item"]]["expected"] == "p0" for t in sentinels)
        assert carol["sentinel_accuracy"] == right / len(sentinels)


def test_completion_page_code_and_prolific_identity(served_study):
    study, folder, db = served_study
    url = "https://app.prolific.com/submissions/complete?cc=C0DE42"
    c = client_for(study, folder, completion_url=url)
    assert c.get("/done", follow_redirects=False).status_code == 303  # no participant yet
    r = c.get("/?PROLIFIC_PID=5f1a2b&STUDY_ID=st1&SESSION_ID=se1")
    assert r.status_code == 200 and "I agree" in r.text
    c.post("/begin")
    a = c.get("/api/assignment").json()
    assert c.get("/done", follow_redirects=False).status_code == 303  # nothing completed yet
    answer_all(c, a)
    page = c.get("/done")
    assert study.completion_code in page.text and url.replace("&", "&amp;") in page.text
    # coming back after the end: the completion page again, not a second HIT (one per participant)
    r = c.get("/?PROLIFIC_PID=5f1a2b&STUDY_ID=st1&SESSION_ID=se1", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "done"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT source, study_id, session_id FROM participants WHERE id = '5f1a2b'"
                            ).fetchone() == ("prolific", "st1", "se1")


# ---------------------------------------------------------------- into labels


def test_study_database_ingests_with_qc_and_again_adds_only_new(served_study, tiny_dataset, tmp_path):
    study, folder, db = served_study
    subset = resolve_subset(tiny_dataset, "2afc/val/traditional")
    # careful judges: right on every sentinel, p0 on every test triplet
    def careful(task, t):
        info = study.record["items"][t["item"]]
        if info.get("expected") == "p1":
            return "right" if t["p0side"] == "left" else "left"
        return t["p0side"]

    def run(pid, chooser=careful):
        c = client_for(study, folder)
        a = enter(c, pid)
        for t in a["trials"]:
            r = c.post("/api/answer", json={"token": a["token"], "position": t["position"], "item": t["item"],
                                            "response": chooser("2afc", t), "rt_ms": 700})
            assert r.status_code == 200

    for k in range(3):
        run(f"judge{k}")
    summary = ingest_files([db], tiny_dataset, write_labels=True, partial_labels=True)
    report = summary["subsets"]["2afc/val/traditional"]
    assert report["this_ingest"]["new"] == 15
    counts = read_counts(subset.store / COUNTS)
    assert sum(n for _, n in counts.values()) == 3 * 4 and all(p == 0 for p, _ in counts.values())
    # the same database again: nothing new; more participants: only their rows
    again = ingest_files([db], tiny_dataset, write_labels=True, partial_labels=True)
    assert all(r.get("skipped") or not r.get("changed") for r in again["subsets"].values())
    for k in range(3, 6):
        run(f"judge{k}")
    more = ingest_files([db], tiny_dataset, write_labels=True)
    r2 = more["subsets"]["2afc/val/traditional"]
    assert r2["this_ingest"]["new"] == 15 and r2["this_ingest"]["duplicates"] == 15
    counts = read_counts(subset.store / COUNTS)
    assert all(n == 2 for _, n in counts.values())  # every example judged by its 2 assignments' judges
    assert r2["labels"]["complete"] is True
    # all or nothing: the study with a broken file writes nothing
    rows_before = (subset.store / ROWS).read_bytes()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"worker": "w", "item": "nope", "response": "left", "side": "left"}\n')
    with pytest.raises(IngestError):
        ingest_files([db, bad], tiny_dataset)
    assert (subset.store / ROWS).read_bytes() == rows_before


def test_spammer_in_the_study_is_dropped_by_the_same_qc(served_study, tiny_dataset):
    study, folder, db = served_study
    c = client_for(study, folder)
    a = enter(c, "spammer")
    for t in a["trials"]:  # always the wrong side of every sentinel
        info = study.record["items"][t["item"]]
        wrong = t["p0side"] if info.get("expected") == "p1" else ("right" if t["p0side"] == "left" else "left")
        c.post("/api/answer", json={"token": a["token"], "position": t["position"], "item": t["item"],
                                    "response": wrong})
    report = ingest_files([db], tiny_dataset, write_labels=False)["subsets"]["2afc/val/traditional"]
    assert [d["worker"] for d in report["workers"]["dropped"]] == ["spammer"]
    assert report["rows"]["counted"] == 0


# ---------------------------------------------------------------- the real server: kill -9, concurrency


def drive(base, pid, acked, stop, hits=99):
    """A participant answering as fast as the server takes it; every acknowledged answer is noted."""
    try:
        p = Participant(base, pid)
        for _ in range(hits):
            a = p.assignment()
            if a is None:
                return
            for t in a["trials"][a["answered"]:]:
                if stop.is_set():
                    return
                status, body = p.answer(a["token"], t["position"], t["item"], answer_for("2afc", t))
                if status != 200:
                    raise AssertionError((status, body))
                acked.append((a["assignment"], t["position"], t["item"]))
    except OSError:
        pass  # the server was killed under us


def test_kill9_mid_study_loses_no_acknowledged_answer(tiny_dataset, tmp_path):
    make_tasks(tiny_dataset, tmp_path / "t", judgments=4, per_hit=1)  # 12 HITs of 2 trials, 48 slots
    db = tmp_path / "study.sqlite"
    server = Server(tmp_path / "t", tiny_dataset, db, "--hits-per-participant", 12)
    acked, stop = [], threading.Event()
    threads = [threading.Thread(target=drive, args=(server.url, f"k{k}", acked, stop)) for k in range(8)]
    for th in threads:
        th.start()
    deadline = time.monotonic() + 30
    while len(acked) < 30 and time.monotonic() < deadline:
        time.sleep(0.005)
    server.kill9()  # mid-study: posts in flight
    stop.set()
    for th in threads:
        th.join(30)
    n_acked = len(acked)
    assert 30 <= n_acked < 96
    with sqlite3.connect(db) as c:
        stored = set(c.execute("SELECT assignment, position, item FROM answers"))
    assert set(acked) <= stored  # 0 acknowledged answers lost
    # restart on the same database: everybody resumes where the database says, and finishes
    server = Server(tmp_path / "t", tiny_dataset, db, "--hits-per-participant", 12)
    try:
        acked2, stop2 = [], threading.Event()
        threads = [threading.Thread(target=drive, args=(server.url, f"k{k}", acked2, stop2)) for k in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
    finally:
        server.stop()
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT assignment, position FROM answers ORDER BY assignment, position").fetchall()
        complete = c.execute("SELECT hit, COUNT(*) FROM assignments WHERE status = 'complete' GROUP BY hit").fetchall()
        pairs = c.execute("SELECT hit, participant FROM assignments").fetchall()
    with sqlite3.connect(db) as c:
        final = set(c.execute("SELECT assignment, position, item FROM answers"))
    assert set(acked) | set(acked2) <= final
    by_assignment = {}
    for aid, pos in rows:
        by_assignment.setdefault(aid, []).append(pos)
    assert all(pos == list(range(1, len(pos) + 1)) for pos in by_assignment.values())  # no gap, no repeat
    assert dict(complete) == {h: 4 for h in range(1, 13)}
    assert len(pairs) == len(set(pairs))


def test_many_participants_at_once_through_http(tiny_dataset, tmp_path):
    """60 participants hit a real server at the same moment, each doing HITs until none is left."""
    make_tasks(tiny_dataset, tmp_path / "t", judgments=3, per_hit=1)  # 12 HITs, 36 slots
    db = tmp_path / "study.sqlite"
    server = Server(tmp_path / "t", tiny_dataset, db, "--hits-per-participant", 12)
    try:
        acked, stop = [], threading.Event()
        threads = [threading.Thread(target=drive, args=(server.url, f"c{k}", acked, stop)) for k in range(60)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(90)
        with urllib.request.urlopen(server.url + "admin.json?token=test-admin-token", timeout=10) as r:
            progress = json.loads(r.read())
    finally:
        server.stop()
    with sqlite3.connect(db) as c:
        per_hit = dict(c.execute("SELECT hit, COUNT(*) FROM assignments WHERE status IN ('active', 'complete') "
                                 "GROUP BY hit"))
        pairs = c.execute("SELECT hit, participant FROM assignments").fetchall()
        n_answers = c.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
    assert per_hit == {h: 3 for h in range(1, 13)}
    assert len(pairs) == len(set(pairs)) == 36
    assert n_answers == len(acked) == 36 * 2
    assert progress["hits"] == {"total": 12, "done": 12, "in_progress": 0, "left": 0}


def test_platform_serve_task_set_is_served(tiny_dataset, tmp_path):
    record = make_tasks(tiny_dataset, tmp_path / "t", judgments=1, per_hit=4, platform="serve")
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["README.txt", "images", "tasks.json"]
    assert "bapps-build serve TASKS" in (tmp_path / "t" / "README.txt").read_text()
    study, folder = prepare_study(tmp_path / "t", tiny_dataset, tmp_path / "s.sqlite")
    c = client_for(study, folder)
    a = enter(c, "solo")
    page = c.get("/task").text
    for t in a["trials"]:  # the page holds every trial with its images, served from images/
        assert f'value="{t["item"]}"' in page
        assert f'images/{record["files"][t["item"]]["ref"]}' in page
    assert "crowd-html-elements" not in page and "https://" not in page.split("<script>")[0]
    answer_all(c, a)
    assert c.get("/done").status_code == 200
    study.close()


def test_an_mturk_task_set_is_served_with_its_own_images(tiny_dataset, tmp_path):
    from judgments.tasks import TaskSettings, build_task_set

    subset = resolve_subset(tiny_dataset, "2afc/val/traditional")
    record = build_task_set(subset, tmp_path / "m", TaskSettings("mturk", 1, 4, 0.2, 0, "https://cdn.example.org/img",
                                                                 0, "as-mturk"))
    study, folder = prepare_study(tmp_path / "m", tiny_dataset, tmp_path / "m.sqlite")
    c = client_for(study, folder)
    a = enter(c, "m1")
    page = c.get("/task").text
    assert "cdn.example.org" not in page  # never the platform's image host: the server sends them
    name = record["files"][a["trials"][0]["item"]]["ref"]
    assert f'data-ref="images/{name}"' in page
    assert c.get(f"/images/{name}").status_code == 200
    study.close()
