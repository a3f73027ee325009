"""Ingest under faults and load: a crash at any rename of the commit, an
over-long id, labels ingest did not write, temporary files of a killed ingest.

Results files are written as MTurk's "Download CSV" writes them (every field quoted, CRLF) or in
the generic long format a lab study writes."""
import csv
import io
import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import judgments.store as store_module
from judgments.ingest import IngestError, ingest_files
from test_judgments_common import MTURK_HEAD, tiny_dataset  # noqa: F401

AFC = "2afc/val/traditional"
JND = "jnd/val/traditional"
N_AFC, N_JND = 12, 8


def generic(path, rows, status=False):
    """rows: (worker, assignment, example, response[, status])."""
    head = "worker,assignment,item,response" + (",status" if status else "")
    lines = [head] + [",".join([w, a, f"{AFC}/{e:06d}", r] + ([s[0] if s else ""] if status else []))
                      for w, a, e, r, *s in rows]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def mturk_download(path, assignments, trials=10, worker_of=lambda a: f"A{a:03d}WORKER", first=0):
    """An MTurk batch results CSV: one row per assignment, `trials` trials in Input.item<i> /
    Answer.choice<i>, every field quoted, CRLF."""
    header = (MTURK_HEAD + [f"Input.item{i}" for i in range(1, trials + 1)]
              + [f"Answer.choice{i}" for i in range(1, trials + 1)] + ["Approve", "Reject"])
    buf = io.StringIO()
    w = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    w.writerow(header)
    for a in range(assignments):
        row = {h: "" for h in header}
        row.update({"HITId": f"HIT{a // 3:04d}", "AssignmentId": f"3ASSIGN{first + a:08d}", "WorkerId": worker_of(a),
                    "AssignmentStatus": "Approved", "SubmitTime": "Tue Nov 24 10:15:45 PST 2026",
                    "ApprovalTime": "Wed Nov 25 10:15:45 PST 2026"})
        for i in range(1, trials + 1):
            row[f"Input.item{i}"] = f"{AFC}/{(a + i) % N_AFC:06d}"
            row[f"Answer.choice{i}"] = "p1" if (a * i) % 3 else "p0"
        w.writerow([row[h] for h in header])
    Path(path).write_text(buf.getvalue(), encoding="utf-8")
    return path


def state(dataset, any_order=False):
    """What an ingest leaves that matters, in both subsets: labels, counts, the table, the raw
    copies, and any temporary file. any_order: the table's rows as a sorted list (the order of
    ingests)."""
    out = {}
    for subset in (AFC, JND):
        sub = Path(dataset) / subset
        for p in sorted(sub.rglob("*")):
            rel = str(p.relative_to(sub))
            if p.is_file() and (rel.startswith(("judge/", "same/", "judgments/raw/")) or
                                rel in ("judgments/counts.csv", "judgments/rows.tsv", "judgments/qc.json")):
                out[f"{subset}/{rel}"] = p.read_bytes()
                if any_order and rel == "judgments/rows.tsv":
                    out[f"{subset}/{rel}"] = sorted(p.read_bytes().splitlines())
            if p.name.endswith(".partial"):
                out[f"{subset}/{rel}"] = "TEMPORARY"
    return out


class CrashAt:
    """The store's os, whose k-th rename (os.replace / os.rename) raises: a crash at that point of
    the commit (the process dies there: nothing after it runs, no clean-up)."""

    def __init__(self, k):
        self.k, self.n = k, 0

    def _count(self, fn):
        def wrapped(*args):
            self.n += 1
            if self.n == self.k:
                raise KeyboardInterrupt(f"crash at rename {self.k}")
            return fn(*args)
        return wrapped

    def __getattr__(self, name):
        if name in ("replace", "rename"):
            return self._count(getattr(os, name))
        return getattr(os, name)


def count_renames(monkeypatch, fn):
    counter = CrashAt(0)
    monkeypatch.setattr(store_module, "os", counter)
    fn()
    monkeypatch.setattr(store_module, "os", os)
    return counter.n


