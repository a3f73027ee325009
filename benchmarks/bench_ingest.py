"""Ingest speed: 1,000,000 judgment rows into a subset of 50,000 examples (target: under 20 s).

    python benchmarks/bench_ingest.py [--rows 1000000] [--examples 50000] [--work /tmp/bench-ingest]

Cases, each into a fresh copy of the same synthetic subset (a manifest of stems: ingest never
opens the images):
- generic CSV, one judgment per row, direct item ids, 20 workers;
- MTurk batch results CSV, 50 trials per assignment (plain answer fields), opaque trial ids
  from a task record with sentinels, 5% of the assignments rejected;
- the MTurk file ingested a second time (nothing changes; what checking that costs).
Every ingest is the whole thing: read, resolve, merge, quality control, counts, the 50,000
label files, the report, the staged writes and renames.

Baseline, measured in the same run on the same files: parsing alone with the csv module (the
floor for a pure-Python reader) and with pandas.read_csv (if pandas is installed).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from judgments.catalog import opaque_id  # noqa: E402
from judgments.ingest import ingest_files  # noqa: E402

SUBSET = "2afc/train/traditional"
TRIALS = 50
SENTINELS = 100


def make_subset(root: Path, n_examples: int) -> Path:
    path = root / SUBSET
    for folder in ("ref", "p0", "p1"):
        (path / folder).mkdir(parents=True, exist_ok=True)
    with open(path / "manifest.jsonl", "w") as f:
        for i in range(n_examples):
            f.write(json.dumps({"id": i, "stem": f"{i:06d}"}) + "\n")
    return path


def task_record(n_examples: int) -> dict:
    items = {opaque_id("bench", 0, f"test:{i}"): {"kind": "test", "stem": f"{i:06d}"} for i in range(n_examples)}
    for k in range(SENTINELS):
        items[opaque_id("bench", 0, f"sentinel:{k}")] = {"kind": "sentinel", "expected": "p0" if k % 2 else "p1"}
    return {"name": "bench", "subset": SUBSET, "task": "2afc", "items": items}


def write_generic(path: Path, rows: int, n_examples: int, rng) -> None:
    examples = rng.integers(0, n_examples, rows)
    workers = rng.integers(0, 20, rows)
    answers = rng.integers(0, 2, rows)
    with open(path, "w", newline="") as f:
        f.write("worker,assignment,item,response,time_ms\n")
        f.writelines(f"W{w:02d},s{i // 100},{SUBSET}/{e:06d},{'p1' if a else 'p0'},{900 + a}\n"
                     for i, (w, e, a) in enumerate(zip(workers.tolist(), examples.tolist(), answers.tolist())))


def write_mturk(path: Path, rows: int, record: dict, rng) -> None:
    test_ids = [i for i, v in record["items"].items() if v["kind"] == "test"]
    sentinel_ids = [i for i, v in record["items"].items() if v["kind"] == "sentinel"]
    n_assignments = rows // TRIALS
    header = (["HITId", "AssignmentId", "WorkerId", "AssignmentStatus", "SubmitTime", "WorkTimeInSeconds"]
              + [f"Input.{c}{t}" for t in range(1, TRIALS + 1) for c in ("item", "p0side")]
              + [f"Answer.{c}{t}" for t in range(1, TRIALS + 1) for c in ("choice", "rt")] + ["Approve", "Reject"])
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for a in range(n_assignments):
            items = [sentinel_ids[int(rng.integers(len(sentinel_ids)))] if t % 10 == 0
                     else test_ids[int(rng.integers(len(test_ids)))] for t in range(TRIALS)]
            sides = ["left" if x else "right" for x in rng.integers(0, 2, TRIALS)]
            choices = ["left" if x else "right" for x in rng.integers(0, 2, TRIALS)]
            for t in range(0, TRIALS, 10):  # careful workers: sentinels right (the light-noise side)
                light_is_p0 = record["items"][items[t]]["expected"] == "p0"
                choices[t] = sides[t] if light_is_p0 else ("right" if sides[t] == "left" else "left")
            rejected = a % 20 == 0
            row = [f"H{a // 5}", f"A{a:08d}", f"W{a % 400:04d}", "Rejected" if rejected else "Approved",
                   "Mon Jan 01 10:00:00 PST 2024", "300"]
            for t in range(TRIALS):
                row += [items[t], sides[t]]
            for t in range(TRIALS):
                row += [choices[t], str(800 + t)]
            row += ["", "bad" if rejected else ""]
            w.writerow(row)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def parse_only_csv(path: Path) -> int:
    with open(path, newline="", encoding="utf-8") as f:
        return sum(1 for _ in csv.reader(f))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--examples", type=int, default=50_000)
    ap.add_argument("--work", default="/tmp/bench-ingest")
    args = ap.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rng = np.random.default_rng(0)
    record = task_record(args.examples)
    template = work / "template"
    make_subset(template, args.examples)
    (template / SUBSET / "judgments" / "tasks").mkdir(parents=True)
    (template / SUBSET / "judgments" / "tasks" / "bench.json").write_text(json.dumps(record))
    generic, mturk = work / "generic.csv", work / "Batch_results.csv"
    t_gen, _ = timed(lambda: write_generic(generic, args.rows, args.examples, rng))
    t_mt, _ = timed(lambda: write_mturk(mturk, args.rows, record, rng))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, numpy {np.__version__}")
    print(f"files: generic {generic.stat().st_size / 1e6:.0f} MB ({t_gen:.1f} s to write), "
          f"MTurk {mturk.stat().st_size / 1e6:.0f} MB ({t_mt:.1f} s to write)")

    results = []
    started = time.perf_counter()
    for name, path in (("generic CSV", generic), ("MTurk batch CSV", mturk)):
        dataset = work / f"ds-{path.stem}"
        shutil.copytree(template, dataset)
        seconds, summary = timed(lambda: ingest_files([path], dataset))
        report = summary["subsets"][SUBSET]
        results.append((f"ingest, {name}", seconds, summary["rows_read"]))
        print(f"ingest {name}: {summary['rows_read']:,} judgments in {seconds:.2f} s "
              f"({summary['rows_read'] / seconds:,.0f}/s); {report['rows']['counted']:,} counted, "
              f"{report['labels']['written']:,} labels written")
        if path is mturk:
            again, summary2 = timed(lambda: ingest_files([path], dataset))
            assert summary2["subsets"][SUBSET]["changed"] is False
            results.append(("re-ingest of the same MTurk file (no change)", again, summary2["rows_read"]))
            print(f"re-ingest of the same MTurk file: {again:.2f} s, nothing changed")
    for name, path in (("generic CSV", generic), ("MTurk batch CSV", mturk)):
        seconds, n = timed(lambda: parse_only_csv(path))
        print(f"baseline, csv.reader alone over the {name}: {seconds:.2f} s ({n:,} records)")
        try:
            import pandas as pd

            seconds, frame = timed(lambda: pd.read_csv(path, dtype=str, keep_default_na=False))
            print(f"baseline, pandas.read_csv of the {name}: {seconds:.2f} s ({len(frame):,} records)")
        except ImportError:
            pass
    print(f"whole benchmark: {time.perf_counter() - started:.1f} s")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
