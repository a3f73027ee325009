"""`bapps-build ingest`: results files in, BAPPS labels out, all or nothing.

1. Read every file (readers.py) and resolve every row against the dataset (catalog.py): an
   unknown item, a response that means nothing for the task, a malformed row is a problem
   with its file and line. Any problem: nothing is written.
2. Merge with what the subset already holds (store.py, rows.tsv): a judgment is one
   (worker, assignment, item); the same again is a duplicate and counts once, so ingesting a
   file twice changes nothing, and a later download of the same batch only updates statuses
   (an assignment rejected since is then dropped).
3. Quality control over the whole table (qc.py), counts, fractions, report.
4. Stage every file under a temporary name, then rename them all into place.
"""
from __future__ import annotations

import gc
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from bapps_build.errors import UserError

from .catalog import Catalog, CatalogError, Subset, load_catalog
from .qc import (DEFAULT_MIN_ACCURACY, DEFAULT_TIMING_TOLERANCE_MS, JND_PROTOCOL_MS, QCParams, QCResult, fractions,
                 run_qc)
from .readers import RawJudgments, ResultsError, read_results, shorten, summarise_problems
from .report import build_report
from .store import (COUNTS, INGESTS, LABEL_HEADER, QC, RAW, REPORT, ROWS, Rows, StoreError, Transaction,
                    append_jsonl_text, counts_text, label_bytes, read_counts, read_json, read_rows,
                    pid_alive, remove_stale_temps, rows_text)

# what a response means, per task, in the label's value space (2AFC: 1 = chose p1; JND: 1 = "same")
DIRECT_VALUES = {
    "2afc": {"p0": 0, "p1": 1, "0": 0, "1": 1},
    "jnd": {"same": 1, "different": 0, "1": 1, "0": 0, "yes": 1, "no": 0, "true": 1, "false": 0,
            "s": 1, "d": 0, "diff": 0},
}
SIDES = ("left", "right")


class IngestError(UserError, ValueError):
    """The ingest stopped before writing anything; the message lists the problems."""


@dataclass
class SubsetJudgments:
    """The merged table of one subset and what resolving its items gave."""

    subset: Subset
    rows: Rows
    kind: np.ndarray = None
    example: np.ndarray = None
    expected: np.ndarray = None
    stats: Dict[str, int] = field(default_factory=dict)


def response_value(task: str, response: str, side: str) -> Optional[int]:
    """0/1 in label space, or None when the response means nothing for the task."""
    r = response.strip().lower()
    v = DIRECT_VALUES[task].get(r)
    if v is not None or task != "2afc" or r not in SIDES:
        return v
    s = side.strip().lower()
    if s not in SIDES:
        return None
    return 0 if r == s else 1  # the side chosen is where p0 was: p0 preferred


COLUMNS = ("worker", "assignment", "item", "response", "side", "value", "rejected", "time_ms", "source", "line",
           "submitted", "status_time", "status_rank", "timing")


def resolve_file(raw: RawJudgments, catalog: Catalog, tag: str, per_subset: Dict[int, Rows],
                 problems: List[str]) -> Dict[str, int]:
    """Append the file's judgments to per_subset's tables; problems get file and line.

    Work is done per distinct item and per distinct (response, side), then spread to the rows:
    a million rows hold some ten thousand items and a handful of answers."""
    targets = {item: catalog.resolve(item) for item in set(raw.item)}
    unknown = unknown_items(raw, targets, catalog, problems)
    if unknown:
        return {"unknown": unknown}
    for subset, rows_of in rows_by_subset(raw, {item: t.subset for item, t in targets.items()}).items():
        pick = (lambda col: col) if rows_of is None else (lambda col: [col[k] for k in rows_of])  # noqa: E731
        task = catalog.subsets[subset].task
        response, side = pick(raw.response), pick(raw.side)
        if task == "2afc" and catalog.sides:
            side = sides_from_record(raw, pick(raw.item), side, pick(raw.line), catalog.sides, problems)
            if side is None:
                continue
        value = response_values(raw, task, response, side, pick, problems)
        if value is None:
            continue
        timing = phase_timings(raw, task, pick, problems)
        if timing is None:
            continue
        rows = per_subset.setdefault(subset, Rows())
        for name, column in (("response", response), ("side", side), ("value", value), ("timing", timing),
                             ("source", [tag] * len(value))):
            getattr(rows, name).extend(column)
        for name in ("worker", "assignment", "item", "rejected", "time_ms", "line", "submitted", "status_time",
                     "status_rank"):
            getattr(rows, name).extend(pick(getattr(raw, name)))
    return {"unknown": 0}


