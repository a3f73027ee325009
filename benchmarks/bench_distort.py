"""End-to-end `distort` throughput against its I/O floor, with 1 and 2 workers.

    python benchmarks/bench_distort.py [--n 20000] [--repeat 3] [--full]

The floor is the same pipeline with an identity distortion (registered from a plugin
file): sources, crop, PNG encode, atomic writes, manifest, everything but the distortions.
Targets on a 2-core machine: end-to-end >= 60% of the floor's rate; 2 workers >= 1.7x one.
--full also times the headline command, `bapps-build distort --n 160000` (target: under
3 minutes). Runs are interleaved and repeated; medians are reported (see _runner.py).
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
from _runner import interleaved, run, settle  # noqa: E402

IDENTITY_PLUGIN = '''
from distortions import Family, register

register(Family("identity", "other", lambda rng, severity: {}, lambda image, params: image,
                {}, "nothing: the I/O floor of the pipeline"))
'''


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--full", action="store_true", help="also time distort --n 160000")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-distort-"))
    plugin = tmp / "identity.py"
    plugin.write_text(IDENTITY_PLUGIN)
    floor = ["--families", "identity", "--max-chain", "1", "--plugin", str(plugin)]
    n = str(args.n)
    print(f"# {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, n={args.n}, "
          f"median of {args.repeat} interleaved runs")
    settle(10)
    try:
        cases = {}
        for w in ("1", "2"):
            cases[f"floor workers={w}"] = lambda r, w=w: ["distort", "--n", n, "--out", str(tmp / f"floor{w}-{r}"),
                                                          "--workers", w, "--quiet", *floor]
            cases[f"distort workers={w}"] = lambda r, w=w: ["distort", "--n", n, "--out", str(tmp / f"dist{w}-{r}"),
                                                            "--workers", w, "--quiet"]
        med = interleaved(cases, args.repeat, tmp, args.n)
        rate = {k: args.n / v[0] for k, v in med.items()}
        for k, (wall, cpu) in med.items():
            print(f"{k:20s} {wall:7.2f} s  {rate[k]:8.0f} triplets/s  ({cpu:.1f} s CPU)")
        for w in ("1", "2"):
            print(f"workers={w}: distort / floor = {rate[f'distort workers={w}'] / rate[f'floor workers={w}']:.2f} "
                  "(target >= 0.60)")
        print(f"distort 2 workers / 1 worker = {rate['distort workers=2'] / rate['distort workers=1']:.2f} "
              "(target >= 1.70)")
        print(f"floor   2 workers / 1 worker = {rate['floor workers=2'] / rate['floor workers=1']:.2f}")
        if args.full:
            wall, cpu = run(["distort", "--n", "160000", "--out", str(tmp / "full"), "--quiet"], tmp)
            print(f"bapps-build distort --n 160000: {wall:.1f} s = {wall / 60:.2f} min "
                  f"({160000 / wall:.0f} triplets/s, {cpu:.0f} s CPU; target under 3 min)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
