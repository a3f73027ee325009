"""Quality control: which judgments count. Pure functions of the judgment table and the parameters.

1. Rejected assignments do not count (the platform's status, or the requester's Reject column).
2. Practice trials never count and are not scored.
3. Each worker is scored on the sentinels they answered (in non-rejected assignments); a worker
   below `min_sentinel_accuracy` is dropped with all their answers. Workers who saw no sentinel
   are kept and reported as unscored.
4. What is left of the test trials is counted per example: n_pos (2AFC: chose p1; JND: "same")
   and n_total.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List

import numpy as np

from .catalog import KIND_SENTINEL, KIND_TEST

# 2AFC: the paper's workers passed at least 14 of 15 sentinels (0.933 > 0.9 > 13/15).
# JND: its sentinels are harder (identical pairs seen 250 ms apart: 70% "same" in the paper).
DEFAULT_MIN_ACCURACY = {"2afc": 0.9, "jnd": 0.75}


@dataclass(frozen=True)
class QCParams:
    min_sentinel_accuracy: float

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

    def dropped_workers(self, threshold: float) -> List[Dict]:
        out = []
        for k in np.flatnonzero(self.dropped):
            seen, right = int(self.sentinels_seen[k]), int(self.sentinels_right[k])
            out.append({"worker": self.workers[k], "sentinels_right": right, "sentinels_seen": seen,
                        "accuracy": right / seen,
                        "why": f"{right} of {seen} sentinels right ({right / seen:.0%}), below {threshold:.0%}"})
        return out


def run_qc(worker_code: np.ndarray, workers: List[str], kind: np.ndarray, value: np.ndarray, expected: np.ndarray,
           rejected: np.ndarray, example: np.ndarray, n_examples: int, params: QCParams) -> QCResult:
    """worker_code: per row, index into `workers`; kind/value/expected/rejected/example: per row."""
    n_workers = len(workers)
    active = ~rejected
    sentinel = active & (kind == KIND_SENTINEL)
    seen = np.bincount(worker_code[sentinel], minlength=n_workers)
    right = np.bincount(worker_code[sentinel & (value == expected)], minlength=n_workers)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(seen > 0, right / np.maximum(seen, 1), 1.0)
    # a small tolerance: 14/15 must pass a threshold written as 0.9333
    dropped = (seen > 0) & (accuracy < params.min_sentinel_accuracy - 1e-9)
    counted = active & (kind == KIND_TEST) & ~dropped[worker_code]
    examples = example[counted]
    n_total = np.bincount(examples, minlength=n_examples).astype(np.int64)
    n_pos = np.bincount(examples, weights=value[counted], minlength=n_examples).round().astype(np.int64)
    return QCResult(workers, seen, right, dropped, counted, n_pos, n_total)


def fractions(n_pos: np.ndarray, n_total: np.ndarray) -> np.ndarray:
    """The BAPPS label: n_pos / n_total as float32 (NaN where an example has no judgment)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (n_pos / np.where(n_total > 0, n_total, np.nan)).astype(np.float32)