def unknown_items(raw: RawJudgments, targets: dict, catalog: Catalog, problems: List[str]) -> int:
    """How many rows name an item the dataset does not know; the first 20 become problems."""
    if all(t is not None for t in targets.values()):
        return 0
    unknown = [k for k, item in enumerate(raw.item) if targets[item] is None]
    for k in unknown[:20]:
        problems.append(f"{raw.path}, line {raw.line[k]}: {unknown_item_reason(raw.item[k], catalog)}")
    if len(unknown) > 20:
        problems.append(f"{raw.path}: ... and {len(unknown) - 20} more rows with unknown items")
    return len(unknown)


def rows_by_subset(raw: RawJudgments, subset_of: Dict[str, int]) -> Dict[int, Optional[List[int]]]:
    """The file's rows of each subset; None for every row when the file holds one subset only."""
    if len(set(subset_of.values())) == 1:
        return {next(iter(subset_of.values())): None}  # every row: no index lists needed
    groups: Dict[int, List[int]] = {}
    for k, item in enumerate(raw.item):
        groups.setdefault(subset_of[item], []).append(k)
    return groups


def response_values(raw: RawJudgments, task: str, response: List[str], side: List[str], pick,
                    problems: List[str]) -> Optional[List[int]]:
    """The label value of each row; None (and problems) when some response means nothing."""
    meaning = {pair: response_value(task, *pair) for pair in set(zip(response, side))}
    value = list(map(meaning.__getitem__, zip(response, side)))
    bad = [k for k, v in enumerate(value) if v is None]
    if not bad:
        return value
    lines, items = pick(raw.line), pick(raw.item)
    for k in bad[:20]:
        r = response[k]
        if r.strip().lower() in SIDES:
            problems.append(f"{raw.path}, line {lines[k]}: response {shorten(r)} for item "
                            f"{shorten(items[k])} needs the side p0 was shown on (left or right), got "
                            f"{shorten(side[k])}")
        else:
            allowed = "left/right (with the side of p0), p0/p1 or 0/1" if task == "2afc" else "same/different or 1/0"
            problems.append(f"{raw.path}, line {lines[k]}: response {shorten(r)} for item "
                            f"{shorten(items[k])} is not an answer of a {task} task ({allowed})")
    return None


def phase_timings(raw: RawJudgments, task: str, pick, problems: List[str]) -> Optional[List[str]]:
    """The JND page's phase timings of each row (2AFC: empty, only JND pages measure them); None
    (and problems) when some timing is not the page's measurement."""
    timing = pick(raw.timing)
    if task == "2afc":
        return [""] * len(timing)
    if task != "jnd":
        return timing
    broken = []
    for t in set(timing):
        try:
            timing_deviation(t)
        except ValueError:
            broken.append(t)
    if not broken:
        return timing
    lines = pick(raw.line)
    for k in [k for k, t in enumerate(timing) if t in set(broken)][:20]:
        problems.append(f"{raw.path}, line {lines[k]}: timing {timing[k][:60]!r} is not the page's "
                        f"measurement (three durations in ms: first patch, blank, second patch, "
                        f"e.g. 1003,250,998)")
    return None