@pytest.mark.parametrize("case", ["first ingest", "second ingest, two files", "one file, two subsets"])
def test_a_crash_at_each_rename_of_the_commit_is_completed_by_the_rerun(tiny_dataset, tmp_path, monkeypatch, case):
    """For k = 1..N, a crash at the k-th rename of the commit, then the same command again: the
    labels, counts, table and raw copies equal those of an uninterrupted ingest, byte for byte."""
    import shutil

    first = generic(tmp_path / "first.csv", [("A", "a1", e, "p1" if e % 2 else "p0") for e in range(N_AFC)])
    b = mturk_download(tmp_path / "Batch_1_batch_results.csv", 6)
    c = generic(tmp_path / "lab.csv", [("L", "l1", e, "p1") for e in range(0, N_AFC, 2)]
                + [("A", "a1", 3, "p0")])  # a duplicate of the first file's: counts once
    both = tmp_path / "both.jsonl"  # a lab study's file with 2AFC and JND trials: a raw/ copy in each subset
    both.write_text("".join(json.dumps({"worker": w, "assignment": f"{w}1", "item": item, "response": r}) + "\n"
                            for w in ("P", "Q") for item, r in
                            [(f"{AFC}/{e:06d}", "p1" if e % 3 else "p0") for e in range(N_AFC)]
                            + [(f"{JND}/{e:06d}", "same" if e % 2 else "different") for e in range(N_JND)]))
    before, command = {"first ingest": ([], [first]), "second ingest, two files": ([first], [b, c]),
                       "one file, two subsets": ([first], [both])}[case]
    base = tmp_path / "base"
    shutil.copytree(tiny_dataset, base)
    for f in before:
        ingest_files([f], base)
    reference = tmp_path / "reference"
    shutil.copytree(base, reference)
    renames = count_renames(monkeypatch, lambda: ingest_files(command, reference))
    expected = state(reference)
    assert renames >= (3 if case == "first ingest" else 8) and f"{AFC}/judge/000011.npy" in expected
    if case == "one file, two subsets":
        assert f"{JND}/same/000007.npy" in expected
    for k in range(1, renames + 1):
        ds = tmp_path / f"crash{k}"
        shutil.copytree(base, ds)
        monkeypatch.setattr(store_module, "os", CrashAt(k))
        monkeypatch.setattr(store_module.Transaction, "abort", lambda self: None)  # killed: no clean-up runs
        with pytest.raises(KeyboardInterrupt):
            ingest_files(command, ds)
        monkeypatch.undo()
        ingest_files(command, ds)  # the same command again
        assert state(ds) == expected, f"crash at rename {k} of {renames}"
        shutil.rmtree(ds)


def test_a_crash_after_staging_leaves_temporaries_the_next_ingest_removes(tiny_dataset, tmp_path, monkeypatch):
    """A process killed while staging or committing leaves .<name>.<pid>.partial files (and a
    hidden label folder); the next ingest removes those of dead processes only."""
    lab = generic(tmp_path / "lab.csv", [("A", "a1", e, "p1") for e in range(N_AFC)])
    sub = tiny_dataset / AFC
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (sub / "judgments" / "raw").mkdir(parents=True)
        (sub / "judge").mkdir()
        stale = [sub / "judgments" / f".rows.tsv.{dead.pid}.partial",
                 sub / "judgments" / "raw" / f".0123456789ab-lab.csv.{dead.pid}.partial",
                 sub / "judge" / f".000003.npy.{dead.pid}.partial",
                 sub / f".judge.{dead.pid}.partial" / "000001.npy"]
        kept = [sub / "judgments" / f".counts.csv.{alive.pid}.partial",  # a live process's
                sub / "judgments" / "notes.partial", sub / "judgments" / ".notes.partial",  # not ours
                sub / f".ref.{dead.pid}.partial" / "x"]  # not a label folder's
        for p in stale + kept:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"left behind")
        ingest_files([lab], tiny_dataset)
        assert [p for p in stale if p.exists()] == [] and not (sub / f".judge.{dead.pid}.partial").exists()
        assert all(p.exists() for p in kept)
        assert np.load(sub / "judge" / "000003.npy")[0] == 1.0
    finally:
        alive.kill()
        alive.wait()


