"""`bapps-build simulate`: a crowd of simulated observers for dry runs and load tests.

The observer is Thurstone's case V on a distance D (l2, ssim, or any module:function metric of
metrics.py), measured on the very images of the task set and divided by the median distance
of the test examples, so that SIGMA is in units of "a typical distance":

    2AFC  P(choose p1) = Phi((D(ref, p0) - D(ref, p1)) / (SIGMA * sqrt 2))
    JND   P("same")    = Phi((THRESHOLD - D(p0, p1)) / SIGMA)

(each judgment perceives every distance with independent N(0, SIGMA^2) noise). SIGMA = 0 is a
perfect observer of D. Spammers answer at random. `truth` is P per test example: what the
label (a fraction of judgments) converges to when enough judges answer.

Output: the platform's real export shape (readers.py reads it like a real download): an MTurk
batch results CSV (every field quoted, Answer.* sorted by name, AssignmentStatus, Approve /
Reject, the export's times), a Toloka results TSV, or the generic CSV / JSON Lines. Or, with
`--serve URL`, answers posted to a running `bapps-build serve` over HTTP (the load test).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from bapps_build.errors import UserError

from .metrics import get_metric

MTURK_HEAD = ["HITId", "HITTypeId", "Title", "Description", "Keywords", "Reward", "CreationTime", "MaxAssignments",
              "RequesterAnnotation", "AssignmentDurationInSeconds", "AutoApprovalDelayInSeconds", "Expiration",
              "NumberOfSimilarHITs", "LifetimeInSeconds", "AssignmentId", "WorkerId", "AssignmentStatus",
              "AcceptTime", "SubmitTime", "AutoApprovalTime", "ApprovalTime", "RejectionTime", "RequesterFeedback",
              "WorkTimeInSeconds", "LifetimeApprovalRate", "Last30DaysApprovalRate", "Last7DaysApprovalRate"]
SIMULATE_STREAM = 7


class SimulateError(UserError, ValueError):
    """The simulation cannot run with these settings; the message says what to change."""


def normal_cdf(x: np.ndarray) -> np.ndarray:
    from scipy.special import ndtr

    return ndtr(x)


@dataclass
class Observer:
    """P(p1) (2AFC) or P(same) (JND) of every item of a task set, and the test truth."""

    task: str
    p: Dict[str, float]  # item -> probability of the positive answer (p1 / same)
    distances: Dict[str, tuple]
    scale: float

    def truth(self, record: dict) -> Dict[str, float]:
        """stem -> P for every test example."""
        return {info["stem"]: self.p[item] for item, info in record["items"].items() if info["kind"] == "test"}


def item_distances(record: dict, images_dir: Path, metric_spec: str) -> Dict[str, tuple]:
    """2AFC: item -> (D(ref, p0), D(ref, p1)); JND: item -> (D(p0, p1),), on the task set's images."""
    from .evaluate import load_patch

    metric = get_metric(metric_spec)
    task = record["task"]
    items = sorted(record["files"])
    cache: Dict[str, np.ndarray] = {}

    def img(name):
        if name not in cache:
            cache[name] = load_patch(images_dir / name)
        return cache[name]

    pairs = [("ref", "p0"), ("ref", "p1")] if task == "2afc" else [("p0", "p1")]
    out = {}
    for start in range(0, len(items), 256):
        chunk = items[start:start + 256]
        cols = []
        for a, b in pairs:
            x = np.stack([img(record["files"][i][a]) for i in chunk])
            y = np.stack([img(record["files"][i][b]) for i in chunk])
            cols.append(np.asarray(metric.distances(x, y), np.float64).reshape(-1))
        for k, item in enumerate(chunk):
            out[item] = tuple(float(c[k]) for c in cols)
    return out