def sides_from_record(raw: RawJudgments, items: List[str], side: List[str], lines: List[int],
                      recorded: Dict[str, str], problems: List[str]) -> Optional[List[str]]:
    """The side p0 was shown on: the task record's (tasks.json), the one truth. A file that gives
    no side gets it; a file that gives another one is a problem (results of another task set?)."""
    wrong = {(i, s) for i, s in set(zip(items, side))
             if s and i in recorded and s.strip().lower() != recorded[i]}
    if wrong:
        for k in [k for k, pair in enumerate(zip(items, side)) if pair in wrong][:20]:
            problems.append(f"{raw.path}, line {lines[k]}: item {items[k]} was shown with p0 on the "
                            f"{recorded[items[k]]} (its task record, tasks.json), the file says {side[k]!r}: "
                            f"are these the results of another task set?")
        return None
    if any(not s for s in side):
        side = [s or recorded.get(i, "") for i, s in zip(items, side)]
    return side


def unknown_item_reason(item: str, catalog: Catalog) -> str:
    rel, _, stem = item.rpartition("/")
    if rel and rel in catalog.by_rel:
        n = len(catalog.subsets[catalog.by_rel[rel]].stems)
        return f"item {shorten(item)}: {shorten(rel)} has no example {shorten(stem)} ({n} examples)"
    if rel.count("/") == 2:
        return (f"item {shorten(item)}: this dataset has no subset {shorten(rel)} (it has "
                f"{', '.join(catalog.by_rel)}); is --dataset the right one?")
    return (f"item {shorten(item)} is not in this dataset: no task set recorded in it has this id; ingest with "
            f"--dataset the dataset these tasks were made from, or give --tasks TASKS")


def merge(old: Rows, new: Rows) -> Dict[str, int]:
    """Add new judgments to old in place. The same (worker, assignment, item) again is a duplicate:
    its answer stays the first one (a different answer is counted as a conflict), its status is
    the greater (status_rank, status_time, rejected) of the two (readers.py: the platform's latest
    decision, by the export's own times), so several downloads of one batch give the same table
    in one command or in several, in any order."""
    n_old = len(old)
    index = dict(zip(zip(old.worker, old.assignment, old.item), range(n_old)))
    stats = {"new": 0, "duplicates": 0, "status_updates": 0, "statuses_refreshed": 0, "conflicts": 0}
    fresh: List[int] = []  # rows of `new` that are new judgments
    for j, key in enumerate(zip(new.worker, new.assignment, new.item)):
        k = index.get(key)
        if k is None:
            index[key] = n_old + len(fresh)
            fresh.append(j)
            continue
        stats["duplicates"] += 1
        table, r = (old, k) if k < n_old else (new, fresh[k - n_old])
        if table.value[r] != new.value[j]:
            stats["conflicts"] += 1
        if (new.status_rank[j], new.status_time[j], new.rejected[j]) > \
                (table.status_rank[r], table.status_time[r], table.rejected[r]):
            if table.rejected[r] != new.rejected[j]:
                stats["status_updates"] += 1
            elif k < n_old:
                stats["statuses_refreshed"] += 1
            table.rejected[r], table.status_rank[r] = new.rejected[j], new.status_rank[j]
            table.status_time[r] = new.status_time[j]
        if not table.submitted[r] and new.submitted[j]:
            table.submitted[r] = new.submitted[j]
            stats["statuses_refreshed"] += k < n_old
        if not table.timing[r] and new.timing[j]:
            table.timing[r] = new.timing[j]
            stats["statuses_refreshed"] += k < n_old
    stats["new"] = len(fresh)
    everything = len(fresh) == len(new)
    for name in COLUMNS:
        column = getattr(new, name)
        getattr(old, name).extend(column if everything else [column[j] for j in fresh])
    return stats


def resolve_table(sj: SubsetJudgments, catalog: Catalog) -> None:
    targets = {item: catalog.resolve(item) for item in set(sj.rows.item)}
    missing = [item for item, t in targets.items() if t is None]
    if missing:
        raise StoreError(f"{sj.subset.store / ROWS} holds items this dataset no longer knows (e.g. {missing[0]}): "
                         f"was a task set removed from {sj.subset.store / 'tasks'}? Put it back, or give it "
                         f"with --tasks")
    codes = {item: k for k, item in enumerate(targets)}
    table = list(targets.values())
    row_code = np.fromiter(map(codes.__getitem__, sj.rows.item), np.int64, len(sj.rows.item))
    sj.kind = np.array([t.kind for t in table], np.int8)[row_code]
    sj.example = np.array([t.example for t in table], np.int64)[row_code]
    sj.expected = np.array([t.expected for t in table], np.int8)[row_code]


