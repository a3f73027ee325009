"""Peak memory of `distort` at n = 10,000 against n = 100,000 (it should be flat in n).

    python benchmarks/bench_memory.py [--small 10000] [--large 100000] [--workers 2]

The peak is the largest sum of resident memory over the whole process tree (the command
and its worker processes), sampled every 50 ms with psutil.
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


def peak_tree_rss(cmd, cwd) -> tuple:
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parent = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            procs = [parent] + parent.children(recursive=True)
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            peak = max(peak, total)
        except psutil.Error:
            pass
        time.sleep(0.05)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed with status {proc.returncode}")
    return peak, time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", type=int, default=10000)
    ap.add_argument("--large", type=int, default=100000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    print(f"# {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, "
          f"workers={args.workers}")
    try:
        peaks = {}
        for n in (args.small, args.large):
            cmd = [sys.executable, "-m", "bapps_build.cli", "distort", "--n", str(n), "--out", str(tmp / str(n)),
                   "--workers", str(args.workers), "--quiet"]
            peak, seconds = peak_tree_rss(cmd, tmp)
            peaks[n] = peak
            print(f"n={n:>7d}: peak RSS of the process tree {peak / 2**20:7.1f} MiB  ({seconds:.1f} s)")
            sys.stdout.flush()
        print(f"peak(n={args.large}) / peak(n={args.small}) = {peaks[args.large] / peaks[args.small]:.2f} "
              "(flat in n: about 1)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