def make_observer(record: dict, images_dir, observer: str = "l2", noise: float = 0.1,
                  jnd_threshold: Optional[float] = None) -> Observer:
    """noise: SIGMA in units of the median test distance (>= 0). jnd_threshold: in the same units
    [default: the 30th percentile of the test pairs' distances, about the paper's 28% "same"]."""
    if noise < 0:
        raise SimulateError(f"--noise {noise}: must be at least 0")
    d = item_distances(record, Path(images_dir), observer)
    tests = [i for i, info in record["items"].items() if info["kind"] == "test"]
    test_d = np.array([x for i in tests for x in d[i]], np.float64)
    scale = float(np.median(test_d[test_d > 0])) if (test_d > 0).any() else 1.0
    p = {}
    if record["task"] == "2afc":
        for item, (d0, d1) in d.items():
            diff = (d0 - d1) / scale
            p[item] = float(0.5 if diff == 0 else (diff > 0)) if noise == 0 else \
                float(normal_cdf(diff / (noise * math.sqrt(2))))
    else:
        if jnd_threshold is None:
            jnd_threshold = float(np.percentile(test_d / scale, 30))
        for item, (dd,) in d.items():
            x = jnd_threshold - dd / scale
            p[item] = float(x > 0) if noise == 0 else float(normal_cdf(x / noise))
    return Observer(record["task"], p, d, scale)


def answer(task: str, positive: bool, p0side: str) -> str:
    """The page's answer: 2AFC the side clicked (p1 chosen: the side p1 was on), JND same/different."""
    if task == "2afc":
        return ("right" if p0side == "left" else "left") if positive else p0side
    return "same" if positive else "different"


@dataclass
class Crowd:
    workers: List[str]
    spammer: Dict[str, bool]


def make_crowd(n_workers: int, spammers: float, rng, prefix="W") -> Crowd:
    if n_workers < 1:
        raise SimulateError("--workers must be at least 1")
    if not 0 <= spammers <= 1:
        raise SimulateError(f"--spammers {spammers}: a fraction in [0, 1]")
    workers = [f"{prefix}{k:05d}" for k in range(n_workers)]
    n_spam = int(round(spammers * n_workers))
    chosen = set(rng.choice(n_workers, size=n_spam, replace=False).tolist()) if n_spam else set()
    return Crowd(workers, {w: k in chosen for k, w in enumerate(workers)})


def judge(obs: Observer, crowd: Crowd, worker: str, item: str, p0side: str, rng) -> str:
    positive = rng.random() < 0.5 if crowd.spammer[worker] else rng.random() < obs.p[item]
    return answer(obs.task, positive, p0side)


def mturk_time(t: float) -> str:
    return time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime(t))