def timing_deviation(text: str) -> Optional[float]:
    """The largest |measured - protocol| of a JND trial's three phases in ms; None without a
    measurement; ValueError when the text is not three numbers."""
    if not text:
        return None
    parts = text.replace(";", ",").split(",")
    if len(parts) != 3:
        raise ValueError(text)
    return max(abs(float(x) - want) for x, want in zip(parts, JND_PROTOCOL_MS))


def off_protocol(rows: Rows, task: str, tolerance_ms: float) -> Tuple[Optional[np.ndarray], int]:
    """Per row, whether its JND timing was off the protocol by more than the tolerance; and how
    many rows carry no timing at all (2AFC: (None, 0))."""
    if task != "jnd":
        return None, 0
    deviation = {t: timing_deviation(t) for t in set(rows.timing)}
    untimed = sum(1 for t in rows.timing if not t)
    bad = {t for t, d in deviation.items() if d is not None and d > tolerance_ms}
    if not bad:
        return None, untimed
    return np.fromiter((t in bad for t in rows.timing), bool, len(rows.timing)), untimed


def qc_table(sj: SubsetJudgments, params: QCParams) -> QCResult:
    # worker codes by a dict, in sorted order: a numpy string array would be rows x the longest id wide
    workers = sorted(set(sj.rows.worker))
    code_of = {w: k for k, w in enumerate(workers)}
    worker_code = np.fromiter(map(code_of.__getitem__, sj.rows.worker), np.int64, len(sj.rows.worker))
    value = np.asarray(sj.rows.value, np.int8)
    rejected = np.asarray(sj.rows.rejected, bool)
    timed_out, untimed = off_protocol(sj.rows, sj.subset.task, params.timing_tolerance_ms)
    sj.stats["untimed"] = untimed

    def latest(rows_at):
        """For these rows, their order by (submit time, assignment id): greater is later."""
        keys = [(sj.rows.submitted[k], sj.rows.assignment[k]) for k in rows_at.tolist()]
        rank = {key: r for r, key in enumerate(sorted(set(keys)))}
        return np.array([rank[key] for key in keys], np.int64)

    qc = run_qc(worker_code.reshape(-1), [str(w) for w in workers], sj.kind, value, sj.expected, rejected,
                np.where(sj.example >= 0, sj.example, 0), len(sj.subset.stems), params, timed_out, latest)
    return qc


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def already_ingested(catalog: Catalog) -> Dict[str, set]:
    """sha256[:12] of every results file copied into some subset's judgments/raw/ -> those subsets."""
    out: Dict[str, set] = {}
    for k, subset in enumerate(catalog.subsets):
        folder = subset.store / RAW
        if folder.is_dir():
            for name in os.listdir(folder):
                if not name.startswith("."):
                    out.setdefault(name[:12], set()).add(k)
    return out


def marks_complete(catalog: Catalog, digest: str, marked: set) -> bool:
    """Whether a file has its raw/ copy in every subset it gave judgments to: the subsets its
    ingest recorded in ingests.jsonl (committed before the copies). A crash between the copies
    of a file that spans subsets leaves some without one: the file is then read again (its
    judgments are duplicates) and the missing copies are made."""
    wanted = set()
    for k in marked:
        path = catalog.subsets[k].store / INGESTS
        if not path.exists():
            continue
        with open(path, encoding="utf-8") as f:
            for line in f:
                if digest not in line:
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                for entry in record.get("files", ()):
                    if entry.get("sha256") == digest:
                        wanted.update(entry.get("subsets", ()))
    return all(catalog.by_rel[rel] in marked for rel in wanted if rel in catalog.by_rel)


