"""`bapps-build serve` under load: simulated participants on loopback (target: p99 of the answer
posts under 50 ms at 200 participants answering one trial every 2 s each; 0 lost answers).

    python benchmarks/bench_serve.py [--participants 200] [--pace 2] [--duration 90] [--work /tmp/bench-serve]
                                     [--synchronous normal|full] [--append benchmarks/RESULTS.md]

A 2AFC subset of 100 triplets, a task set of 4 HITs x 33 trials with 50 judgments per HIT (200
slots), served by `python -m bapps_build.cli serve` (one uvicorn process, SQLite WAL,
group commit; --synchronous normal, the default: every answer is in the WAL file, which a killed
server keeps, before it is acknowledged; full: on the disk, which a power cut keeps) on 127.0.0.1. The participants are `simulate --serve` threads in this process: each enters at a random moment
of the first PACE seconds with ?participant=, consents, gets the task page and its assignment,
then posts one answer every PACE seconds. Latency is measured by the client, from sending the
post to reading the reply, so it includes the client's own share of the 2 cores. After the run
every acknowledged answer is looked up in the database (lost = acknowledged but not stored).
The run is bounded: --duration seconds of answering at most, then the server is stopped.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def http_impl() -> str:
    found = []
    for name in ("httptools", "uvloop"):
        try:
            __import__(name)
            found.append(name)
        except ImportError:
            pass
    return "uvicorn with " + (" + ".join(found) if found else "h11 + asyncio (no httptools/uvloop)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--participants", type=int, default=200)
    ap.add_argument("--pace", type=float, default=2.0)
    ap.add_argument("--duration", type=float, default=90.0)
    ap.add_argument("--work", default="/tmp/bench-serve")
    ap.add_argument("--synchronous", choices=["normal", "full"], default="normal")
    ap.add_argument("--append", default=None, help="Append a results section to this markdown file.")
    args = ap.parse_args()

    from bapps_build import BuildConfig, run_build
    from judgments.catalog import resolve_subset
    from judgments.simulate import simulate_serve
    from judgments.tasks import TaskSettings, build_task_set

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    run_build(BuildConfig(n=100, task="2afc", split="val", val_fraction=1.0, seed=1), work / "ds", workers=1,
              progress=False)
    judgments = max(1, -(-args.participants // 4))
    record = build_task_set(resolve_subset(work / "ds"), work / "tasks",
                            TaskSettings("generic", judgments, 30, 0.1, 0, None, 0, "bench"))
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    db = work / "study.sqlite"
    log = open(work / "serve.log", "wb")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    server = subprocess.Popen([sys.executable, "-m", "bapps_build.cli", "serve", str(work / "tasks"), "--dataset",
                               str(work / "ds"), "--db", str(db), "--port", str(port), "--admin-token", "bench",
                               "--synchronous", args.synchronous],
                              stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(url + "health", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        cpu_client0 = resource.getrusage(resource.RUSAGE_SELF)
        cpu_server0 = process_cpu(server.pid)
        summary = simulate_serve(record, work / "tasks", url, "l2", 0.3, args.participants, 0.0, args.pace, 1, 0,
                                 args.duration)
        cpu_server = process_cpu(server.pid) - cpu_server0
        cpu_client1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu_client = (cpu_client1.ru_utime - cpu_client0.ru_utime) + (cpu_client1.ru_stime - cpu_client0.ru_stime)
        load = os.getloadavg()[0]
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    with sqlite3.connect(db) as c:
        stored = set(c.execute("SELECT assignment, position FROM answers"))
    lost = len(set(summary["acked"]) - stored)
    lat = summary["latency_ms"]
    import numpy as np

    warmup = 2 * args.pace + 5  # everybody entering: the first page, consent, task page, assignment
    steady = np.array([ms for t, ms in summary["latencies"] if t >= warmup] or [0.0])
    steady_pct = {q: round(float(np.percentile(steady, p)), 1) for q, p in (("p50", 50), ("p90", 90), ("p99", 99))}
    result = {"participants": args.participants, "pace_s": args.pace, "answers": summary["answers"],
              "seconds": round(summary["seconds"], 1), "answers_per_second": round(summary["answers_per_second"], 1),
              "latency_ms": {k: round(v, 1) for k, v in lat.items()},
              "server_side_ms": {k: round(v, 2) for k, v in summary["server_ms"].items()},
              "latency_ms_after_warmup": {**steady_pct, "answers": int((steady > 0).sum()), "from_s": warmup}, "failures": len(summary["failures"]),
              "lost": lost, "stored": len(stored), "synchronous": args.synchronous, "server_cpu_s": round(cpu_server, 1),
              "client_cpu_s": round(cpu_client, 1), "server_cpu_ms_per_answer": round(1000 * cpu_server / max(1, summary["answers"]), 2),
              "load_average_1min_at_end": round(load, 2), "http": http_impl(), "trials_per_hit": record["derived"]["trials_per_hit"],
              "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"}
    print(json.dumps(result, indent=2))
    for f in summary["failures"][:5]:
        print("failure:", f, file=sys.stderr)
    if args.append:
        met = "yes" if lat["p99"] < 50 and lost == 0 and not summary["failures"] else "no"
        cmd = "python benchmarks/bench_serve.py " + " ".join(sys.argv[1:])
        text = (f"\n## `bapps-build serve` under {args.participants} simulated participants (`benchmarks/bench_serve.py`)\n\n"
                f"Measured {time.strftime('%Y-%m-%d')} on {result['machine']}; command: `{cmd}`.\n"
                f"One uvicorn process ({result['http']}), SQLite WAL with synchronous={args.synchronous} and group commit; "
                f"server CPU {result['server_cpu_ms_per_answer']} ms per answer (all requests counted), "
                f"client CPU {result['client_cpu_s']} s, 1-min load average {result['load_average_1min_at_end']} at the "
                f"end (the machine is shared); the {args.participants} participants are "
                f"threads of the benchmark process on the same 2 cores (client-side latency, loopback).\n\n"
                f"| participants | one answer every | answers | answers/s | p50 ms | p90 ms | p99 ms | max ms | "
                f"p99 ms after {warmup:g} s | server-side p99 ms | failures | lost | target met (p99 < 50 ms, 0 lost) |\n"
                f"|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
                f"| {args.participants} | {args.pace} s | {result['answers']} | {result['answers_per_second']} | "
                f"{result['latency_ms']['p50']} | {result['latency_ms']['p90']} | {result['latency_ms']['p99']} | "
                f"{result['latency_ms']['max']} | {steady_pct['p99']} | {result['server_side_ms']['p99']} | "
                f"{result['failures']} | {lost} | {met} |\n")
        with open(args.append, "a", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
