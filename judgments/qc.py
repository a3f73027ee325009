"""Quality control: which judgments count. Pure functions of the judgment table and the parameters.

1. Rejected assignments do not count (the platform's status, or the requester's Reject column).
2. Practice trials never count and are not scored.
3. Each worker is scored on the sentinels they answered (in non-rejected assignments); a worker
   below `min_sentinel_accuracy` is dropped with all their answers. Workers who saw no sentinel
   are kept and reported as unscored.
4. JND: a trial whose measured phases (the page's `timing`: first patch, blank, second patch,
   in ms) were off the protocol (1000 / 250 / 1000 ms) by more than `timing_tolerance_ms` in
   any phase is excluded (not counted, not scored); trials without a measurement count and are
   reported as untimed.
5. One person, one vote: a worker's several counted judgments of one example (the same example
   in two assignments, e.g. a re-published batch) count once, the latest by submit time (ties:
   the greater assignment id), unless `count_repeats`.
6. What is left of the test trials is counted per example: n_pos (2AFC: chose p1; JND: "same")
   and n_total.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional

import numpy as np

from .catalog import KIND_PRACTICE, KIND_SENTINEL, KIND_TEST

# 2AFC: the paper's workers passed at least 14 of 15 sentinels (0.933 > 0.9 > 13/15).
# JND: its sentinels are harder (identical pairs seen 250 ms apart: 70% "same" in the paper).
DEFAULT_MIN_ACCURACY = {"2afc": 0.9, "jnd": 0.75}
JND_PROTOCOL_MS = (1000.0, 250.0, 1000.0)  # first patch, blank, second patch
DEFAULT_TIMING_TOLERANCE_MS = 50.0


@dataclass(frozen=True)
class QCParams:
    min_sentinel_accuracy: float
    count_repeats: bool = False
    timing_tolerance_ms: float = DEFAULT_TIMING_TOLERANCE_MS

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class QCResult:
    workers: List[str]  # every worker with a row in the table, sorted
    sentinels_seen: np.ndarray  # per worker, in non-rejected assignments
    sentinels_right: np.ndarray
    dropped: np.ndarray  # per worker, bool
    counted: np.ndarray  # per row, bool: a test judgment that counts
    n_pos: np.ndarray  # per example
    n_total: np.ndarray  # per example
    repeats_folded: int = 0  # judgments not counted: the same worker judged the example again
    off_protocol: int = 0  # JND trials excluded for their timing (not rejected, worker not dropped)
    rejected_workers: np.ndarray = None  # per worker, bool: every row of theirs is in a rejected assignment
    timed_out: np.ndarray = None  # per row, bool: JND timing off the protocol (None: none)

    def dropped_workers(self, threshold: float) -> List[Dict]:
        out = []
        for k in np.flatnonzero(self.dropped):
            seen, right = int(self.sentinels_seen[k]), int(self.sentinels_right[k])
            out.append({"worker": self.workers[k], "sentinels_right": right, "sentinels_seen": seen,
                        "accuracy": right / seen,
                        "why": f"{right} of {seen} sentinels right ({right / seen:.0%}), below {threshold:.0%}"})
        return out


def run_qc(worker_code: np.ndarray, workers: List[str], kind: np.ndarray, value: np.ndarray, expected: np.ndarray,
           rejected: np.ndarray, example: np.ndarray, n_examples: int, params: QCParams,
           off_protocol: Optional[np.ndarray] = None,
           latest: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> QCResult:
    """worker_code: per row, index into `workers`; kind/value/expected/rejected/example: per row.
    off_protocol: per row, bool (JND timing outside the tolerance); latest(rows): for those row
    indices, an int per row ordering them by submit time (greater = later)."""
    n_workers = len(workers)
    active = ~rejected
    timed_out = np.zeros(len(kind), bool) if off_protocol is None else off_protocol
    n_off = int((active & timed_out & (kind != KIND_PRACTICE)).sum())
    active = active & ~timed_out
    sentinel = active & (kind == KIND_SENTINEL)
    seen = np.bincount(worker_code[sentinel], minlength=n_workers)
    right = np.bincount(worker_code[sentinel & (value == expected)], minlength=n_workers)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(seen > 0, right / np.maximum(seen, 1), 1.0)
    # a small tolerance: 14/15 must pass a threshold written as 0.9333
    dropped = (seen > 0) & (accuracy < params.min_sentinel_accuracy - 1e-9)
    counted = active & (kind == KIND_TEST) & ~dropped[worker_code]
    folded = 0
    if not params.count_repeats:
        counted, folded = one_vote_per_worker(counted, worker_code, example, n_examples, latest)
    examples = example[counted]
    n_total = np.bincount(examples, minlength=n_examples).astype(np.int64)
    n_pos = np.bincount(examples, weights=value[counted], minlength=n_examples).round().astype(np.int64)
    all_rejected = np.bincount(worker_code[~rejected], minlength=n_workers) == 0
    return QCResult(workers, seen, right, dropped, counted, n_pos, n_total, folded, n_off, all_rejected,
                    off_protocol)


def one_vote_per_worker(counted: np.ndarray, worker_code: np.ndarray, example: np.ndarray, n_examples: int,
                        latest) -> tuple:
    """counted with, of each (worker, example) counted more than once, only the latest row left."""
    rows = np.flatnonzero(counted)
    if rows.size == 0:
        return counted, 0
    key = worker_code[rows].astype(np.int64) * max(n_examples, 1) + example[rows]
    order = np.argsort(key, kind="stable")
    sk = key[order]
    repeated = np.zeros(len(sk), bool)
    repeated[1:] = sk[1:] == sk[:-1]
    if not repeated.any():  # the usual case: nothing to fold, no need to order by time
        return counted, 0
    repeated[:-1] |= repeated[1:]  # every member of a group with repeats
    group_rows = rows[order[repeated]]
    when = latest(group_rows) if latest is not None else group_rows
    # within each (worker, example) group, the latest first
    o = np.lexsort((-np.asarray(when, np.int64), key[order[repeated]]))
    gk = key[order[repeated]][o]
    first = np.ones(len(o), bool)
    first[1:] = gk[1:] != gk[:-1]
    out = counted.copy()
    out[group_rows[o[~first]]] = False
    return out, int((~first).sum())


def fractions(n_pos: np.ndarray, n_total: np.ndarray) -> np.ndarray:
    """The BAPPS label: n_pos / n_total as float32 (NaN where an example has no judgment)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (n_pos / np.where(n_total > 0, n_total, np.nan)).astype(np.float32)

