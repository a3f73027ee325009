"""The study database of `bapps-build serve`: SQLite in WAL mode, standard library only.

    meta          key/value: the task set it serves, the signing secret, the admin token,
                  the completion code (kept, so a restart continues the same study)
    hits          one row per HIT of the task set
    participants  who came, how (prolific / lab / cookie), when they consented
    assignments   one participant doing one HIT: active -> complete, or released after the
                  assignment timeout; UNIQUE(hit, participant): nobody does a HIT twice
    answers       one row per answered trial, committed when it arrives (group commit;
                  synchronous=NORMAL by default: acknowledged means in the WAL file,
                  which a killed server keeps; FULL: on the disk, which a power cut keeps)

Every change runs in one `BEGIN IMMEDIATE` transaction under one lock, so the quota check and
the insert that depends on it cannot interleave: a HIT never has more than `judgments`
active + complete assignments, whatever the number of participants arriving at once.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import queue
import re
import secrets
import sqlite3
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Optional
from bapps_build.errors import UserError

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS hits (hit INTEGER PRIMARY KEY, trials INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS participants (
    id TEXT PRIMARY KEY, source TEXT NOT NULL, study_id TEXT NOT NULL DEFAULT '',
    session_id TEXT NOT NULL DEFAULT '', first_seen REAL NOT NULL, consented REAL);
CREATE TABLE IF NOT EXISTS assignments (
    id TEXT PRIMARY KEY, hit INTEGER NOT NULL REFERENCES hits(hit), participant TEXT NOT NULL REFERENCES participants(id),
    status TEXT NOT NULL CHECK (status IN ('active', 'complete', 'released')),
    started REAL NOT NULL, last_seen REAL NOT NULL, finished REAL,
    UNIQUE (hit, participant));
CREATE INDEX IF NOT EXISTS assignments_by_status ON assignments (status, hit);
CREATE INDEX IF NOT EXISTS assignments_by_participant ON assignments (participant, status);
CREATE TABLE IF NOT EXISTS answers (
    assignment TEXT NOT NULL REFERENCES assignments(id), position INTEGER NOT NULL, item TEXT NOT NULL,
    kind TEXT NOT NULL, response TEXT NOT NULL, side TEXT NOT NULL, correct INTEGER,
    rt_ms INTEGER, timing TEXT NOT NULL DEFAULT '', received REAL NOT NULL,
    PRIMARY KEY (assignment, position));
"""

RESPONSES = {"2afc": ("left", "right"), "jnd": ("same", "different")}
ID_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
TIMING_PATTERN = re.compile(r"^\d{1,5},\d{1,5},\d{1,5}$")
MAX_RT_MS = 3_600_000
STUDY_SUFFIXES = (".sqlite", ".sqlite3", ".db")


class StudyError(UserError, ValueError):
    """The database and the task set do not fit together; the message says what to do."""


class _Pending(list):
    """The outcome of one queued write: [(value, exception)] once `event` is set."""

    def __init__(self, callback=None):
        super().__init__()
        self.event = threading.Event()
        self.callback = callback  # called by the writer thread once the outcome is in