def test_partial_labels_never_remove_a_label_ingest_did_not_write(tiny_dataset, tmp_path):
    sub = tiny_dataset / AFC
    (sub / "judge").mkdir()
    foreign = {}
    for e in range(N_AFC):  # labels from elsewhere (BAPPS's own, another tool's)
        np.save(sub / "judge" / f"{e:06d}.npy", np.array([0.25], np.float32))
        foreign[e] = (sub / "judge" / f"{e:06d}.npy").read_bytes()
    lab = generic(tmp_path / "lab.csv", [("A", "a1", 0, "p1"), ("A", "a1", 1, "p0"), ("B", "b1", 2, "p1")],
                  status=True)
    summary = ingest_files([lab], tiny_dataset, partial_labels=True)
    labels = summary["subsets"][AFC]["labels"]
    assert labels["written"] == 3 and labels["removed"] == 0 and labels["kept_foreign"] == N_AFC - 3
    assert [np.load(sub / "judge" / f"{e:06d}.npy")[0] for e in range(3)] == [1.0, 0.0, 1.0]
    assert all((sub / "judge" / f"{e:06d}.npy").read_bytes() == foreign[e] for e in range(3, N_AFC))
    # B's assignment rejected since: the label ingest wrote for example 2 goes, the foreign ones stay
    review = generic(tmp_path / "review.csv", [("B", "b1", 2, "p1", "rejected")], status=True)
    summary = ingest_files([review], tiny_dataset, partial_labels=True)
    labels = summary["subsets"][AFC]["labels"]
    assert labels["removed"] == 1 and not (sub / "judge" / "000002.npy").exists()
    assert all((sub / "judge" / f"{e:06d}.npy").read_bytes() == foreign[e] for e in range(3, N_AFC))
    # a label ingest wrote, then replaced by hand: not ingest's any more, kept
    np.save(sub / "judge" / "000001.npy", np.array([0.75], np.float32))
    hand = (sub / "judge" / "000001.npy").read_bytes()
    review2 = generic(tmp_path / "review2.csv", [("A", "a1", 1, "p0", "rejected")], status=True)
    ingest_files([review2], tiny_dataset, partial_labels=True)
    assert (sub / "judge" / "000001.npy").read_bytes() == hand


@pytest.mark.parametrize("field", ["worker", "assignment", "item", "response"])
def test_a_5_mb_value_is_refused_quickly_naming_its_line(tiny_dataset, tmp_path, field):
    long = "W" * 5_000_000
    row = {"worker": "L", "assignment": "a2", "item": f"{AFC}/000001", "response": "p0", field: long}
    lab = tmp_path / "lab.csv"
    lab.write_text(f"worker,assignment,item,response\nA,a1,{AFC}/000000,p1\n" + ",".join(row.values())
                   + f"\nB,b1,{AFC}/000002,p1\n", encoding="utf-8")
    tracemalloc.start()
    t0 = time.process_time()
    try:
        with pytest.raises(IngestError) as err:
            ingest_files([lab], tiny_dataset)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    seconds = time.process_time() - t0
    message = str(err.value)
    assert f"{lab}, line 3: " in message and "'WWWWWWWW" in message and "5,000,000 characters" in message, \
        message[:300]
    if field != "response":
        assert f"the {field} id 'WWWW" in message and "over the limit of 1,000 characters" in message
    assert len(message) < 1000 and seconds < 5
    assert peak < 80e6, peak  # a few copies of the 5 MB file at most
    assert not (tiny_dataset / AFC / "judgments").exists()


def test_a_long_worker_id_in_an_mturk_download_stays_within_memory(tiny_dataset, tmp_path):
    """A 200,000-character WorkerId in a batch of 400 rows: refused with its line, and the memory
    the ingest takes is that of the file, not rows x the longest id (a fixed-width string array
    of 400 x 200,000 characters would be 320 MB)."""
    path = mturk_download(tmp_path / "Batch_77_batch_results.csv", 40,
                          worker_of=lambda a: "A" * 200_000 if a == 17 else f"A{a:03d}WORKER")
    tracemalloc.start()
    try:
        with pytest.raises(IngestError) as err:
            ingest_files([path], tiny_dataset)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(err.value)
    assert f"{path}, line 19: the worker id 'AAAA" in message and len(message) < 1000, message[:300]
    assert peak < 20e6, peak


