"""The judgment report of a subset: how many, by whom, who was dropped and why, how well judges agree.

Agreement within an example with n judgments of which k chose p1 (JND: said "same"):
    a = [k(k-1) + (n-k)(n-k-1)] / [n(n-1)]
the chance that two different judges of it agree. Averaged over examples with n >= 2 it is
also the expected agreement of one judge with the others, i.e. the 2AFC score a single human
gets when scored against the rest: the paper's "human" row (about 73.9 on the BAPPS val sets).
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np

from .catalog import KIND_PRACTICE, KIND_SENTINEL, KIND_TEST
from .qc import JND_PROTOCOL_MS, QCParams, QCResult


def agreement(n_pos: np.ndarray, n_total: np.ndarray) -> Dict:
    """Per-example leave-one-out agreement (mean) and the pooled share of agreeing judge pairs."""
    n = n_total.astype(np.float64)
    k = n_pos.astype(np.float64)
    usable = n >= 2
    if not usable.any():
        return {"examples_with_2_or_more": 0, "human_score": None, "pairwise_agreement": None}
    agreeing_pairs = (k * (k - 1) + (n - k) * (n - k - 1))[usable]
    pairs = (n * (n - 1))[usable]
    return {"examples_with_2_or_more": int(usable.sum()),
            "human_score": float(np.mean(agreeing_pairs / pairs)),
            "pairwise_agreement": float(agreeing_pairs.sum() / pairs.sum())}


def build_report(sj, qc: QCResult, params: QCParams, files: List[dict]) -> dict:
    subset, rows = sj.subset, sj.rows
    kind = sj.kind
    rejected = np.asarray(rows.rejected, bool)
    value = np.asarray(rows.value, np.int8)
    active = ~rejected if qc.timed_out is None else ~rejected & ~qc.timed_out
    n_total = qc.n_total
    hist = np.bincount(n_total)
    all_rejected = (qc.rejected_workers if qc.rejected_workers is not None
                    else np.zeros(len(qc.workers), bool))
    scored = qc.sentinels_seen > 0
    passed = scored & ~qc.dropped
    sent = active & (kind == KIND_SENTINEL)
    report = {
        "subset": subset.rel, "task": subset.task, "examples": len(subset.stems),
        "examples_judged": int((n_total > 0).sum()),
        "judgments_per_example": {"min": int(n_total.min()) if len(n_total) else 0,
                                  "mean": float(n_total.mean()) if len(n_total) else 0.0,
                                  "max": int(n_total.max()) if len(n_total) else 0,
                                  "histogram": {str(i): int(c) for i, c in enumerate(hist) if c}},
        "rows": {"stored": len(rows), "rejected": int(rejected.sum()),
                 "test": int((kind == KIND_TEST).sum()), "sentinel": int((kind == KIND_SENTINEL).sum()),
                 "practice": int((kind == KIND_PRACTICE).sum()), "counted": int(qc.counted.sum()),
                 "repeats_folded": qc.repeats_folded, "off_protocol_timing": qc.off_protocol},
        "one_vote_per_worker": not params.count_repeats,
        "this_ingest": dict(sj.stats),
        "files": [{k: f[k] for k in ("path", "platform", "records", "judgments", "unanswered", "rejected_judgments")}
                  for f in files],
        "workers": {"total": len(qc.workers), "scored_on_sentinels": int(scored.sum()),
                    "unscored": int((~scored & ~all_rejected).sum()),
                    "kept": int((~qc.dropped & ~all_rejected).sum()),
                    "dropped": qc.dropped_workers(params.min_sentinel_accuracy),
                    "rejected": rejected_workers(qc, rows, all_rejected)},
        "sentinels": {"answers": int(sent.sum()),
                      "right": int((sent & (value == sj.expected)).sum()),
                      "accuracy": float((value[sent] == sj.expected[sent]).mean()) if sent.any() else None,
                      "workers_passing": float(passed.sum() / scored.sum()) if scored.any() else None,
                      "threshold": params.min_sentinel_accuracy},
        "agreement": agreement(qc.n_pos, n_total),
    }
    if subset.task == "jnd":
        report["timing"] = {"protocol_ms": list(JND_PROTOCOL_MS), "tolerance_ms": params.timing_tolerance_ms,
                            "excluded": qc.off_protocol, "untimed_rows": int(sj.stats.get("untimed", 0))}
        same_rate = lambda mask: float(value[mask].mean()) if mask.any() else None  # noqa: E731
        report["same_rate"] = {
            "test_pairs": same_rate(qc.counted),
            "sentinels": same_rate(sent),
            "identical_sentinels": same_rate(sent & (sj.expected == 1)),
            "heavy_noise_sentinels": same_rate(sent & (sj.expected == 0)),
        }
    return report


def rejected_workers(qc: QCResult, rows, all_rejected: np.ndarray) -> List[Dict]:
    """Workers every one of whose assignments was rejected: none of their answers counts."""
    if not all_rejected.any():
        return []
    names = {qc.workers[k] for k in np.flatnonzero(all_rejected)}
    assignments: Dict[str, set] = {}
    for w, a in zip(rows.worker, rows.assignment):
        if w in names:
            assignments.setdefault(w, set()).add(a)
    return [{"worker": w, "assignments": len(assignments.get(w, ())),
             "why": f"all {len(assignments.get(w, ()))} assignment(s) rejected"} for w in sorted(names)]


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def format_report(report: dict) -> str:
    r = report
    j = r["judgments_per_example"]
    w = r["workers"]
    s = r["sentinels"]
    a = r["agreement"]
    lines = [f"{r['subset']}: {r['examples_judged']} of {r['examples']} examples judged; judgments per example "
             f"min {j['min']}, mean {j['mean']:.2f}, max {j['max']}",
             f"  rows: {r['rows']['stored']} stored ({r['rows']['test']} test, {r['rows']['sentinel']} sentinel, "
             f"{r['rows']['practice']} practice), {r['rows']['rejected']} in rejected assignments, "
             f"{r['rows']['counted']} counted"
             + (f", {r['rows']['repeats_folded']} repeat judgments folded (one vote per worker and example)"
                if r['rows'].get('repeats_folded') else "")]
    t = r.get("this_ingest") or {}
    if t:
        lines.append(f"  this ingest: {t.get('new', 0)} new, {t.get('duplicates', 0)} duplicates, "
                     f"{t.get('status_updates', 0)} status updates, {t.get('conflicts', 0)} conflicting duplicates")
    rejected = w.get("rejected", [])
    lines.append(f"  workers: {w['total']} ({w['scored_on_sentinels']} scored on sentinels, {w['unscored']} unscored), "
                 f"{w['kept']} kept, {len(w['dropped'])} dropped, {len(rejected)} rejected")
    for d in w["dropped"]:
        lines.append(f"    dropped {d['worker']}: {d['why']}")
    for d in rejected:
        lines.append(f"    rejected {d['worker']}: {d['why']}")
    lines.append(f"  sentinels: {s['answers']} answers, {pct(s['accuracy'])} right; {pct(s['workers_passing'])} of "
                 f"scored workers pass (threshold {s['threshold']:.0%})")
    if r["task"] == "2afc":
        lines.append(f"  agreement of two judges of one triplet: {pct(a['pairwise_agreement'])}; human 2AFC "
                     f"score (one judge against the others): {pct(a['human_score'])} over "
                     f"{a['examples_with_2_or_more']} triplets with 2+ judgments")
    else:
        tm = r.get("timing")
        if tm:
            lines.append(f"  timing: {tm['excluded']} trial(s) excluded, off the protocol "
                         f"({'/'.join(str(int(x)) for x in tm['protocol_ms'])} ms) by more than "
                         f"{tm['tolerance_ms']:g} ms; {tm['untimed_rows']} row(s) without a measurement (counted)")
        sr = r["same_rate"]
        lines.append(f"  agreement of two judges of one pair: {pct(a['pairwise_agreement'])}")
        lines.append(f"  'same' rate: test pairs {pct(sr['test_pairs'])}, sentinels {pct(sr['sentinels'])} "
                     f"(identical {pct(sr['identical_sentinels'])}, heavy noise {pct(sr['heavy_noise_sentinels'])})")
    labels = r.get("labels")
    if labels:
        if labels.get("skipped_because"):
            lines.append(f"  labels: not written: {labels['skipped_because']}")
        else:
            lines.append(f"  labels: {labels['written']} written, {labels['removed']} removed in {labels['folder']}"
                         + ("" if labels["complete"] else " (INCOMPLETE: verify will flag the missing stems)"))
    return "\n".join(lines)

