"""Shared by the command-line benchmarks: run `bapps-build` commands, time them, compare.

On a VM disk, creating tens of thousands of small files is slow and erratic: right after
many files were deleted (discards, journal commits) the same build can take twice as long.
So every measurement here starts after the disk has settled (sync and a pause), runs the
compared commands interleaved, --repeat times, and reports the median; the CPU seconds of
the whole process tree (user + system) are printed beside the wall time.
"""
from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time


def settle(seconds: float = 3.0) -> None:
    os.sync()
    time.sleep(seconds)


def run(args, cwd) -> tuple:
    """(wall seconds, CPU seconds of the process tree) of one `bapps-build ARGS`."""
    settle()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bapps_build.cli", *args], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def interleaved(cases: dict, repeat: int, cwd, n: int) -> dict:
    """Run each case's args in turn, repeat times; median wall and CPU per case.

    cases: label -> function(run_index) -> args (each run writes to its own folder).
    """
    walls = {k: [] for k in cases}
    cpus = {k: [] for k in cases}
    for r in range(repeat):
        for label, make_args in cases.items():
            wall, cpu = run(make_args(r), cwd)
            walls[label].append(wall)
            cpus[label].append(cpu)
            print(f"  run {r + 1} {label:28s} {wall:7.2f} s wall {n / wall:8.0f}/s  {cpu:7.2f} s CPU", flush=True)
    return {k: (statistics.median(walls[k]), statistics.median(cpus[k])) for k in cases}