def test_one_long_id_under_the_limit_takes_memory_by_rows_not_rows_x_width(tiny_dataset, tmp_path):
    """One worker id at the limit (1,000 characters) among 20,000 rows of short ones: accepted,
    and memory stays near the file's size (a fixed-width string array would be rows x 1,000 x 4
    bytes: 80 MB)."""
    rows = [(f"W{k % 20:02d}", f"a{k // N_AFC}", k % N_AFC, "p1" if k % 3 else "p0") for k in range(20_000)]
    rows[5] = ("L" * 1000,) + rows[5][1:]
    lab = generic(tmp_path / "lab.csv", rows)
    tracemalloc.start()
    try:
        summary = ingest_files([lab], tiny_dataset)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary["subsets"][AFC]["rows"]["counted"] > 0
    assert peak < 30e6, (peak, lab.stat().st_size)


# ------------------------------------------------------------------ a real kill, in another process

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
N_ASSIGNMENTS = 2400  # x 10 trials: 24,000 judgments a batch, as in the issue


def batch(tmp_path, n):
    return mturk_download(tmp_path / f"Batch_{n}_batch_results.csv", N_ASSIGNMENTS, first=n * N_ASSIGNMENTS,
                          worker_of=lambda a: f"A{n}{a:05d}WORKER")


KILL_AT = """
import os, sys, time
import judgments.store as store
from judgments.ingest import ingest_files

class Os:
    def __getattr__(self, name):
        return getattr(os, name)
    def replace(self, a, b):
        os.replace(a, b)
        print("renamed", flush=True)
        time.sleep(0.5)
    rename = replace
store.os = Os()
ingest_files(sys.argv[1:-1], sys.argv[-1])
"""