def qc_params_for(subset: Subset, min_sentinel_accuracy: Optional[float], count_repeats: Optional[bool] = None,
                  timing_tolerance_ms: Optional[float] = None) -> QCParams:
    """Each parameter as given, else as this subset was last ingested with, else the default."""
    recorded = read_json(subset.store / QC) or {}
    if min_sentinel_accuracy is None:
        min_sentinel_accuracy = recorded.get("min_sentinel_accuracy", DEFAULT_MIN_ACCURACY[subset.task])
    if count_repeats is None:
        count_repeats = recorded.get("count_repeats", False)
    if timing_tolerance_ms is None:
        timing_tolerance_ms = recorded.get("timing_tolerance_ms", DEFAULT_TIMING_TOLERANCE_MS)
    return QCParams(float(min_sentinel_accuracy), bool(count_repeats), float(timing_tolerance_ms))


def ingest_files(paths: Sequence, dataset, tasks: Sequence = (), min_sentinel_accuracy: Optional[float] = None,
                 write_labels: bool = True, partial_labels: bool = False, aggregate: Sequence[str] = (),
                 log: Callable[[str], None] = lambda m: None, count_repeats: Optional[bool] = None,
                 timing_tolerance_ms: Optional[float] = None) -> dict:
    """Ingest results files into a dataset; returns a summary (per subset: the report).
    min_sentinel_accuracy, count_repeats, timing_tolerance_ms: None keeps what the subset was
    last ingested with (qc.json), else the default (one vote per worker, 50 ms)."""
    if timing_tolerance_ms is not None and not timing_tolerance_ms >= 0:
        raise IngestError(f"timing tolerance {timing_tolerance_ms}: give 0 ms or more")
    qc_options = (min_sentinel_accuracy, count_repeats, timing_tolerance_ms)
    # Millions of small lists and strings, none of them in reference cycles: the cyclic garbage
    # collector would walk them again and again (a third of the time on a million rows).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        remove_stale_scratch()
        with tempfile.TemporaryDirectory(prefix=f"bapps-study-{os.getpid()}-") as scratch:
            paths, tasks = study_snapshots(paths, tasks, scratch)
            return _ingest(paths, dataset, tasks, qc_options, write_labels, partial_labels, aggregate, log)
    finally:
        if was_enabled:
            gc.enable()


def remove_stale_scratch() -> int:
    """Remove the scratch folders (a study database's snapshot) that killed ingests of this user
    left in the system's temporary folder: `bapps-study-<pid>-*` of a process that is gone."""
    n = 0
    try:
        entries = list(os.scandir(tempfile.gettempdir()))
    except OSError:
        return 0
    for e in entries:
        if not e.name.startswith("bapps-study-"):
            continue
        pid = e.name[len("bapps-study-"):].partition("-")[0]
        try:
            if (pid.isdigit() and int(pid) != os.getpid() and e.is_dir(follow_symlinks=False)
                    and e.stat(follow_symlinks=False).st_uid == os.getuid() and not pid_alive(int(pid))):
                shutil.rmtree(e.path, ignore_errors=True)
                n += 1
        except OSError:
            continue
    return n


def study_snapshots(paths, tasks, scratch):
    """A `bapps-build serve` database is read as the generic JSON Lines of all its answers (plus
    its task set): the same reader, checks and merge as any results file; answers already
    ingested are duplicates, so a study ingested again adds only what is new."""
    from .serve.db import is_study_db, snapshot_jsonl

    out_paths, out_tasks = [], list(tasks)
    for k, p in enumerate(paths):
        if is_study_db(p):
            folder = Path(scratch) / str(k)
            folder.mkdir()
            results, record = snapshot_jsonl(p, folder)
            out_paths.append(results)
            out_tasks.append(record)
        else:
            out_paths.append(p)
    return out_paths, out_tasks


@dataclass
class FilesRead:
    """What reading the results files of one ingest gave."""

    per_subset: Dict[int, Rows] = field(default_factory=dict)  # the new judgments of each subset
    files: List[dict] = field(default_factory=list)  # one entry per file read (ingests.jsonl)
    skipped_subsets: set = field(default_factory=set)  # subsets of files ingested before, not read again
    rows_read: int = 0


