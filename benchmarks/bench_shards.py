"""Shards and executors: `distort --format webdataset` against `--format bapps`, export
speed from an existing tree, and `--executor dask` against `--executor local`.

    python benchmarks/bench_shards.py [--n 20000] [--workers 2]

Targets (2 cores): webdataset at least 1.5x the bapps tree; export at least 5,000
triplets/s; dask no more than 15% slower than local at 2 workers. All three comparisons
are measured here, in the same run, on the same machine.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(args, cwd):
    os.sync()  # earlier runs' writeback must not slow this one
    time.sleep(2)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bapps_build.cli", *args], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    n, w = args.n, str(args.workers)
    tmp = Path(tempfile.mkdtemp(prefix="bench-shards-"))
    print(f"# {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, n={n}, workers={w}")
    try:
        t_tree = run(["distort", "--n", str(n), "--out", str(tmp / "tree"), "--workers", w, "--quiet"], tmp)
        t_wds = run(["distort", "--n", str(n), "--out", str(tmp / "wds"), "--workers", w, "--quiet",
                     "--format", "webdataset"], tmp)
        print(f"distort --format bapps:      {t_tree:7.2f} s  {n / t_tree:8.0f} triplets/s")
        print(f"distort --format webdataset: {t_wds:7.2f} s  {n / t_wds:8.0f} triplets/s")
        print(f"webdataset / bapps = {t_tree / t_wds:.2f}x (target >= 1.5x)")
        sys.stdout.flush()

        t_export = run(["export", str(tmp / "tree"), "--format", "webdataset", "--out", str(tmp / "shards"),
                        "--workers", w, "--quiet"], tmp)
        print(f"export tree -> shards: {t_export:7.2f} s  {n / t_export:8.0f} triplets/s (target >= 5000; "
              "includes interpreter and worker start-up)")
        t_back = run(["export", str(tmp / "shards"), "--format", "bapps", "--out", str(tmp / "back"),
                      "--workers", w, "--quiet"], tmp)
        print(f"export shards -> tree: {t_back:7.2f} s  {n / t_back:8.0f} triplets/s")
        sys.stdout.flush()

        t_local = run(["distort", "--n", str(n), "--out", str(tmp / "local"), "--workers", w, "--quiet"], tmp)
        t_dask = run(["distort", "--n", str(n), "--out", str(tmp / "dask"), "--workers", w, "--quiet",
                      "--executor", "dask"], tmp)
        print(f"distort --executor local: {t_local:7.2f} s  {n / t_local:8.0f} triplets/s")
        print(f"distort --executor dask:  {t_dask:7.2f} s  {n / t_dask:8.0f} triplets/s")
        print(f"dask / local time = {t_dask / t_local:.2f} (target <= 1.15)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
