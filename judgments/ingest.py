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

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .catalog import KIND_NAMES, Catalog, CatalogError, Subset, load_catalog
from .qc import DEFAULT_MIN_ACCURACY, QCParams, QCResult, fractions, run_qc
from .readers import RawJudgments, ResultsError, read_results, summarise_problems
from .report import build_report
from .store import (COUNTS, INGESTS, QC, RAW, REPORT, ROWS, Rows, StoreError, Transaction, append_jsonl_text,
                    counts_text, label_bytes, read_counts, read_json, read_rows, rows_text)

# what a response means, per task, in the label's value space (2AFC: 1 = chose p1; JND: 1 = "same")
DIRECT_VALUES = {
    "2afc": {"p0": 0, "p1": 1, "0": 0, "1": 1},
    "jnd": {"same": 1, "different": 0, "1": 1, "0": 0, "yes": 1, "no": 0, "true": 1, "false": 0,
            "s": 1, "d": 0, "diff": 0},
}
SIDES = ("left", "right")


class IngestError(ValueError):
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


def resolve_file(raw: RawJudgments, catalog: Catalog, tag: str, per_subset: Dict[int, Rows],
                 problems: List[str]) -> Dict[str, int]:
    """Append the file's judgments to per_subset's tables; problems get file and line."""
    tasks = [s.task for s in catalog.subsets]
    resolve = catalog.resolve
    unknown = 0
    for k in range(len(raw)):
        item = raw.item[k]
        target = resolve(item)
        if target is None:
            unknown += 1
            if unknown <= 20:
                problems.append(f"{raw.path}, line {raw.line[k]}: item {item!r} is not in this dataset (no task "
                                f"set recorded in it has this id, and it is no <task>/<split>/<subset>/<stem>); "
                                f"ingest with --dataset the dataset these tasks were made from, or --tasks TASKS")
            continue
        task = tasks[target.subset]
        value = response_value(task, raw.response[k], raw.side[k])
        if value is None:
            if raw.response[k].strip().lower() in SIDES:
                problems.append(f"{raw.path}, line {raw.line[k]}: response {raw.response[k]!r} for item {item} "
                                f"needs the side p0 was shown on (left or right), got {raw.side[k]!r}")
            else:
                allowed = "left/right (with the side of p0), p0/p1 or 0/1" if task == "2afc" else "same/different or 1/0"
                problems.append(f"{raw.path}, line {raw.line[k]}: response {raw.response[k]!r} for item {item} "
                                f"is not an answer of a {task} task ({allowed})")
            continue
        rows = per_subset.setdefault(target.subset, Rows())
        rows.worker.append(raw.worker[k])
        rows.assignment.append(raw.assignment[k])
        rows.item.append(item)
        rows.response.append(raw.response[k])
        rows.side.append(raw.side[k])
        rows.value.append(value)
        rows.rejected.append(raw.rejected[k])
        rows.time_ms.append(raw.time_ms[k])
        rows.source.append(tag)
        rows.line.append(raw.line[k])
    if unknown > 20:
        problems.append(f"{raw.path}: ... {unknown - 20} more rows with unknown items")
    return {"unknown": unknown}


def merge(old: Rows, new: Rows) -> Dict[str, int]:
    """Add new judgments to old in place. The same (worker, assignment, item) again: its status
    follows the newer file (a batch downloaded again after approving/rejecting), its answer the
    first one; a different answer is counted as a conflict."""
    index = {key: k for k, key in enumerate(old.keys())}
    stats = {"new": 0, "duplicates": 0, "status_updates": 0, "conflicts": 0}
    n_old = len(old)
    for j, key in enumerate(new.keys()):
        k = index.get(key)
        if k is None:
            index[key] = len(old)
            for name in ("worker", "assignment", "item", "response", "side", "value", "rejected", "time_ms",
                         "source", "line"):
                getattr(old, name).append(getattr(new, name)[j])
            stats["new"] += 1
            continue
        stats["duplicates"] += 1
        if old.value[k] != new.value[j]:
            stats["conflicts"] += 1
        if k < n_old and old.rejected[k] != new.rejected[j]:
            old.rejected[k] = new.rejected[j]
            stats["status_updates"] += 1
    return stats


