"""Shards and executors: `distort --format webdataset` against `--format bapps`, export
speed from an existing tree, and `--executor dask` against `--executor local`.

    python benchmarks/bench_shards.py [--n 20000] [--workers 2] [--repeat 3]

Targets (2 cores): webdataset at least 1.5x the bapps tree; export at least 5,000
triplets/s; dask no more than 15% slower than local at 2 workers. Each comparison runs its
commands interleaved, --repeat times, and reports medians (see _runner.py).
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _runner import interleaved, settle  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    n, w = str(args.n), str(args.workers)
    tmp = Path(tempfile.mkdtemp(prefix="bench-shards-"))
    print(f"# {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, n={n}, "
          f"workers={w}, median of {args.repeat} interleaved runs")
    settle(10)
    try:
        def distort(r, label, *extra):
            return ["distort", "--n", n, "--out", str(tmp / f"{label}-{r}"), "--workers", w, "--quiet", *extra]

        med = interleaved({"distort --format bapps": lambda r: distort(r, "tree"),
                           "distort --format webdataset": lambda r: distort(r, "wds", "--format", "webdataset")},
                          args.repeat, tmp, args.n)
        t_tree, t_wds = med["distort --format bapps"][0], med["distort --format webdataset"][0]
        print(f"distort --format bapps:      {t_tree:7.2f} s  {args.n / t_tree:8.0f} triplets/s")
        print(f"distort --format webdataset: {t_wds:7.2f} s  {args.n / t_wds:8.0f} triplets/s")
        print(f"webdataset / bapps = {t_tree / t_wds:.2f}x (target >= 1.5x)")

        med = interleaved({"export tree -> shards": lambda r: ["export", str(tmp / "tree-0"), "--format", "webdataset",
                                                               "--out", str(tmp / f"shards-{r}"), "--workers", w,
                                                               "--quiet"],
                           "export shards -> tree": lambda r: ["export", str(tmp / "shards-0"), "--format", "bapps",
                                                              "--out", str(tmp / f"back-{r}"), "--workers", w,
                                                              "--quiet"]},
                          args.repeat, tmp, args.n)
        for label, (wall, cpu) in med.items():
            print(f"{label}: {wall:7.2f} s  {args.n / wall:8.0f} triplets/s"
                  + (" (target >= 5000; interpreter and worker start-up included)" if "-> shards" in label else ""))

        med = interleaved({"distort --executor local": lambda r: distort(r, "local"),
                           "distort --executor dask": lambda r: distort(r, "dask", "--executor", "dask")},
                          args.repeat, tmp, args.n)
        t_local, t_dask = med["distort --executor local"][0], med["distort --executor dask"][0]
        print(f"distort --executor local: {t_local:7.2f} s  {args.n / t_local:8.0f} triplets/s")
        print(f"distort --executor dask:  {t_dask:7.2f} s  {args.n / t_dask:8.0f} triplets/s")
        print(f"dask / local time = {t_dask / t_local:.2f} (target <= 1.15)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