class AnswerRefused(Exception):
    """A post that is not taken: `status` is the HTTP status, `reason` says why, for people."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def valid_id(value: str) -> bool:
    return bool(value) and bool(ID_PATTERN.match(value))


def record_digest(record: dict) -> str:
    return hashlib.sha256(json.dumps({"items": record["items"], "hits": record["hits"]}, sort_keys=True)
                          .encode()).hexdigest()


def is_study_db(path) -> bool:
    """A SQLite file whose name ends in .sqlite / .sqlite3 / .db (what `ingest` reads as a study)."""
    path = Path(path)
    if path.suffix.lower() not in STUDY_SUFFIXES or not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(16) == b"SQLite format 3\x00"


SYNCHRONOUS = ("full", "normal")


def connect(path, readonly: bool = False, synchronous: str = "normal") -> sqlite3.Connection:
    """synchronous full: a COMMIT returns once it is on the disk (survives a power cut);
    normal: once it is in the WAL file (survives a killed server, not a power cut; no fsync)."""
    if readonly:
        conn = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True, isolation_level=None,
                               check_same_thread=False)
    else:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        if synchronous not in SYNCHRONOUS:
            raise StudyError(f"synchronous {synchronous!r}: full or normal")
        conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


class Study:
    """One task set served from one database; every method is safe to call from many threads."""

    def __init__(self, path, record: dict, judgments: Optional[int] = None, assignment_timeout: float = 3600.0,
                 completion_code: Optional[str] = None, admin_token: Optional[str] = None,
                 clock: Callable[[], float] = time.time, synchronous: str = "normal"):
        self.path = Path(path)
        self.record = record
        self.task = record["task"]
        self.judgments = int(judgments or record["settings"]["judgments"])
        self.timeout = float(assignment_timeout)
        self.clock = clock
        self.lock = threading.Lock()
        self._known: Dict[str, dict] = {}  # assignment id -> {id, hit, participant}
        self.trials: Dict[int, List[dict]] = {h["hit"]: h["trials"] for h in record["hits"]}
        self.conn = connect(self.path, synchronous=synchronous)
        with self.lock:
            self._begin()
            try:
                for statement in SCHEMA.strip().split(";"):
                    if statement.strip():
                        self.conn.execute(statement)
                meta = dict(self.conn.execute("SELECT key, value FROM meta"))
                digest = record_digest(record)
                if meta and meta.get("tasks_digest") != digest:
                    raise StudyError(f"{self.path} holds the study of another task set ({meta.get('tasks_name')!r}); "
                                     f"give this task set its own --db")
                defaults = {"tasks_name": record["name"], "tasks_digest": digest, "task": self.task,
                            "secret": secrets.token_hex(32), "admin_token": admin_token or secrets.token_urlsafe(18),
                            "completion_code": completion_code or secrets.token_hex(4).upper(),
                            "tasks_record": json.dumps(record), "created": str(self.clock())}
                for key, value in defaults.items():
                    self.conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value))
                for key, value in (("admin_token", admin_token), ("completion_code", completion_code)):
                    if value:  # given again at a restart: the new value holds
                        self.conn.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))
                self.conn.executemany("INSERT OR IGNORE INTO hits (hit, trials) VALUES (?, ?)",
                                      [(h, len(t)) for h, t in self.trials.items()])
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        meta = dict(self.conn.execute("SELECT key, value FROM meta"))
        self.secret = bytes.fromhex(meta["secret"])
        self.admin_token = meta["admin_token"]
        self.completion_code = meta["completion_code"]
        self.read_conn = connect(self.path, synchronous=synchronous)
        self.read_lock = threading.Lock()
        self.batches = 0  # group commits so far (answers committed together share one fsync)
        self._answers: "queue.Queue" = queue.Queue()
        self._writer = threading.Thread(target=self._write_answers, name="bapps-answer-writer", daemon=True)
        self._writer.start()

    def close(self):
        self._answers.put(None)
        self._writer.join(timeout=30)
        with self.lock:
            self.conn.close()
        with self.read_lock:
            self.read_conn.close()

    def _write_answers(self):
        """Group commit: the answers waiting when a transaction starts are stored in it, each in
        its own savepoint (a refused one does not take the others with it), and acknowledged
        only once the COMMIT has reached the disk. Under load one fsync serves many answers."""
        while True:
            first = self._answers.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < 256:
                try:
                    more = self._answers.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._answers.put(None)
                    break
                batch.append(more)
            outcomes = []
            with self.lock:
                try:
                    self._begin()
                    for fn, done in batch:
                        self.conn.execute("SAVEPOINT answer")
                        try:
                            outcomes.append((done, fn(), None))
                            self.conn.execute("RELEASE answer")
                        except Exception as exc:
                            self.conn.execute("ROLLBACK TO answer")
                            self.conn.execute("RELEASE answer")
                            outcomes.append((done, None, exc))
                    self.conn.execute("COMMIT")
                    self.batches += 1
                except BaseException as exc:  # the commit itself failed: nothing of the batch is stored
                    try:
                        self.conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                    outcomes = [(done, None, exc) for _, done in batch]
            for done, value, exc in outcomes:
                done.append((value, exc))
                done.event.set()
                if done.callback is not None:
                    done.callback()

    def submit(self, fn, callback=None) -> _Pending:
        """Queue fn for the next group commit without waiting (the web server awaits `callback`)."""
        done = _Pending(callback)
        self._answers.put((fn, done))
        return done

    def _write(self, fn):
        """Run fn in the next group commit; returns its value once committed (or raises its error)."""
        done = self.submit(fn)
        if not done.event.wait(60):
            raise AnswerRefused(503, "the database is busy; try again")
        value, exc = done[0]
        if exc is not None:
            raise exc
        return value

    def _begin(self):
        self.conn.execute("BEGIN IMMEDIATE")

    def _transaction(self, fn, *args):
        """Every change goes through the writer thread's group commit (see _write_answers)."""
        return self._write(lambda: fn(*args))

    # ------------------------------------------------------------ signing

    def sign(self, purpose: str, value: str) -> str:
        return hmac.new(self.secret, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()[:32]

    def token(self, assignment_id: str, participant: str) -> str:
        return f"{assignment_id}.{self.sign('assignment', assignment_id + '/' + participant)}"

    def cookie_value(self, participant: str) -> str:
        return f"{participant}.{self.sign('participant', participant)}"

    def participant_from_cookie(self, value: str) -> Optional[str]:
        pid, _, mac = (value or "").rpartition(".")
        if valid_id(pid) and hmac.compare_digest(mac.encode(), self.sign("participant", pid).encode()):
            return pid
        return None

    def assignment_from_token(self, token) -> Optional[dict]:
        """The assignment a token was issued for, or None for a forged or unknown token."""
        if not isinstance(token, str) or len(token) > 80:
            return None
        aid, _, mac = token.partition(".")
        if not re.fullmatch(r"[0-9a-f]{16}", aid):
            return None
        a = self._known.get(aid)
        if a is None:  # id, hit and participant of an assignment never change: read once
            row = self._read("SELECT id, hit, participant FROM assignments WHERE id = ?", (aid,))
            if not row:
                return None
            a = dict(zip(("id", "hit", "participant"), row[0]))
            self._known[aid] = a
        if not hmac.compare_digest(mac.encode(), self.sign("assignment", aid + "/" + a["participant"]).encode()):
            return None
        return a

    def _read(self, sql, args=()):
        """Reads use their own connection: in WAL mode they never wait for a commit in progress."""
        with self.read_lock:
            return self.read_conn.execute(sql, args).fetchall()

    # ------------------------------------------------------------ participants and assignment

    def add_participant(self, pid: str, source: str, study_id: str = "", session_id: str = "") -> None:
        def run():
            self.conn.execute("INSERT OR IGNORE INTO participants (id, source, study_id, session_id, first_seen) "
                              "VALUES (?, ?, ?, ?, ?)", (pid, source, study_id, session_id, self.clock()))
            if study_id or session_id:
                self.conn.execute("UPDATE participants SET study_id = ?, session_id = ? WHERE id = ?",
                                  (study_id, session_id, pid))
        self._transaction(run)

    def consent(self, pid: str) -> None:
        self._transaction(lambda: self.conn.execute(
            "UPDATE participants SET consented = COALESCE(consented, ?) WHERE id = ?", (self.clock(), pid)))

    def has_consented(self, pid: str) -> bool:
        row = self._read("SELECT consented FROM participants WHERE id = ?", (pid,))
        return bool(row) and row[0][0] is not None

    def _release_expired(self, now: float) -> int:
        return self.conn.execute("UPDATE assignments SET status = 'released' WHERE status = 'active' AND last_seen < ?",
                                 (now - self.timeout,)).rowcount

    def active_assignment(self, pid: str) -> Optional[dict]:
        """The participant's assignment in progress (a reload resumes it), or None; read only:
        one idle past the timeout counts as gone (the next assign() releases it)."""
        row = self._read("SELECT id, hit, last_seen FROM assignments WHERE participant = ? AND status = 'active'",
                         (pid,))
        if not row or row[0][2] < self.clock() - self.timeout:
            return None
        aid, hit, _ = row[0]
        answered = self._read("SELECT COUNT(*) FROM answers WHERE assignment = ?", (aid,))[0][0]
        return {"id": aid, "hit": hit, "answered": answered, "token": self.token(aid, pid), "trials": self.trials[hit]}

    def _active(self, pid):
        row = self.conn.execute("SELECT id, hit FROM assignments WHERE participant = ? AND status = 'active'",
                                (pid,)).fetchone()
        if not row:
            return None
        answered = self.conn.execute("SELECT COUNT(*) FROM answers WHERE assignment = ?", (row[0],)).fetchone()[0]
        return {"id": row[0], "hit": row[1], "answered": answered, "token": self.token(row[0], pid),
                "trials": self.trials[row[1]]}

    def assign(self, pid: str) -> Optional[dict]:
        """The participant's active assignment, else a new one on the HIT that most needs judgments
        (fewest active + complete, then the lowest number) among those they have not had; None
        when no HIT needs them."""
        def run():
            now = self.clock()
            self._release_expired(now)
            current = self._active(pid)
            if current:
                return current
            row = self.conn.execute(
                "SELECT h.hit FROM hits h LEFT JOIN (SELECT hit, COUNT(*) AS n FROM assignments "
                "WHERE status IN ('active', 'complete') GROUP BY hit) a ON a.hit = h.hit "
                "WHERE COALESCE(a.n, 0) < ? AND h.hit NOT IN (SELECT hit FROM assignments WHERE participant = ?) "
                "ORDER BY COALESCE(a.n, 0), h.hit LIMIT 1", (self.judgments, pid)).fetchone()
            if row is None:
                return None
            aid = secrets.token_hex(8)
            self.conn.execute("INSERT INTO assignments (id, hit, participant, status, started, last_seen) "
                              "VALUES (?, ?, ?, 'active', ?, ?)", (aid, row[0], pid, now, now))
            return {"id": aid, "hit": row[0], "answered": 0, "token": self.token(aid, pid),
                    "trials": self.trials[row[0]]}
        return self._transaction(run)

    def completed_assignments(self, pid: str) -> int:
        return self._read("SELECT COUNT(*) FROM assignments WHERE participant = ? AND status = 'complete'",
                          (pid,))[0][0]

    # ------------------------------------------------------------ answers

    def record_answer(self, token, position, item, response, rt_ms=None, timing="") -> dict:
        """Store one answer of an assignment, in order; the same answer again is acknowledged
        and stored once. Raises AnswerRefused (HTTP status, reason) for anything else."""
        return self.answer_outcome(self._write(self.answer_job(token, position, item, response, rt_ms, timing)))

    @staticmethod
    def answer_outcome(out: dict) -> dict:
        if "refused" in out:
            raise AnswerRefused(*out["refused"])
        return out

    def answer_job(self, token, position, item, response, rt_ms=None, timing=""):
        """Check an answer (raises AnswerRefused) and return the write that stores it, for
        _write / submit; answer_outcome turns the write's value into the result."""
        a = self.assignment_from_token(token)
        if a is None:
            raise AnswerRefused(403, "this token was not issued by this study")
        trials = self.trials[a["hit"]]
        if not isinstance(position, int) or isinstance(position, bool) or not 1 <= position <= len(trials):
            raise AnswerRefused(400, f"position must be an integer from 1 to {len(trials)}")
        trial = trials[position - 1]
        if item != trial["item"]:
            raise AnswerRefused(400, f"trial {position} of this assignment is not item {str(item)[:40]!r}")
        if response not in RESPONSES[self.task]:
            raise AnswerRefused(400, f"response must be one of {', '.join(RESPONSES[self.task])}")
        if rt_ms is not None and (not isinstance(rt_ms, int) or isinstance(rt_ms, bool) or not 0 <= rt_ms <= MAX_RT_MS):
            raise AnswerRefused(400, f"rt_ms must be an integer from 0 to {MAX_RT_MS}")
        timing = timing or ""
        if not isinstance(timing, str) or (timing and not TIMING_PATTERN.match(timing)):
            raise AnswerRefused(400, "timing must be three integers in ms, 'first,blank,second'")
        if self.task == "jnd" and not timing:
            raise AnswerRefused(400, "a JND answer needs the measured timing of its presentation")
        side = trial.get("p0side", "")
        info = self.record["items"][item]
        correct = self.is_correct(info, response, side)

        def run():
            now = self.clock()
            status, last_seen = self.conn.execute("SELECT status, last_seen FROM assignments WHERE id = ?",
                                                  (a["id"],)).fetchone()
            old = self.conn.execute("SELECT item, response FROM answers WHERE assignment = ? AND position = ?",
                                    (a["id"], position)).fetchone()
            if old is not None:
                if old[1] != response:
                    raise AnswerRefused(409, f"trial {position} was answered {old[1]!r} already")
                return {"stored": False, "done": status == "complete"}
            if status == "complete":
                raise AnswerRefused(409, "this assignment is complete")
            if status == "released" or last_seen < now - self.timeout:
                self.conn.execute("UPDATE assignments SET status = 'released' WHERE id = ?", (a["id"],))
                return {"refused": (409, "this assignment was released after a long pause; reload the page to go on")}
            answered = self.conn.execute("SELECT COUNT(*) FROM answers WHERE assignment = ?", (a["id"],)).fetchone()[0]
            if position != answered + 1:
                raise AnswerRefused(409, f"trial {answered + 1} comes next, not {position}")
            self.conn.execute("INSERT INTO answers (assignment, position, item, kind, response, side, correct, rt_ms, "
                              "timing, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                              (a["id"], position, item, info["kind"], response, side, correct, rt_ms, timing, now))
            done = position == len(trials)
            if done:
                self.conn.execute("UPDATE assignments SET status = 'complete', last_seen = ?, finished = ? WHERE id = ?",
                                  (now, now, a["id"]))
            else:
                self.conn.execute("UPDATE assignments SET last_seen = ? WHERE id = ?", (now, a["id"]))
            return {"stored": True, "done": done}
        return run

    def is_correct(self, info: dict, response: str, side: str) -> Optional[int]:
        """1 / 0 for a sentinel or practice trial with a known answer, None for a test trial."""
        expected = info.get("expected")
        if not expected:
            return None
        if self.task == "2afc":
            chose = "p0" if response == side else "p1"
            return int(chose == expected)
        return int(response == expected)

    # ------------------------------------------------------------ monitoring

    def progress(self) -> dict:
        """What /admin shows: HITs done / in progress / left, judgments per example, participants."""
        with self.read_lock:
            if self.read_conn.in_transaction:  # left open by an earlier failure
                self.read_conn.execute("ROLLBACK")
            self.read_conn.execute("BEGIN")  # one snapshot for all the queries
            now = self.clock()
            hits = self.read_conn.execute(
                "SELECT h.hit, SUM(a.status = 'complete'), SUM(a.status = 'active' AND a.last_seen >= ?) "
                "FROM hits h LEFT JOIN assignments a ON a.hit = h.hit GROUP BY h.hit",
                (now - self.timeout,)).fetchall()
            per_item = self.read_conn.execute("SELECT item, COUNT(*) FROM answers WHERE kind = 'test' GROUP BY item").fetchall()
            people = self.read_conn.execute(
                "SELECT p.id, p.source, p.study_id, p.consented, "
                "(SELECT COUNT(*) FROM assignments a WHERE a.participant = p.id AND a.status = 'complete'), "
                "(SELECT COUNT(*) FROM assignments a WHERE a.participant = p.id AND a.status = 'active') "
                "FROM participants p ORDER BY p.first_seen").fetchall()
            answers = self.read_conn.execute(
                "SELECT a.participant, COUNT(*), SUM(x.kind = 'sentinel'), SUM(x.kind = 'sentinel' AND x.correct = 1), "
                "MAX(x.received) FROM answers x JOIN assignments a ON a.id = x.assignment GROUP BY a.participant"
            ).fetchall()
            rts = self.read_conn.execute(
                "SELECT a.participant, x.rt_ms FROM answers x JOIN assignments a ON a.id = x.assignment "
                "WHERE x.rt_ms IS NOT NULL").fetchall()
            statuses = dict(self.read_conn.execute("SELECT status, COUNT(*) FROM assignments GROUP BY status").fetchall())
            self.read_conn.execute("COMMIT")
        done = sum(1 for _, c, _ in hits if (c or 0) >= self.judgments)
        in_progress = sum(1 for _, c, a in hits if (c or 0) < self.judgments and (a or 0) > 0)
        n_per_example = {}
        counts = dict(per_item)
        for item, info in self.record["items"].items():
            if info["kind"] == "test":
                n = counts.get(item, 0)
                n_per_example[n] = n_per_example.get(n, 0) + 1
        by_person = {row[0]: row for row in answers}
        rt_lists: Dict[str, List[int]] = {}
        for pid, rt in rts:
            rt_lists.setdefault(pid, []).append(rt)
        participants = []
        for pid, source, study_id, consented, n_complete, n_active in people:
            a = by_person.get(pid, (pid, 0, 0, 0, None))
            rt = sorted(rt_lists.get(pid, []))
            participants.append({
                "participant": pid, "source": source, "study_id": study_id, "consented": consented is not None,
                "complete": n_complete, "active": n_active, "answers": a[1], "sentinels": a[2] or 0,
                "sentinel_accuracy": (a[3] / a[2]) if a[2] else None,
                "median_rt_ms": rt[len(rt) // 2] if rt else None, "last_answer": a[4]})
        return {"tasks": self.record["name"], "task": self.task, "judgments": self.judgments,
                "hits": {"total": len(hits), "done": done, "in_progress": in_progress,
                         "left": len(hits) - done - in_progress},
                "assignments": {k: statuses.get(k, 0) for k in ("active", "complete", "released")},
                "judgments_per_example": {str(k): v for k, v in sorted(n_per_example.items())},
                "participants": participants}


# ------------------------------------------------------------ reading a study for ingest


def read_meta(path) -> Dict[str, str]:
    conn = connect(path, readonly=True)
    try:
        return dict(conn.execute("SELECT key, value FROM meta"))
    except sqlite3.DatabaseError as exc:
        raise StudyError(f"{path}: not a study database of `bapps-build serve` ({exc})") from None
    finally:
        conn.close()


def snapshot_jsonl(path, folder) -> tuple:
    """Every answer of a study as a generic JSON Lines file (worker = participant, assignment,
    item, response, side, time_ms, submitted, JND timing) in a fixed order, plus the study's tasks.json; returns both
    paths. The file's bytes change only when answers were added, so `ingest` sees a study it
    read before as the same file, and a grown one as new rows over old ones."""
    path = Path(path)
    folder = Path(folder)
    conn = connect(path, readonly=True)
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        rows = conn.execute(
            "SELECT a.participant, x.assignment, x.item, x.response, x.side, x.rt_ms, x.timing, x.received "
            "FROM answers x "
            "JOIN assignments a ON a.id = x.assignment ORDER BY x.received, x.assignment, x.position").fetchall()
    except sqlite3.DatabaseError as exc:
        raise StudyError(f"{path}: not a study database of `bapps-build serve` ({exc})") from None
    finally:
        conn.close()
    if "tasks_record" not in meta:
        raise StudyError(f"{path}: not a study database of `bapps-build serve` (no task set recorded)")
    lines = []
    for worker, assignment, item, response, side, rt, timing, received in rows:
        obj = {"worker": worker, "assignment": assignment, "item": item, "response": response,
               # when the answer arrived, so one vote per worker keeps the latest
               "submitted": datetime.fromtimestamp(received, timezone.utc).isoformat()}
        if side:
            obj["side"] = side
        if rt is not None:
            obj["time_ms"] = rt
        if timing:  # JND phase durations as the page measured them: ingest checks the protocol
            obj["timing"] = timing
        lines.append(json.dumps(obj, separators=(",", ":")))
    out = folder / f"{path.stem}.jsonl"
    out.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    tasks = folder / f"{path.stem}-tasks.json"
    tasks.write_text(meta["tasks_record"], encoding="utf-8")
    return out, tasks


def load_task_record(tasks) -> tuple:
    """(record, folder) of a TASKS folder or its tasks.json."""
    from ..catalog import read_task_record

    path = Path(tasks)
    if path.is_dir():
        path = path / "tasks.json"
    record = read_task_record(path)
    if "hits" not in record or "files" not in record:
        raise StudyError(f"{path}: not a task set of `bapps-build tasks` (no hits)")
    return record, path.parent