def resolve_table(sj: SubsetJudgments, catalog: Catalog) -> None:
    targets = [catalog.resolve(i) for i in sj.rows.item]
    missing = [sj.rows.item[k] for k, t in enumerate(targets) if t is None]
    if missing:
        raise StoreError(f"{sj.subset.store / ROWS} holds items this dataset no longer knows (e.g. {missing[0]}): "
                         f"was a task set removed from {sj.subset.store / 'tasks'}? Put it back, or give it "
                         f"with --tasks")
    sj.kind = np.fromiter((t.kind for t in targets), np.int8, len(targets))
    sj.example = np.fromiter((t.example for t in targets), np.int64, len(targets))
    sj.expected = np.fromiter((t.expected for t in targets), np.int8, len(targets))


def qc_table(sj: SubsetJudgments, params: QCParams) -> QCResult:
    workers, worker_code = np.unique(np.asarray(sj.rows.worker, dtype=object).astype(str), return_inverse=True)
    value = np.asarray(sj.rows.value, np.int8)
    rejected = np.asarray(sj.rows.rejected, bool)
    return run_qc(worker_code.reshape(-1), [str(w) for w in workers], sj.kind, value, sj.expected, rejected,
                  np.where(sj.example >= 0, sj.example, 0), len(sj.subset.stems), params)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def qc_params_for(subset: Subset, min_sentinel_accuracy: Optional[float]) -> QCParams:
    """The threshold given, else the one this subset was last ingested with, else the task's default."""
    if min_sentinel_accuracy is not None:
        return QCParams(float(min_sentinel_accuracy))
    recorded = read_json(subset.store / QC)
    if recorded:
        return QCParams(float(recorded["min_sentinel_accuracy"]))
    return QCParams(DEFAULT_MIN_ACCURACY[subset.task])


def ingest_files(paths: Sequence, dataset, tasks: Sequence = (), min_sentinel_accuracy: Optional[float] = None,
                 write_labels: bool = True, partial_labels: bool = False, aggregate: Sequence[str] = (),
                 log: Callable[[str], None] = lambda m: None) -> dict:
    """Ingest results files into a dataset; returns a summary (per subset: the report)."""
    try:
        catalog = load_catalog(dataset, tasks)
    except CatalogError as exc:
        raise IngestError(str(exc)) from None
    problems: List[str] = []
    raws, per_subset, files = [], {}, []
    seen_digest = {}
    for p in paths:
        p = Path(p)
        try:
            raw = read_results(p)
        except ResultsError as exc:
            problems.append(str(exc))
            continue
        digest = file_digest(p)
        tag = f"{digest[:12]}-{p.name}"
        if digest in seen_digest:
            log(f"{p}: the same content as {seen_digest[digest]}; read once")
            continue
        seen_digest[digest] = p
        before = {k: len(v) for k, v in per_subset.items()}
        stats = resolve_file(raw, catalog, tag, per_subset, problems)
        subsets_touched = sorted(k for k, v in per_subset.items() if len(v) > before.get(k, 0))
        files.append({"path": str(p), "sha256": digest, "tag": tag, "platform": raw.platform,
                      "records": raw.records, "judgments": len(raw), "unanswered": raw.unanswered,
                      "rejected_judgments": int(sum(raw.rejected)), "subsets": subsets_touched, **stats})
        raws.append(raw)
    if problems:
        raise IngestError(summarise_problems(problems) if len(problems) > 1 or "problem(s)" not in problems[0]
                          else problems[0])

    results = {}
    txn = Transaction()
    try:
        for k in sorted(set(per_subset) | {key[0] for key in catalog.new_records}):
            subset = catalog.subsets[k]
            store = subset.store
            params = qc_params_for(subset, min_sentinel_accuracy)
            rows = read_rows(store / ROWS)
            new = per_subset.get(k, Rows())
            merge_stats = merge(rows, new)
            sj = SubsetJudgments(subset, rows, stats=merge_stats)
            resolve_table(sj, catalog)
            qc = qc_table(sj, params)
            subset_files = [f for f in files if k in f["subsets"]]
            report = build_report(sj, qc, params, subset_files)
            changed = stage_subset(txn, sj, qc, params, report, subset_files, catalog, k, write_labels, partial_labels,
                                   log)
            if aggregate:
                from .aggregate import aggregate_subset

                for model in aggregate:
                    txn.write(store / f"aggregate-{model}.csv", aggregate_subset(sj, qc, model))
            report["changed"] = changed
            results[subset.rel] = report
        txn.commit()
    except BaseException:
        txn.abort()
        raise
    return {"files": files, "rows_read": sum(len(r) for r in raws), "subsets": results}