def read_files(paths, catalog: Catalog, log) -> FilesRead:
    """Read and resolve every file (a file read before, or twice, is skipped); IngestError listing
    every problem of every file, before anything is written."""
    problems: List[str] = []
    read = FilesRead()
    seen_digest = {}
    already = already_ingested(catalog)
    for p in paths:
        p = Path(p)
        if not p.is_file():
            problems.append(f"{p}: no such file")
            continue
        digest = file_digest(p)
        if digest in seen_digest:
            log(f"{p}: the same content as {seen_digest[digest]}; read once")
            continue
        seen_digest[digest] = p
        if digest[:12] in already and marks_complete(catalog, digest, already[digest[:12]]):
            # its judgments are in rows.tsv already: reading it again adds nothing
            log(f"{p}: ingested before (a copy is in judgments/raw/); skipped")
            read.skipped_subsets |= already[digest[:12]]
            continue
        try:
            raw = read_results(p)
        except ResultsError as exc:
            problems.append(str(exc))
            continue
        tag = f"{digest[:12]}-{p.name}"
        before = {k: len(v) for k, v in read.per_subset.items()}
        stats = resolve_file(raw, catalog, tag, read.per_subset, problems)
        subsets_touched = sorted(k for k, v in read.per_subset.items() if len(v) > before.get(k, 0))
        read.files.append({"path": str(p), "sha256": digest, "tag": tag, "platform": raw.platform,
                           "records": raw.records, "judgments": len(raw), "unanswered": raw.unanswered,
                           "rejected_judgments": int(sum(raw.rejected)), "subsets": subsets_touched, **stats})
        read.rows_read += len(raw)
    if problems:
        raise IngestError(summarise_problems(problems) if len(problems) > 1 or "problem(s)" not in problems[0]
                          else problems[0])
    return read


def subsets_to_process(catalog: Catalog, read: FilesRead, qc_options) -> set:
    """Subsets with new judgments or task records, and skipped ones whose QC parameters changed."""
    to_process = set(read.per_subset) | {key[0] for key in catalog.new_records}
    for k in read.skipped_subsets - to_process:
        subset = catalog.subsets[k]
        if qc_params_for(subset, *qc_options) != qc_params_for(subset, None):
            to_process.add(k)  # same judgments, another threshold: recompute
    return to_process


def judge(subset: Subset, rows: Rows, catalog: Catalog, params: QCParams,
          stats: Optional[Dict[str, int]] = None) -> Tuple[SubsetJudgments, QCResult]:
    """A subset's whole table resolved against the dataset, and its quality control."""
    sj = SubsetJudgments(subset, rows, stats=dict(stats or {}))
    resolve_table(sj, catalog)
    return sj, qc_table(sj, params)


def _ingest(paths, dataset, tasks, qc_options, write_labels, partial_labels, aggregate, log) -> dict:
    try:
        catalog = load_catalog(dataset, tasks)
    except CatalogError as exc:
        raise IngestError(str(exc)) from None
    read = read_files(paths, catalog, log)
    to_process = subsets_to_process(catalog, read, qc_options)
    results = {}
    locks = _lock_subsets([catalog.subsets[k].path for k in to_process])  # one writer per subset
    txn = Transaction()
    try:
        for k in sorted(to_process):  # under the lock, before staging: no live writer's temporaries here
            subset = catalog.subsets[k]
            labels = subset.path / subset.label_folder
            stale = remove_stale_temps([subset.store, subset.store / RAW, subset.store / "tasks", labels], [labels])
            if stale:
                log(f"{subset.rel}: removed {stale} temporary file(s) a killed ingest left behind")
        for k in sorted(read.skipped_subsets - to_process):
            results[catalog.subsets[k].rel] = {"subset": catalog.subsets[k].rel, "changed": False, "skipped": True}
        for k in sorted(to_process):
            results[catalog.subsets[k].rel] = ingest_subset(txn, catalog, k, read, qc_options, write_labels,
                                                            partial_labels, aggregate, log)
        locks.check()
        txn.commit()
    except BaseException:
        txn.abort()
        raise
    finally:
        locks.close()
    return {"files": read.files, "rows_read": read.rows_read, "subsets": results}


