"""What a subset keeps of its judgments, and how it is written all or nothing.

    <subset>/judgments/
        rows.tsv        every distinct judgment ever ingested (the source of truth): worker,
                        assignment, item, response, side, value (1 = p1 / "same"), rejected,
                        time_ms, source file, line, submitted, status_time, status_rank
                        (readers.py: which download's status wins), timing (JND phases, ms)
        raw/            a byte copy of every results file ingested, named <sha256[:12]>-<name>
        counts.csv      per example: stem, n_p1 (JND: n_same), n_total, fraction
        ingests.jsonl   one line per ingest that changed something: files, counts, parameters
        qc.json         the quality-control parameters in force (a later ingest keeps them)
        report.json     the last report
        tasks/<name>.json   the task sets made for this subset
    <subset>/judge/NNNNNN.npy (JND: same/)   float32, shape (1,): the fraction, from counts.csv

Every file is first written under a hidden temporary name (no image or .npy extension, so
the LPIPS loader never sees it), whole or not at all (bapps_build.files.write_all: a short
write on a full disk raises), and only renamed into place once everything is staged.

The renames run in an order that any crash between two of them leaves a state the next ingest
completes: the table and the labels first, then counts.csv (what the labels on disk reflect: a
label whose counts did not change is not written again, so counts.csv may only say so once the
label is in place), then the report and the log, and last the copies in raw/, the "ingested"
mark (a file with a copy there is skipped as ingested before). Until its mark is in place, a
results file is read again by the next ingest, its judgments are duplicates of those already in
rows.tsv, and counts and labels are recomputed from the whole table. Temporary files of a
killed ingest are removed by the next one (remove_stale_temps), under the subset's lock.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from bapps_build.errors import UserError
from bapps_build.files import fsync_dir, jsonl_line, remove_partials, temp_name, write_all, write_atomic

ROWS = "rows.tsv"
COUNTS = "counts.csv"
INGESTS = "ingests.jsonl"
QC = "qc.json"
REPORT = "report.json"
RAW = "raw"
ROW_COLUMNS = ["worker", "assignment", "item", "response", "side", "value", "rejected", "time_ms", "source", "line",
               "submitted", "status_time", "status_rank", "timing"]
OLD_ROW_COLUMNS = ROW_COLUMNS[:10]  # before the status times (a table of an earlier version reads as is)
# np.save's bytes for a float32 array of shape (1,), less the 4 data bytes: labels are this + value
_buf = io.BytesIO()
np.save(_buf, np.zeros(1, np.float32))
LABEL_HEADER = _buf.getvalue()[:-4]


class StoreError(UserError, RuntimeError):
    """The stored judgments of a subset cannot be read; the message says which file and what to do."""


@dataclass
class Rows:
    """The judgment table of one subset, column by column."""

    worker: List[str] = field(default_factory=list)
    assignment: List[str] = field(default_factory=list)
    item: List[str] = field(default_factory=list)
    response: List[str] = field(default_factory=list)
    side: List[str] = field(default_factory=list)
    value: List[int] = field(default_factory=list)
    rejected: List[bool] = field(default_factory=list)
    time_ms: List[str] = field(default_factory=list)
    source: List[str] = field(default_factory=list)
    line: List[int] = field(default_factory=list)
    submitted: List[str] = field(default_factory=list)
    status_time: List[str] = field(default_factory=list)
    status_rank: List[int] = field(default_factory=list)
    timing: List[str] = field(default_factory=list)

    def __len__(self):
        return len(self.item)

    def keys(self) -> List[Tuple[str, str, str]]:
        """A judgment is one (worker, assignment, item): the same again is a duplicate."""
        return list(zip(self.worker, self.assignment, self.item))


def read_rows(path: Path) -> Rows:
    rows = Rows()
    if not path.exists():
        return rows
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header != ROW_COLUMNS and header != OLD_ROW_COLUMNS:
            raise StoreError(f"{path}: not a judgments table of this tool (header {header}); restore it from a "
                             f"backup, or move it away and ingest the files in raw/ again")
        width = len(header)
        columns = [[] for _ in header]
        for n, record in enumerate(reader, 2):
            if len(record) != width:
                raise StoreError(f"{path}, line {n}: damaged ({len(record)} fields); move the file away and "
                                 f"ingest the files in raw/ again")
            for col, v in zip(columns, record):
                col.append(v)
    (rows.worker, rows.assignment, rows.item, rows.response, rows.side, value, rejected, rows.time_ms,
     rows.source, line) = columns[:10]
    rows.value = [int(v) for v in value]
    rows.rejected = [v == "1" for v in rejected]
    rows.line = [int(v) for v in line]
    if width == len(ROW_COLUMNS):
        rows.submitted, rows.status_time, rank, rows.timing = columns[10:]
        rows.status_rank = [int(v) for v in rank]
    else:  # an earlier table: no times; a rejection it holds is taken as the requester's own mark
        blank = [""] * len(value)
        rows.submitted, rows.status_time, rows.timing = blank, list(blank), list(blank)
        rows.status_rank = [1 if r else 0 for r in rows.rejected]
    return rows


def rows_text(rows: Rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t", lineterminator="\n")
    w.writerow(ROW_COLUMNS)
    w.writerows(zip(rows.worker, rows.assignment, rows.item, rows.response, rows.side, rows.value,
                    ["1" if r else "0" for r in rows.rejected], rows.time_ms, rows.source, rows.line,
                    rows.submitted, rows.status_time, rows.status_rank, rows.timing))
    return buf.getvalue()


def counts_text(stems: List[str], n_pos: np.ndarray, n_total: np.ndarray, positive: str) -> str:
    out = [f"stem,{positive},n_total,fraction\n"]
    for s, p, t in zip(stems, n_pos.tolist(), n_total.tolist()):
        out.append(f"{s},{p},{t},{(p / t) if t else ''}\n")
    return "".join(out)


def read_counts(path: Path) -> Optional[Dict[str, Tuple[int, int]]]:
    if not path.exists():
        return None
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        next(reader, None)
        return {r[0]: (int(r[1]), int(r[2])) for r in reader if len(r) >= 3}


def positive_column(task: str) -> str:
    """The counts column of the positive answers: the votes for p1 (2AFC) or for "same" (JND)."""
    return "n_same" if task == "jnd" else "n_p1"


# ---- the counts in shards (registered with the core by judgments/__init__.py: `export` carries
# them in each sample's json as {"counts": {"n_p1" or "n_same": ..., "n_total": ...}})


def shard_counts(subset_path: Path, task: str) -> Dict[str, dict]:
    """Per-stem judgment counts of a judged subset (`bapps-build ingest`); {} when never judged."""
    counts = read_counts(Path(subset_path) / "judgments" / COUNTS) or {}
    positive = positive_column(task)
    return {stem: {positive: p, "n_total": t} for stem, (p, t) in counts.items()}


def write_shard_counts(subset_path: Path, task: str, items: List[Tuple[str, dict]]) -> None:
    """Restore judgments/counts.csv from the (stem, counts) the shards carried."""
    positive = positive_column(task)
    folder = Path(subset_path) / "judgments"
    folder.mkdir(exist_ok=True)
    text = counts_text([stem for stem, _ in items], np.array([c[positive] for _, c in items]),
                       np.array([c["n_total"] for _, c in items]), positive)
    write_atomic(folder / COUNTS, text.encode("utf-8"))


def label_bytes(fraction: float) -> bytes:
    return LABEL_HEADER + np.float32(fraction).tobytes()


class Transaction:
    """Files staged under hidden temporary names, renamed into place together by commit().

    Nothing reaches a final name before every file is staged; if staging fails, the temporaries
    are removed and the old files stay as they were."""

    def __init__(self):
        self.staged: List[Tuple[Path, Path]] = []  # (temporary, final): the table, task records, labels
        self.folders: List[Tuple[str, str]] = []  # whole new folders: (temporary, final)
        self.after: List[Tuple[Path, Path]] = []  # renamed once the labels are in place (counts, report, log)
        self.marks: List[Tuple[Path, Path]] = []  # renamed last: the "ingested" marks (raw/ copies)
        self.removals: List[Path] = []

    def write(self, path: Path, data, after_labels: bool = False) -> None:
        """Stage a file; after_labels: rename it only once the labels are in place (counts.csv,
        what says which labels are up to date, and what records the ingest)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_name(path)
        # listed before writing: abort() removes a half-written one too
        (self.after if after_labels else self.staged).append((tmp, path))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            write_all(fd, data.encode("utf-8") if isinstance(data, str) else data)
            os.fsync(fd)  # rows.tsv and the counts are the source of truth: durable before the rename
        finally:
            os.close(fd)

    def write_many(self, folder: Path, files) -> None:
        """Many small files into one folder ((name, bytes) pairs): the labels, at OS-call cost."""
        if not files:
            return
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        base, pid = str(folder), os.getpid()
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        for name, data in files:
            final = os.path.join(base, name)
            # temp_name's form (hidden, no .npy ending: the loader skips it), spelled out on strings
            # because this loop runs once per example file
            tmp = os.path.join(base, f".{name}.{pid}.partial")
            self.staged.append((tmp, final))
            fd = os.open(tmp, flags, 0o644)
            try:
                write_all(fd, data)
            finally:
                os.close(fd)

    def write_folder(self, folder: Path, files) -> None:
        """A folder that does not exist yet, filled under a hidden temporary name and renamed whole
        (one rename instead of one per file: the first labels of a subset)."""
        folder = Path(folder)
        if folder.exists():
            raise FileExistsError(f"{folder} exists")
        tmp = temp_name(folder)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.folders.append((str(tmp), str(folder)))
        base = str(tmp)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        for name, data in files:
            fd = os.open(os.path.join(base, name), flags, 0o644)
            try:
                write_all(fd, data)
            finally:
                os.close(fd)

    def copy(self, source: Path, path: Path, mark: bool = False) -> None:
        """Stage a byte copy; mark: it is an "ingested" mark, renamed after everything else."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_name(path)
        (self.marks if mark else self.staged).append((tmp, path))  # before copying: abort() removes a partial one
        shutil.copyfile(source, tmp)

    def remove(self, path: Path) -> None:
        self.removals.append(Path(path))

    def abort(self) -> None:
        for tmp, _ in self.staged + self.after + self.marks:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        for tmp, _ in self.folders:
            shutil.rmtree(tmp, ignore_errors=True)
        self.staged, self.after, self.marks, self.folders = [], [], [], []

    def commit(self) -> None:
        """Rename everything into place: table and labels, removals, counts/report/log, marks last."""
        staged, folders, removals = self.staged, self.folders, self.removals
        for tmp, final in staged:
            os.replace(tmp, final)
        self.staged = []
        for tmp, final in folders:
            os.rename(tmp, final)
        self.folders = []
        for path in removals:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        self.removals = []
        for tmp, final in self.after:
            os.replace(tmp, final)
        # everything above durable before any mark is (a power cut must not keep a mark without its data)
        touched = {os.path.dirname(str(final)) for _, final in staged + self.after}
        touched |= {os.path.dirname(str(final)) for _, final in folders} | {str(p.parent) for p in removals}
        for folder in sorted(touched):
            fsync_dir(folder)
        self.after = []
        for tmp, final in self.marks:
            os.replace(tmp, final)
        self.marks = []


# what Transaction and bapps_build.files.temp_name name their temporaries: .<name>.<pid>.partial
_TEMP = re.compile(r"^\.(.+)\.(\d+)\.partial$")


def pid_alive(pid: int) -> bool:
    """Whether a process of this host is running (this one counts as gone: it cleans before it stages)."""
    if pid == os.getpid():
        return False  # this process has no staged transaction while it cleans: left by an aborted one
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def remove_stale_temps(folders, label_folders=()) -> int:
    """Remove what a killed ingest left: temporary files (`.<name>.<pid>.partial`) in folders
    and temporary label folders (`.<judge|same>.<pid>.partial/`) beside each of label_folders,
    whose process is gone. Only names this tool makes are touched, never below a folder, and
    never a live process's (an ingest holds its subsets' locks while it stages and commits).
    Returns how many were removed."""
    n = remove_partials(folders, writer_gone=lambda pid: not pid_alive(pid))
    for label_folder in label_folders:
        label_folder = Path(label_folder)
        try:
            entries = list(os.scandir(label_folder.parent))
        except OSError:
            continue
        for e in entries:
            m = _TEMP.match(e.name)
            if (m and m.group(1) == label_folder.name and e.is_dir(follow_symlinks=False)
                    and not pid_alive(int(m.group(2)))):
                shutil.rmtree(e.path, ignore_errors=True)
                n += 1
    return n


def append_jsonl_text(path: Path, record: dict) -> str:
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    return old + jsonl_line(record)


def read_json(path: Path, default=None):
    if not path.exists():
        return default
    return json.loads(path.read_text(encoding="utf-8"))
