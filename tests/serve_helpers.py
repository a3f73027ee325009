"""Shared by the serve tests: a task set, a real `bapps-build serve` process on 127.0.0.1, and a
participant speaking HTTP to it (urllib with its own cookie jar), as a browser would."""
import http.cookiejar
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from judgments.catalog import resolve_subset
from judgments.tasks import TaskSettings, build_task_set

REPO = Path(__file__).resolve().parent.parent


def make_tasks(dataset, out, task="2afc", judgments=2, per_hit=4, sentinel_rate=0.2, practice=0, name=None,
               platform="generic"):
    subset = resolve_subset(dataset, f"{task}/val/traditional")
    return build_task_set(subset, out, TaskSettings(platform, judgments, per_hit, sentinel_rate, practice, None, 0,
                                                    name or Path(out).name))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m bapps_build.cli serve ...` in its own process group (so kill -9 hits only it)."""

    def __init__(self, tasks, dataset, db, *extra, port=None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.log = Path(db).with_suffix(".log")
        self.log_file = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bapps_build.cli", "serve", str(tasks), "--dataset", str(dataset), "--db", str(db),
             "--port", str(self.port), "--admin-token", "test-admin-token", *map(str, extra)],
            stdout=self.log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited: {self.log.read_text()}")
            try:
                with urllib.request.urlopen(self.url + "health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"serve did not come up: {self.log.read_text()}")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.log_file.close()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()


class Participant:
    """One participant: enters with ?participant= (or Prolific's parameters), consents, answers."""

    def __init__(self, base, pid, query=None):
        self.base = base
        self.pid = pid
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        q = query or f"participant={pid}"
        self.get(f"?{q}")
        self.post_form("begin")

    def get(self, path):
        with self.opener.open(self.base + path, timeout=30) as r:
            return r.status, r.read()

    def post_form(self, path):
        req = urllib.request.Request(self.base + path, data=b"", method="POST")
        with self.opener.open(req, timeout=30) as r:
            return r.status, r.read()

    def assignment(self):
        status, body = self.get("api/assignment")
        data = json.loads(body)
        return data if data.get("assignment") else None

    def answer(self, token, position, item, response, rt_ms=800, timing=None):
        body = {"token": token, "position": position, "item": item, "response": response, "rt_ms": rt_ms}
        if timing is not None:
            body["timing"] = timing
        return post_json(self.base + "api/answer", body, self.opener)


def post_json(url, obj, opener=None, raw=None, content_type="application/json"):
    data = raw if raw is not None else json.dumps(obj).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": content_type})
    try:
        with (opener or urllib.request.build_opener()).open(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def answer_for(task, trial, choice_p0=True):
    """The page's answer of a judge who prefers p0 (2AFC) or says "same" (JND)."""
    if task == "2afc":
        side = trial["p0side"]
        return side if choice_p0 else ("right" if side == "left" else "left")
    return "same" if choice_p0 else "different"