def stage_subset(txn: Transaction, sj: SubsetJudgments, qc: QCResult, params: QCParams, report: dict,
                 files: List[dict], catalog: Catalog, k: int, write_labels: bool, partial_labels: bool, log) -> bool:
    """Stage what changed for one subset; returns whether anything did."""
    subset, store = sj.subset, sj.subset.store
    changed = False
    new_rows = sj.stats["new"] or sj.stats["status_updates"]
    if new_rows or not (store / ROWS).exists():
        txn.write(store / ROWS, rows_text(sj.rows))
        changed = True
    for f in files:
        target = store / RAW / f["tag"]
        if not target.exists():
            txn.copy(Path(f["path"]), target)
            changed = True
    for (kk, name), record in catalog.new_records.items():
        if kk == k and not (store / "tasks" / f"{name}.json").exists():
            txn.write(store / "tasks" / f"{name}.json", json.dumps(record, indent=2) + "\n")
            changed = True
    positive = "n_p1" if subset.task == "2afc" else "n_same"
    counts = counts_text(subset.stems, qc.n_pos, qc.n_total, positive)
    old_counts_path = store / COUNTS
    old_counts = old_counts_path.read_text(encoding="utf-8") if old_counts_path.exists() else None
    if counts != old_counts:
        txn.write(old_counts_path, counts)
        changed = True
    qc_text = json.dumps(params.to_dict(), indent=2) + "\n"
    if not (store / QC).exists() or (store / QC).read_text(encoding="utf-8") != qc_text:
        txn.write(store / QC, qc_text)
        changed = True
    if write_labels:
        labels = stage_labels(txn, subset, qc, partial_labels, log)
        report["labels"] = labels
        changed = changed or labels["written"] > 0 or labels["removed"] > 0
    report_text = json.dumps(report, indent=2) + "\n"
    if changed or not (store / REPORT).exists():
        txn.write(store / REPORT, report_text)
    if changed:
        txn.write(store / INGESTS, append_jsonl_text(store / INGESTS, {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "qc": params.to_dict(),
            "files": [{key: f[key] for key in ("path", "sha256", "platform", "records", "judgments")} for f in files],
            **sj.stats}))
    return changed


def stage_labels(txn: Transaction, subset: Subset, qc: QCResult, partial: bool, log) -> dict:
    """Labels for every example once each has a judgment; before that none are touched (the loader
    pairs files by position, so a judge/ folder with gaps would mislabel everything after the
    first gap), unless `partial` asks for the judged ones anyway."""
    folder = subset.path / subset.label_folder
    judged = qc.n_total > 0
    n, n_judged = len(subset.stems), int(judged.sum())
    info = {"folder": str(folder), "examples": n, "judged": n_judged, "written": 0, "removed": 0, "complete": False}
    if n_judged < n and not partial:
        info["skipped_because"] = (f"{n - n_judged} of {n} examples have no judgment yet; labels are written "
                                   f"once every example has one (or with --partial-labels)")
        log(f"{subset.rel}: {info['skipped_because']}")
        return info
    present = {name for name in (os.listdir(folder) if folder.is_dir() else ())}
    frac = fractions(qc.n_pos, qc.n_total)
    for stem, is_judged, value in zip(subset.stems, judged.tolist(), frac.tolist()):
        name = f"{stem}.npy"
        path = folder / name
        if not is_judged:
            if name in present:
                txn.remove(path)
                info["removed"] += 1
            continue
        data = label_bytes(value)
        if name in present and path.read_bytes() == data:
            continue
        txn.write(path, data)
        info["written"] += 1
    info["complete"] = n_judged == n
    return info