def simulate_files(record: dict, tasks_dir, out, observer="l2", noise=0.1, workers=20, spammers=0.0, rejects=0.0,
                   platform="generic", judgments: Optional[int] = None, seed: int = 0,
                   jnd_threshold: Optional[float] = None) -> dict:
    """Write simulated results in `platform`'s export shape to `out`; returns a summary with the
    truth per test example (also written beside `out` as <out>.truth.csv)."""
    from .tasks import ImageFolder

    tasks_dir = Path(tasks_dir)
    out = Path(out)
    if platform not in ("mturk", "toloka", "generic"):
        raise SimulateError(f"--platform {platform!r}: mturk, toloka or generic")
    if not 0 <= rejects <= 1:
        raise SimulateError(f"--rejects {rejects}: a fraction in [0, 1]")
    judgments = int(judgments or record["settings"]["judgments"])
    if judgments > workers:
        raise SimulateError(f"{judgments} judgments per HIT need at least as many workers (--workers {workers})")
    rng = np.random.default_rng(np.random.SeedSequence([seed, SIMULATE_STREAM]))
    obs = make_observer(record, tasks_dir / "images", observer, noise, jnd_threshold)
    crowd = make_crowd(workers, spammers, rng)
    task = record["task"]
    start = 1_700_000_000.0
    assignments = []  # (hit, worker, assignment id, rejected, [(trial, answer, rt)])
    k = 0
    for hit in record["hits"]:
        for j in range(judgments):
            worker = crowd.workers[(hit["hit"] * judgments + j) % workers]
            aid = f"A{seed:03d}{k:07d}"
            k += 1
            rejected = bool(rng.random() < rejects)
            given = [(t, judge(obs, crowd, worker, t["item"], t.get("p0side", ""), rng),
                      int(rng.lognormal(math.log(2500 if task == "2afc" else 800), 0.4))) for t in hit["trials"]]
            assignments.append((hit, worker, aid, rejected, given))
    images = ImageFolder(tasks_dir / "images", record["settings"].get("base_url"), "../images/")
    if platform == "mturk":
        text = mturk_export(record, assignments, images, start)
    elif platform == "toloka":
        text = toloka_export(record, assignments, images, start)
    else:
        text = generic_export(task, assignments, out.suffix.lower() in (".jsonl", ".ndjson", ".json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8", newline="")
    truth = obs.truth(record)
    truth_path = out.with_name(out.name + ".truth.csv")
    truth_path.write_text("stem,p_positive,distance\n" + "".join(
        f"{info['stem']},{obs.p[item]:.6f},{';'.join(f'{d:.6g}' for d in obs.distances[item])}\n"
        for item, info in record["items"].items() if info["kind"] == "test"), encoding="utf-8")
    return {"out": str(out), "truth_file": str(truth_path), "assignments": len(assignments),
            "rejected": sum(a[3] for a in assignments), "workers": workers,
            "spammers": sorted(w for w, s in crowd.spammer.items() if s), "truth": truth, "scale": obs.scale,
            "plan": [{"hit": a[0]["hit"], "worker": a[1], "assignment": a[2], "rejected": a[3]} for a in assignments]}


def mturk_export(record, assignments, images, start) -> str:
    from .tasks import hit_row

    task = record["task"]
    n = record["derived"]["trials_per_hit"]
    input_cols = list(hit_row(record, record["hits"][0], images).keys())
    answer_cols = []
    for i in range(1, n + 1):
        answer_cols += [f"choice{i}", f"item{i}", f"rt{i}"] + ([f"p0side{i}"] if task == "2afc" else [f"timing{i}"])
    answer_cols.sort()  # MTurk sorts the Answer.* columns by name: choice1, choice10, choice2, ...
    header = MTURK_HEAD + [f"Input.{c}" for c in input_cols] + [f"Answer.{c}" for c in answer_cols] + ["Approve", "Reject"]
    buf = io.StringIO()
    w = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    w.writerow(header)
    for k, (hit, worker, aid, rejected, given) in enumerate(assignments):
        row = hit_row(record, hit, images)
        accept = start + 60 * k
        work = sum(rt for _, _, rt in given) // 1000 + 5
        submit = accept + work
        decided = submit + 3600
        values = {"HITId": f"3SIM{hit['hit']:08d}", "HITTypeId": "3SIMTYPE", "Title": "Which patch is more similar?",
                  "Description": "Compare small image patches", "Keywords": "image, similarity", "Reward": "$0.50",
                  "CreationTime": mturk_time(start - 3600), "MaxAssignments": str(record["settings"]["judgments"]),
                  "AssignmentDurationInSeconds": "3600", "AutoApprovalDelayInSeconds": "259200",
                  "Expiration": mturk_time(start + 7 * 86400), "LifetimeInSeconds": "",
                  "AssignmentId": aid, "WorkerId": worker, "AssignmentStatus": "Rejected" if rejected else "Approved",
                  "AcceptTime": mturk_time(accept), "SubmitTime": mturk_time(submit),
                  "AutoApprovalTime": mturk_time(submit + 259200),
                  "ApprovalTime": "" if rejected else mturk_time(decided),
                  "RejectionTime": mturk_time(decided) if rejected else "", "WorkTimeInSeconds": str(work),
                  "LifetimeApprovalRate": "0% (0/0)", "Last30DaysApprovalRate": "0% (0/0)",
                  "Last7DaysApprovalRate": "0% (0/0)", "Reject": "failed the checks" if rejected else ""}
        for c in input_cols:
            values[f"Input.{c}"] = row[c]
        for i, (t, ans, rt) in enumerate(given, 1):
            values[f"Answer.choice{i}"] = ans
            values[f"Answer.item{i}"] = t["item"]
            values[f"Answer.rt{i}"] = str(rt)
            if task == "2afc":
                values[f"Answer.p0side{i}"] = t["p0side"]
            else:
                values[f"Answer.timing{i}"] = "1000,250,1000"
        w.writerow([values.get(h, "") for h in header])
    return buf.getvalue()


def toloka_export(record, assignments, images, start) -> str:
    """One row per task answered; practice trials live in Toloka's training pool, not here."""
    from .layouts import trial_columns
    from .tasks import toloka_golden, trial_row

    task = record["task"]
    cols = [c[:-1] for c in trial_columns(task, 1)]
    header = ([f"INPUT:{c}" for c in cols] + ["OUTPUT:choice", "GOLDEN:choice", "HINT:text", "ASSIGNMENT:link",
                                              "ASSIGNMENT:task_id", "ASSIGNMENT:assignment_id",
                                              "ASSIGNMENT:task_suite_id", "ASSIGNMENT:worker_id", "ASSIGNMENT:status",
                                              "ASSIGNMENT:started", "ASSIGNMENT:submitted", "ASSIGNMENT:accepted",
                                              "ASSIGNMENT:rejected", "ASSIGNMENT:reward"])
    lines = ["\t".join(header)]
    iso = lambda t: time.strftime("%Y-%m-%dT%H:%M:%S.000", time.gmtime(t))  # noqa: E731
    for k, (hit, worker, aid, rejected, given) in enumerate(assignments):
        begun = start + 60 * k
        submitted = begun + sum(rt for _, _, rt in given) / 1000
        for t, ans, _ in given:
            kind = record["items"][t["item"]]["kind"]
            if kind == "practice":
                continue
            values = trial_row(record, t, "", images)
            golden = toloka_golden(record, t["item"], t.get("p0side", "")) if kind == "sentinel" else ""
            row = [values[c] for c in cols] + [
                ans, golden, "", f"https://toloka.ai/task/{aid}", hashlib.sha1(f"{hit['hit']}/{t['item']}".encode()).hexdigest()[:20], aid,
                f"S{hit['hit']:08d}", worker, "REJECTED" if rejected else "APPROVED", iso(begun), iso(submitted),
                "" if rejected else iso(submitted + 3600), iso(submitted + 3600) if rejected else "", "0.05"]
            lines.append("\t".join(row))
    return "\n".join(lines) + "\n"


def generic_export(task, assignments, as_jsonl: bool) -> str:
    rows = []
    for hit, worker, aid, rejected, given in assignments:
        for t, ans, rt in given:
            rows.append({"worker": worker, "assignment": aid, "item": t["item"], "response": ans,
                         "side": t.get("p0side", ""), "time_ms": rt, "status": "rejected" if rejected else "approved"})
    if as_jsonl:
        return "".join(json.dumps(r) + "\n" for r in rows)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["worker", "assignment", "item", "response", "side", "time_ms", "status"],
                       lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


# ---------------------------------------------------------------- --serve: participants over HTTP


def simulate_serve(record: dict, tasks_dir, url: str, observer="l2", noise=0.1, workers=20, spammers=0.0,
                   pace: float = 0.0, hits_per_worker: int = 1, seed: int = 0, duration: Optional[float] = None,
                   jnd_threshold: Optional[float] = None, log=lambda m: None) -> dict:
    """Simulated participants, one thread each, entering `url` with ?participant=sim-<k> (at a random
    moment of the first `pace` seconds, so they do not march in step), consenting, and answering
    their HITs one trial every `pace` seconds until no HIT is left for them or `duration` has passed.
    Returns counts and the latency of the answer posts (ms percentiles)."""
    if not url.endswith("/"):
        url += "/"
    obs = make_observer(record, Path(tasks_dir) / "images", observer, noise, jnd_threshold)
    rng0 = np.random.default_rng(np.random.SeedSequence([seed, SIMULATE_STREAM, 1]))
    crowd = make_crowd(workers, spammers, rng0, prefix="sim-")
    run = ServeLoad(url, record, obs, crowd, pace, hits_per_worker, seed,
                    time.monotonic() + duration if duration else None)
    threads = [threading.Thread(target=run.participant, args=(k, w), daemon=True)
               for k, w in enumerate(crowd.workers)]
    run.start = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return run.summary(workers, time.perf_counter() - run.start)


@dataclass
class ServeLoad:
    """The simulated participants of simulate_serve: what they share, and what they measured."""

    url: str
    record: dict
    obs: Observer
    crowd: Crowd
    pace: float
    hits_per_worker: int
    seed: int
    t_end: Optional[float]  # time.monotonic() at which the participants stop; None: when they are done
    start: float = 0.0  # time.perf_counter() when the participants started
    latencies: List[float] = field(default_factory=list)
    sent_at: List[float] = field(default_factory=list)  # seconds since the start, per latency
    server_ms: List[float] = field(default_factory=list)  # the server's own time per answer (Server-Timing)
    failures: List[str] = field(default_factory=list)
    acked: list = field(default_factory=list)  # (assignment, position) of every answer the server took
    lock: threading.Lock = field(default_factory=threading.Lock)

    def participant(self, k: int, worker: str) -> None:
        """One participant's visit: enter, consent, answer HITs; a failure is recorded, not raised."""
        import http.cookiejar
        import urllib.request

        rng = np.random.default_rng(np.random.SeedSequence([self.seed, SIMULATE_STREAM, 2, k]))
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        url = self.url
        try:
            if self.pace:  # arrivals spread over the first PACE seconds, not all at one instant
                time.sleep(rng.random() * self.pace)
            opener.open(f"{url}?participant={worker}", timeout=30).read()
            opener.open(urllib.request.Request(url + "begin", data=b"", method="POST"), timeout=30).read()
            for _ in range(self.hits_per_worker):
                a = json.loads(opener.open(url + "api/assignment", timeout=30).read())
                if not a.get("assignment"):
                    return
                for t in a["trials"][a["answered"]:]:
                    if self.t_end and time.monotonic() > self.t_end:
                        return
                    if not self.post_answer(opener, worker, a, t, rng):
                        return
                    if self.pace:
                        time.sleep(self.pace)
        except OSError as exc:
            with self.lock:
                self.failures.append(f"{worker}: {exc}")

    def post_answer(self, opener, worker: str, a: dict, t: dict, rng) -> bool:
        """Answer one trial and time the post; False when the server refused it."""
        import urllib.error
        import urllib.request

        body = {"token": a["token"], "position": t["position"], "item": t["item"],
                "response": judge(self.obs, self.crowd, worker, t["item"], t.get("p0side", ""), rng),
                "rt_ms": int(rng.lognormal(math.log(2000), 0.3))}
        if self.record["task"] == "jnd":
            body["timing"] = "1000,250,1000"
        req = urllib.request.Request(self.url + "api/answer", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        t0 = time.perf_counter()
        try:
            with opener.open(req, timeout=30) as r:
                r.read()
                timing = r.headers.get("Server-Timing", "")
            t1 = time.perf_counter()
            with self.lock:
                self.latencies.append(1000 * (t1 - t0))
                self.sent_at.append(t0 - self.start)
                if "dur=" in timing:
                    self.server_ms.append(float(timing.split("dur=")[1].split(";")[0]))
                self.acked.append((a["assignment"], t["position"]))
        except urllib.error.HTTPError as e:
            with self.lock:
                self.failures.append(f"{worker}: {e.code} {e.read()[:200]!r}")
            return False
        return True

    def summary(self, participants: int, elapsed: float) -> dict:
        lat = np.array(self.latencies) if self.latencies else np.zeros(1)
        server_ms = self.server_ms or [0.0]
        return {"participants": participants, "answers": len(self.acked), "failures": self.failures,
                "seconds": elapsed, "answers_per_second": len(self.acked) / elapsed if elapsed else 0.0,
                "latency_ms": {q: float(np.percentile(lat, float(q[1:]))) for q in ("p50", "p90", "p99")} |
                {"max": float(lat.max())},
                "server_ms": {q: float(np.percentile(server_ms, float(q[1:]))) for q in ("p50", "p90", "p99")},
                "acked": self.acked, "latencies": list(zip(self.sent_at, self.latencies)),
                "truth": self.obs.truth(self.record),
                "spammers": sorted(w for w, s in self.crowd.spammer.items() if s)}
