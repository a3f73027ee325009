"""End-to-end `distort` throughput against its I/O floor, with 1 and 2 workers.

    python benchmarks/bench_distort.py [--n 20000] [--workers 1 2] [--full]

The floor is the same pipeline with an identity distortion (registered from a plugin
file): sources, crop, PNG encode, atomic writes, manifest, everything but the distortions.
Targets on a 2-core machine: end-to-end >= 60% of the floor's rate; 2 workers >= 1.7x one.
--full also times the headline command, `bapps-build distort --n 160000` (target: under
3 minutes).
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

IDENTITY_PLUGIN = '''
from distortions import Family, register

register(Family("identity", "other", lambda rng, severity: {}, lambda image, params: image,
                {}, "nothing: the I/O floor of the pipeline"))
'''


def settle():
    """Flush what earlier runs wrote, so that their writeback does not slow the next run."""
    os.sync()
    time.sleep(2)


def run(args, cwd):
    settle()
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bapps_build.cli", *args], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--full", action="store_true", help="also time distort --n 160000")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-distort-"))
    plugin = tmp / "identity.py"
    plugin.write_text(IDENTITY_PLUGIN)
    print(f"# {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, n={args.n}")
    rates = {}
    try:
        for w in args.workers:
            for label, extra in (("floor", ["--families", "identity", "--max-chain", "1", "--plugin", str(plugin)]),
                                 ("distort", [])):
                out = tmp / f"{label}-{w}"
                seconds = run(["distort", "--n", str(args.n), "--out", str(out), "--workers", str(w), "--quiet",
                               *extra], tmp)
                rates[(label, w)] = args.n / seconds
                print(f"{label:8s} workers={w}: {seconds:7.2f} s  {args.n / seconds:8.0f} triplets/s")
                sys.stdout.flush()
                # kept until the end: deleting tens of thousands of files now would slow the next run
        for w in args.workers:
            print(f"workers={w}: distort / floor = {rates[('distort', w)] / rates[('floor', w)]:.2f} "
                  "(target >= 0.60)")
        if 1 in args.workers and 2 in args.workers:
            print(f"distort 2 workers / 1 worker = {rates[('distort', 2)] / rates[('distort', 1)]:.2f} "
                  "(target >= 1.70)")
            print(f"floor   2 workers / 1 worker = {rates[('floor', 2)] / rates[('floor', 1)]:.2f}")
        if args.full:
            seconds = run(["distort", "--n", "160000", "--out", str(tmp / "full"), "--quiet"], tmp)
            print(f"bapps-build distort --n 160000: {seconds:.1f} s = {seconds / 60:.2f} min "
                  f"({160000 / seconds:.0f} triplets/s; target under 3 min)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
