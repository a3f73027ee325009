"""`bapps-build evaluate`: how well a distance agrees with the human labels, as the LPIPS paper scores it.

2AFC, for distances d0 = d(ref, p0), d1 = d(ref, p1) and h the fraction of people who chose p1:
    score = mean( (d0 < d1) * (1 - h) + (d1 < d0) * h + (d0 == d1) * 0.5 )
JND: the pairs sorted by ascending distance, the `same` fractions as soft positives, and the
area under the precision-recall curve (VOC average precision, not the 2007 11-point one):
    TP = cumsum(same), FP = cumsum(1 - same), FN = sum(same) - TP,
    precision = TP / (TP + FP), recall = TP / (TP + FN), mAP = voc_ap(recall, precision)
which is what richzhang/PerceptualSimilarity's `score_jnd_dataset` + `voc_ap` compute when its
distances are flattened (its current head forgets to, and its argsort then returns zeros).

Images are read as the LPIPS loader reads them: RGB, shorter side resized to 64 (bilinear)
when it is not 64 already, on [0, 1] here (each metric scales as it needs).
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from bapps_build.errors import UserError
from bapps_build.files import read_png

from .catalog import Subset, dataset_subsets
from .metrics import Metric, get_metric
from .report import agreement
from .store import COUNTS, read_counts

LOAD_SIZE = 64


class EvaluateError(UserError, ValueError):
    """Nothing to evaluate, or labels the scorer cannot use; the message says what to do."""


def score_2afc(d0: np.ndarray, d1: np.ndarray, h: np.ndarray) -> float:
    d0, d1, h = (np.asarray(x, np.float64).reshape(-1) for x in (d0, d1, h))
    return float(np.mean((d0 < d1) * (1.0 - h) + (d1 < d0) * h + (d0 == d1) * 0.5))


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the interpolated precision-recall curve (VOC, non-07)."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # the precision envelope
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def score_jnd(distances: np.ndarray, same: np.ndarray) -> float:
    d = np.asarray(distances, np.float64).reshape(-1)  # flatten: an Nx1x1x1 array would argsort to zeros
    s = np.asarray(same, np.float64).reshape(-1)
    if d.shape != s.shape:
        raise EvaluateError(f"{d.size} distances for {s.size} labels")
    if s.sum() <= 0:
        raise EvaluateError("no pair was judged 'same' by anyone: the JND mAP is undefined")
    sames = s[np.argsort(d, kind="stable")]
    tps = np.cumsum(sames)
    fps = np.cumsum(1.0 - sames)
    fns = sames.sum() - tps
    precision = tps / (tps + fps)
    recall = tps / (tps + fns)
    return voc_ap(recall, precision)


def load_patch(path: Path) -> np.ndarray:
    img = read_png(path)
    h, w = img.shape[:2]
    if min(h, w) != LOAD_SIZE:  # the loader's torchvision Resize(64): shorter side, bilinear
        from PIL import Image

        size = (LOAD_SIZE, int(LOAD_SIZE * h / w)) if w <= h else (int(LOAD_SIZE * w / h), LOAD_SIZE)
        img = np.asarray(Image.fromarray(img).resize(size, Image.BILINEAR))
    return img.astype(np.float32) / 255.0


def read_labels(subset: Subset) -> np.ndarray:
    folder = subset.path / subset.label_folder
    if not folder.is_dir():
        raise EvaluateError(f"{subset.rel}: no {subset.label_folder}/ labels yet; collect judgments and run "
                            f"`bapps-build ingest` first")
    values = np.full(len(subset.stems), np.nan)
    for k, stem in enumerate(subset.stems):
        f = folder / f"{stem}.npy"
        if f.exists():
            values[k] = float(np.load(f, allow_pickle=False).reshape(-1)[0])
    missing = int(np.isnan(values).sum())
    if missing:
        raise EvaluateError(f"{subset.rel}: {missing} of {len(values)} examples have no label in "
                            f"{subset.label_folder}/; ingest more judgments first")
    return values


def subset_distances(subset: Subset, metric: Metric, batch_size: int = 256) -> Dict[str, np.ndarray]:
    """2AFC: {'d0': d(ref, p0), 'd1': d(ref, p1)}; JND: {'d': d(p0, p1)}."""
    pairs = [("ref", "p0"), ("ref", "p1")] if subset.task == "2afc" else [("p0", "p1")]
    names = ["d0", "d1"] if subset.task == "2afc" else ["d"]
    out = {n: [] for n in names}
    folders = sorted({f for p in pairs for f in p})
    # PNG decoding releases the GIL: threads make reading about as fast as the cores allow
    with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
        for start in range(0, len(subset.stems), batch_size):
            stems = subset.stems[start:start + batch_size]
            cache = {folder: np.stack(list(pool.map(load_patch, [subset.path / folder / f"{s}.png" for s in stems])))
                     for folder in folders}
            for name, (a, b) in zip(names, pairs):
                out[name].append(np.asarray(metric.distances(cache[a], cache[b]), np.float64).reshape(-1))
    return {n: np.concatenate(v) if v else np.zeros(0) for n, v in out.items()}


def human_ceiling(subset: Subset) -> Optional[float]:
    counts = read_counts(subset.store / COUNTS)
    if not counts or subset.task != "2afc":
        return None
    n_pos = np.array([counts.get(s, (0, 0))[0] for s in subset.stems])
    n_total = np.array([counts.get(s, (0, 0))[1] for s in subset.stems])
    return agreement(n_pos, n_total)["human_score"]


def evaluate_dataset(root, metrics: Sequence[str], subset_name: Optional[str] = None, batch_size: int = 256,
                     log=lambda m: None) -> List[dict]:
    """One result per (metric, subset with labels): score (2AFC) or mAP (JND), in [0, 1]."""
    subsets = [s for s in dataset_subsets(root) if not subset_name or s.rel == subset_name]
    if not subsets:
        raise EvaluateError(f"{root} holds no subset{' ' + subset_name if subset_name else ''} "
                            f"(<task>/<split>/<subset>/)")
    labelled = []
    for s in subsets:
        try:
            labelled.append((s, read_labels(s)))
        except EvaluateError as exc:
            log(f"skipped {exc}")
    if not labelled:
        raise EvaluateError(f"no subset of {root} has complete labels; run `bapps-build ingest` with the crowd's "
                            f"results first")
    results = []
    for spec in metrics:
        metric = get_metric(spec)
        for subset, labels in labelled:
            t0 = time.perf_counter()
            d = subset_distances(subset, metric, batch_size)
            seconds = time.perf_counter() - t0
            entry = {"metric": metric.name, "subset": subset.rel, "task": subset.task, "examples": len(labels),
                     "seconds": seconds, "examples_per_second": len(labels) / seconds if seconds > 0 else None}
            if subset.task == "2afc":
                entry["score"] = score_2afc(d["d0"], d["d1"], labels)
                entry["human"] = human_ceiling(subset)
            else:
                entry["score"] = score_jnd(d["d"], labels)
            results.append(entry)
    return results


def format_results(results: List[dict]) -> str:
    """A table in the paper's way: one row per metric, one column per subset (2AFC % / JND mAP %)."""
    subsets = list(dict.fromkeys(r["subset"] for r in results))
    metrics = list(dict.fromkeys(r["metric"] for r in results))
    by = {(r["metric"], r["subset"]): r for r in results}
    heads = [("2AFC " if by_subset_task(results, s) == "2afc" else "JND mAP ") + s for s in subsets]
    width = max([len(m) for m in metrics] + [6])
    lines = [" " * width + "  " + "  ".join(f"{h:>{max(len(h), 8)}}" for h in heads)]
    for m in metrics:
        cells = []
        for s, h in zip(subsets, heads):
            r = by.get((m, s))
            cells.append(f"{100 * r['score']:>{max(len(h), 8)}.2f}" if r else f"{'-':>{max(len(h), 8)}}")
        lines.append(f"{m:<{width}}  " + "  ".join(cells))
    humans = [by.get((metrics[0], s), {}).get("human") for s in subsets]
    if any(h is not None for h in humans):
        cells = [f"{100 * h:>{max(len(hd), 8)}.2f}" if h is not None else f"{'-':>{max(len(hd), 8)}}"
                 for h, hd in zip(humans, heads)]
        lines.append(f"{'human':<{width}}  " + "  ".join(cells))
    return "\n".join(lines)


def by_subset_task(results, subset):
    return next(r["task"] for r in results if r["subset"] == subset)