def ingest_subset(txn: Transaction, catalog: Catalog, k: int, read: FilesRead, qc_options, write_labels: bool,
                  partial_labels: bool, aggregate: Sequence[str], log) -> dict:
    """Merge, QC and stage one subset (nothing renamed yet); returns its report."""
    subset = catalog.subsets[k]
    params = qc_params_for(subset, *qc_options)
    rows = read_rows(subset.store / ROWS)
    merge_stats = merge(rows, read.per_subset.get(k, Rows()))
    sj, qc = judge(subset, rows, catalog, params, merge_stats)
    subset_files = [f for f in read.files if k in f["subsets"]]
    report = build_report(sj, qc, params, subset_files)
    changed = stage_subset(txn, sj, qc, params, report, subset_files, catalog, k, write_labels, partial_labels, log)
    if aggregate:
        from .aggregate import aggregate_subset

        for model in aggregate:
            txn.write(subset.store / f"aggregate-{model}.csv", aggregate_subset(sj, qc, model))
    report["changed"] = changed
    return report


def report_dataset(root, subset_name=None) -> List[dict]:
    """Reports recomputed from what each subset stores, as its last ingest made them (nothing is
    written): `bapps-build judgments report`."""
    catalog = load_catalog(root)
    out = []
    for subset in catalog.subsets:
        if subset_name and subset.rel != subset_name:
            continue
        path = subset.store / ROWS
        if not path.exists():
            continue
        params = qc_params_for(subset, None)
        sj, qc = judge(subset, read_rows(path), catalog, params)
        out.append(build_report(sj, qc, params, []))
    return out


class _SubsetLocks:
    """The locks of the subsets an ingest writes (bapps_build.locks), taken in sorted order, all
    or none; check() before the commit: a lock removed by hand (and maybe taken by another
    command) meanwhile stops the ingest before it renames anything."""

    def __init__(self, folders):
        from contextlib import ExitStack

        from bapps_build.locks import FolderLock

        self.stack, self.held = ExitStack(), []
        try:
            for folder in sorted({str(Path(f).absolute()) for f in folders}):
                self.held.append(self.stack.enter_context(FolderLock(folder, "bapps-build ingest")))
        except RuntimeError as exc:
            self.stack.close()
            raise IngestError(f"{exc} Nothing was ingested.") from None
        except BaseException:
            self.stack.close()
            raise

    def check(self) -> None:
        for lock in self.held:
            try:
                lock.check()
            except RuntimeError as exc:
                raise IngestError(f"{exc} Nothing was ingested.") from None

    def close(self) -> None:
        self.stack.close()


def _lock_subsets(folders) -> _SubsetLocks:
    return _SubsetLocks(folders)


def stage_subset(txn: Transaction, sj: SubsetJudgments, qc: QCResult, params: QCParams, report: dict,
                 files: List[dict], catalog: Catalog, k: int, write_labels: bool, partial_labels: bool, log) -> bool:
    """Stage what changed for one subset; returns whether anything did."""
    subset, store = sj.subset, sj.subset.store
    changed = False
    # Commit order (store.Transaction.commit): task records, table and labels; then counts.csv,
    # qc.json, the report and the log; the raw/ copies, the "ingested" marks, last of all.
    for (kk, name), record in catalog.new_records.items():
        if kk == k and not (store / "tasks" / f"{name}.json").exists():
            txn.write(store / "tasks" / f"{name}.json", json.dumps(record, indent=2) + "\n")
            changed = True
    new_rows = sj.stats["new"] or sj.stats["status_updates"] or sj.stats.get("statuses_refreshed")
    if new_rows or not (store / ROWS).exists():
        txn.write(store / ROWS, rows_text(sj.rows))
        changed = True
    for f in files:
        target = store / RAW / f["tag"]
        if not target.exists():
            txn.copy(Path(f["path"]), target, mark=True)
            changed = True
    positive = "n_p1" if subset.task == "2afc" else "n_same"
    counts = counts_text(subset.stems, qc.n_pos, qc.n_total, positive)
    old_counts_path = store / COUNTS
    old_counts = old_counts_path.read_text(encoding="utf-8") if old_counts_path.exists() else None
    if counts != old_counts:  # what the labels reflect: renamed once they are in place
        txn.write(old_counts_path, counts, after_labels=True)
        changed = True
    qc_text = json.dumps(params.to_dict(), indent=2) + "\n"
    if not (store / QC).exists() or (store / QC).read_text(encoding="utf-8") != qc_text:
        txn.write(store / QC, qc_text, after_labels=True)  # the parameters the counts were made with
        changed = True
    if write_labels:
        labels = stage_labels(txn, subset, qc, partial_labels, log, read_counts(old_counts_path))
        report["labels"] = labels
        changed = changed or labels["written"] > 0 or labels["removed"] > 0
    report_text = json.dumps(report, indent=2) + "\n"
    if changed or not (store / REPORT).exists():
        txn.write(store / REPORT, report_text, after_labels=True)
    if changed:
        txn.write(store / INGESTS, after_labels=True, data=append_jsonl_text(store / INGESTS, {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "qc": params.to_dict(),
            "files": [{**{key: f[key] for key in ("path", "sha256", "platform", "records", "judgments")},
                       "subsets": [catalog.subsets[kk].rel for kk in f["subsets"]]} for f in files],
            **sj.stats}))
    return changed


