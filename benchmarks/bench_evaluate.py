"""Evaluate throughput: triplets scored per second by each built-in metric, PNG reading included.

    python benchmarks/bench_evaluate.py [--n 2000] [--work /tmp/bench-evaluate]

Builds a 2AFC subset of --n triplets from the bundled sample photos (bapps-build distort),
gives it labels through the generic ingest path, then times `evaluate_dataset` per metric
(it reads 3 PNGs per triplet and computes 2 distances). Baseline, measured in the same run:
reading the 3 PNGs per triplet alone, the floor every metric pays.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bapps_build import BuildConfig, run_build  # noqa: E402
from judgments.catalog import resolve_subset  # noqa: E402
from judgments.evaluate import evaluate_dataset, load_patch  # noqa: E402
from judgments.ingest import ingest_files  # noqa: E402

SUBSET = "2afc/val/traditional"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--work", default="/tmp/bench-evaluate")
    ap.add_argument("--metrics", default="l2,psnr,ssim")
    args = ap.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    dataset = work / "dataset"
    t0 = time.perf_counter()
    run_build(BuildConfig(n=args.n, task="2afc", split="val", val_fraction=1.0, seed=0), dataset, workers=2,
              progress=False)
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    results = work / "labels.jsonl"
    with open(results, "w") as f:
        for k in range(args.n):
            for worker in ("a", "b", "c"):
                f.write(json.dumps({"worker": worker, "item": f"{SUBSET}/{k:06d}",
                                    "response": "p1" if rng.random() < 0.5 else "p0"}) + "\n")
    ingest_files([results], dataset)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, numpy {np.__version__}")
    print(f"dataset: {args.n} triplets of 64x64 built in {build_s:.1f} s")

    subset = resolve_subset(dataset, SUBSET)
    t0 = time.perf_counter()
    for stem in subset.stems:
        for folder in ("ref", "p0", "p1"):
            load_patch(subset.path / folder / f"{stem}.png")
    read_s = time.perf_counter() - t0
    print(f"baseline, reading the 3 PNGs of each triplet: {args.n / read_s:,.0f} triplets/s")
    for metric in args.metrics.split(","):
        t0 = time.perf_counter()
        (result,) = evaluate_dataset(dataset, [metric])
        seconds = time.perf_counter() - t0
        print(f"evaluate --metric {metric}: {args.n / seconds:,.0f} triplets/s ({seconds:.2f} s; "
              f"2AFC score {100 * result['score']:.1f} on random labels)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
