"""`bapps-build plan`: how many judgments per example a study needs, from a pilot (or simulated) run.

For each candidate n (judgments per example) a parametric bootstrap replays the study B times:
draw E examples with replacement from the pilot's judged examples, then n judgments of each from
Binomial(n, p_i) with p_i the pilot's fraction (2AFC: chose p1; JND: said "same"), and score

- the human 2AFC score: the expected agreement of one judge with the others (report.py), n >= 2;
- each metric: the 2AFC score against the drawn fractions (evaluate.score_2afc), or JND mAP.

The interval of the B replicates (percentile, at --confidence) is what a study of E examples with
n judgments each would see. The pilot's fractions are taken as the truth: with few pilot
judgments per example they are more extreme than the truth, so the intervals are on the narrow
side; a pilot with 5 or more judgments per example, or a simulation, is a sounder base.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from bapps_build.errors import UserError

from .catalog import resolve_subset
from .evaluate import score_2afc, score_jnd, subset_distances
from .metrics import get_metric
from .report import agreement
from .store import COUNTS, read_counts

PLAN_STREAM = 11


class PlanError(UserError, ValueError):
    """No pilot to plan from; the message says what to run first."""


def plan_subset(dataset, subset: Optional[str] = None, metrics: Sequence[str] = (),
                judgments: Sequence[int] = (1, 2, 3, 5, 8, 10, 15, 20), examples: Optional[int] = None,
                bootstrap: int = 1000, confidence: float = 0.95, target: Optional[float] = None, seed: int = 0) -> dict:
    chosen = resolve_subset(dataset, subset)
    counts = read_counts(chosen.store / COUNTS)
    if not counts:
        raise PlanError(f"{chosen.rel}: no judgments ingested yet; ingest a pilot (or `bapps-build simulate` "
                        f"results) first")
    n_pos = np.array([counts.get(s, (0, 0))[0] for s in chosen.stems], np.float64)
    n_tot = np.array([counts.get(s, (0, 0))[1] for s in chosen.stems], np.float64)
    judged = n_tot > 0
    if judged.sum() < 2:
        raise PlanError(f"{chosen.rel}: {int(judged.sum())} judged example(s); a pilot needs more")
    p = n_pos[judged] / n_tot[judged]
    E = int(examples or judged.sum())
    distances = {}
    for spec in metrics:
        d = subset_distances(chosen, get_metric(spec))
        distances[spec] = {k: v[judged] for k, v in d.items()}
    rng = np.random.default_rng(np.random.SeedSequence([seed, PLAN_STREAM]))
    alpha = (1 - confidence) / 2
    rows = []
    for n in sorted(set(int(x) for x in judgments)):
        if n < 1:
            raise PlanError(f"--judgments {n}: at least 1")
        human, scores = [], {spec: [] for spec in metrics}
        for _ in range(bootstrap):
            pick = rng.integers(0, len(p), E)
            k = rng.binomial(n, p[pick]).astype(np.float64)
            h = k / n
            if n >= 2 and chosen.task == "2afc":
                human.append(agreement(k, np.full(E, float(n)))["human_score"])
            for spec in metrics:
                d = distances[spec]
                if chosen.task == "2afc":
                    scores[spec].append(score_2afc(d["d0"][pick], d["d1"][pick], h))
                elif h.sum() > 0:
                    scores[spec].append(score_jnd(d["d"][pick], h))
        row = {"judgments": n, "examples": E}
        for name, values in [("human", human)] + list(scores.items()):
            if values:
                lo, hi = np.quantile(values, [alpha, 1 - alpha])
                row[name] = {"mean": float(np.mean(values)), "low": float(lo), "high": float(hi),
                             "half_width": float((hi - lo) / 2)}
        rows.append(row)
    result = {"subset": chosen.rel, "task": chosen.task, "pilot_examples": int(judged.sum()),
              "pilot_judgments_per_example": float(n_tot[judged].mean()), "confidence": confidence,
              "bootstrap": bootstrap, "rows": rows}
    if target is not None:
        result["target_half_width"] = target
        result["enough"] = enough(rows, target)
    return result


def enough(rows: List[dict], target: float) -> Optional[int]:
    """The smallest n whose every interval (human and metrics) is within +-target, or None."""
    for row in rows:
        widths = [v["half_width"] for k, v in row.items() if isinstance(v, dict)]
        if widths and max(widths) <= target:
            return row["judgments"]
    return None


def format_plan(result: dict) -> str:
    names = [k for k in result["rows"][-1] if isinstance(result["rows"][-1][k], dict)]
    lines = [f"{result['subset']} ({result['task']}): pilot of {result['pilot_examples']} examples, "
             f"{result['pilot_judgments_per_example']:.1f} judgments each; {int(result['confidence'] * 100)}% "
             f"intervals for {result['rows'][0]['examples']} examples ({result['bootstrap']} bootstrap replays)",
             "  n/example  " + "  ".join(f"{n:>22}" for n in names)]
    for row in result["rows"]:
        cells = []
        for n in names:
            v = row.get(n)
            cells.append(f"{v['mean']:.3f} +- {v['half_width']:.3f}".rjust(22) if v else "-".rjust(22))
        lines.append(f"  {row['judgments']:>9}  " + "  ".join(cells))
    if "target_half_width" in result:
        n = result["enough"]
        lines.append(f"  +-{result['target_half_width']}: " + (f"{n} judgments per example" if n else
                                                                  "not reached with these n; try larger ones"))
    return "\n".join(lines)