def stage_labels(txn: Transaction, subset: Subset, qc: QCResult, partial: bool, log,
                 old_counts: Optional[Dict[str, tuple]] = None) -> dict:
    """Labels for every example once each has a judgment; before that none are touched (the loader
    pairs files by position, so a judge/ folder with gaps would mislabel everything after the
    first gap), unless `partial` asks for the judged ones anyway. A label whose counts did not
    change since the last ingest and whose file exists is left alone. A label of an example that
    has no counted judgment (any more) is removed only when ingest wrote it: counts.csv gave it
    judgments and the file holds exactly that fraction; any other file there (labels from
    elsewhere, a copy of BAPPS's) is kept and counted in info["kept_foreign"]."""
    folder = subset.path / subset.label_folder
    judged = qc.n_total > 0
    n, n_judged = len(subset.stems), int(judged.sum())
    info = {"folder": str(folder), "examples": n, "judged": n_judged, "written": 0, "removed": 0, "complete": False,
            "kept_foreign": 0}
    if n_judged < n and not partial:
        info["skipped_because"] = (f"{n - n_judged} of {n} examples have no judgment yet; labels are written "
                                   f"once every example has one (or with --partial-labels)")
        log(f"{subset.rel}: {info['skipped_because']}")
        return info
    present = set(os.listdir(folder)) if folder.is_dir() else set()
    old_counts = old_counts or {}
    frac = fractions(qc.n_pos, qc.n_total)
    writes = []
    for stem, is_judged, value, n_pos, n_total in zip(subset.stems, judged.tolist(), frac.tolist(),
                                                      qc.n_pos.tolist(), qc.n_total.tolist()):
        name = f"{stem}.npy"
        if not is_judged:
            if name in present:
                if written_by_ingest(folder / name, old_counts.get(stem)):
                    txn.remove(folder / name)
                    info["removed"] += 1
                else:
                    info["kept_foreign"] += 1
            continue
        if name in present and old_counts.get(stem) == (n_pos, n_total):
            continue
        writes.append((name, label_bytes(value)))
    if folder.exists():
        txn.write_many(folder, writes)
    else:
        txn.write_folder(folder, writes)
    info["written"] = len(writes)
    info["complete"] = n_judged == n
    if info["kept_foreign"]:
        log(f"{subset.rel}: kept {info['kept_foreign']} label(s) in {folder} of examples without a counted "
            f"judgment that ingest did not write")
    return info


def written_by_ingest(path: Path, counts: Optional[tuple]) -> bool:
    """Whether a label file is one ingest wrote: counts.csv gave its example (n_pos, n_total)
    with n_total > 0, and the file holds exactly that fraction, byte for byte."""
    if not counts or counts[1] <= 0:
        return False
    try:
        with open(path, "rb") as f:
            data = f.read(len(LABEL_HEADER) + 5)
    except OSError:
        return False
    return data == label_bytes(counts[0] / counts[1])