@pytest.mark.parametrize("k", [2, 5])
def test_an_ingest_killed_at_a_rename_of_its_commit_is_completed_by_the_rerun(tiny_dataset, tmp_path, k):
    """SIGKILL after the k-th rename of the commit (the issue: the 2nd-5th left stale labels and
    'ingested before'): its lock, temporaries and half-renamed state are taken over, cleaned and
    completed by the same command run again."""
    import shutil
    import signal

    first = generic(tmp_path / "first.csv", [("A", "a1", e, "p1" if e % 2 else "p0") for e in range(N_AFC)])
    ingest_files([first], tiny_dataset)
    command = [batch(tmp_path, 1), generic(tmp_path / "lab.csv", [("L", "l1", e, "p1") for e in range(0, N_AFC, 2)])]
    reference = tmp_path / "reference"
    shutil.copytree(tiny_dataset, reference)
    ingest_files(command, reference)
    proc = subprocess.Popen([sys.executable, "-c", KILL_AT, *map(str, command), str(tiny_dataset)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(k):
        assert proc.stdout.readline().strip() == "renamed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    sub = tiny_dataset / AFC
    assert [p for p in sub.rglob("*") if p.name.endswith(".partial")]  # what the killed one left
    ingest_files(command, tiny_dataset)  # the same command again
    assert state(tiny_dataset) == state(reference)
    assert not list(tiny_dataset.rglob("*.lock"))


def test_a_study_snapshot_left_by_a_killed_ingest_is_removed(tiny_dataset, tmp_path, monkeypatch):
    """Ingesting a `serve` database reads a snapshot of it in the system's temporary folder; a
    killed ingest leaves it there: the next ingest removes it (a live process's it leaves)."""
    import tempfile

    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        left = system_tmp / f"bapps-study-{dead.pid}-x1y2z3"
        running = system_tmp / f"bapps-study-{alive.pid}-a1b2c3"
        other = system_tmp / "bapps-study-k9_j"  # not named by a pid: not ours to judge
        for folder in (left, running, other):
            folder.mkdir()
            (folder / "study.jsonl").write_text("{}\n")
        ingest_files([generic(tmp_path / "lab.csv", [("A", "a1", 0, "p1")])], tiny_dataset)
        assert not left.exists() and running.exists() and other.exists()
        assert sorted(p.name for p in system_tmp.iterdir()) == sorted([running.name, other.name])
    finally:
        alive.kill()
        alive.wait()


# ------------------------------------------------------------------ two ingests at once (lock: bapps_build.locks)


INGEST_AT = """
import json, sys, time
from judgments.ingest import IngestError, ingest_files
path, root, start, slow = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
if slow:  # hold the lock a while, inside the commit
    import judgments.store as store
    real = store.Transaction.commit
    def commit(self):
        print("committing", flush=True)
        time.sleep(slow)
        real(self)
    store.Transaction.commit = commit
while time.time() < start:
    time.sleep(0.001)
refusals = []
while True:
    try:
        ingest_files([path], root)
        break
    except IngestError as exc:
        if "being written by" not in str(exc):
            raise
        refusals.append(str(exc))
        time.sleep(0.02)
print(json.dumps(refusals))
"""


def counted(dataset):
    with open(Path(dataset) / AFC / "judgments" / "counts.csv", newline="") as f:
        return sum(int(r["n_total"]) for r in csv.DictReader(f))


def test_two_ingests_at_once_lose_nothing(tiny_dataset, tmp_path):
    """Two batches ingested into one subset at the same moment, each retried while refused: all
    48,000 judgments count, and the labels are those of the two ingested one after the other."""
    import shutil

    batches = [batch(tmp_path, 1), batch(tmp_path, 2)]
    reference = tmp_path / "reference"
    shutil.copytree(tiny_dataset, reference)
    for b in batches:
        ingest_files([b], reference)
    assert counted(reference) == 2 * 10 * N_ASSIGNMENTS
    start = time.time() + 1.5
    procs = [subprocess.Popen([sys.executable, "-c", INGEST_AT, str(b), str(tiny_dataset), str(start), "0"],
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for b in batches]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    refusals = [msg for out, _ in outs for msg in json.loads(out.strip().splitlines()[-1])]
    assert all("bapps-build ingest (host" in m and "Nothing was ingested" in m for m in refusals), refusals[:1]
    assert counted(tiny_dataset) == 2 * 10 * N_ASSIGNMENTS
    assert state(tiny_dataset, any_order=True) == state(reference, any_order=True)  # the batches in either order


def test_an_ingest_beside_a_running_ingest_is_refused_naming_it_and_then_runs(tiny_dataset, tmp_path):
    """The first ingest holds the subset (here: inside its commit, for 3 s); the second one refuses
    before writing anything, naming the first's pid; run again afterwards, it counts."""
    first, second = batch(tmp_path, 1), batch(tmp_path, 2)
    holder = subprocess.Popen([sys.executable, "-c", INGEST_AT, str(first), str(tiny_dataset), "0", "3"],
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "committing"
        before = {k: v for k, v in state(tiny_dataset).items()}
        with pytest.raises(IngestError, match=f"pid {holder.pid}.*Nothing was ingested"):
            ingest_files([second], tiny_dataset)
        assert state(tiny_dataset) == before
    finally:
        out, err = holder.communicate(timeout=300)
    assert holder.returncode == 0, err[-2000:]
    ingest_files([second], tiny_dataset)
    assert counted(tiny_dataset) == 2 * 10 * N_ASSIGNMENTS


def test_an_ingest_whose_lock_was_removed_meanwhile_renames_nothing(tiny_dataset, tmp_path, monkeypatch):
    """Someone removes the subset's lock by hand while an ingest stages (and another command may
    have taken it): the ingest stops before its commit, naming the lock; nothing is written."""
    import judgments.ingest as ingest_module
    from bapps_build.locks import lock_path

    lab = generic(tmp_path / "lab.csv", [("A", "a1", e, "p1") for e in range(N_AFC)])
    real = ingest_module.stage_subset

    def stage_and_lose_the_lock(*args, **kwargs):
        lock_path(tiny_dataset / AFC).unlink()
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest_module, "stage_subset", stage_and_lose_the_lock)
    with pytest.raises(IngestError, match=r"was removed or taken by another command.*Nothing was ingested"):
        ingest_files([lab], tiny_dataset)
    monkeypatch.undo()
    sub = tiny_dataset / AFC
    assert not (sub / "judge").exists() and not (sub / "judgments" / "rows.tsv").exists()
    assert not [p for p in sub.rglob("*") if p.name.endswith(".partial")]
    ingest_files([lab], tiny_dataset)
    assert (sub / "judge" / "000011.npy").exists()
