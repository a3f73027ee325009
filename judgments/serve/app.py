"""The web side of `bapps-build serve`: Starlette on uvicorn (the `serve` extra).

    GET  /                 entry (study URL): identity from PROLIFIC_PID/STUDY_ID/SESSION_ID,
                           ?participant=, or a signed cookie; consent/instructions page
    POST /begin            consent given: take an assignment, go to the task
    GET  /task             the task page (layouts/templates/served_task_page.html) for the trials not yet answered
    GET  /api/assignment   the same as JSON (for `simulate --serve` and the load test)
    POST /api/answer       one answer: {token, position, item, response, rt_ms, timing}
    GET  /done             completion page: the code, and the redirect of --completion-url
    GET  /images/<sha>.png the task set's images
    GET  /admin[.json]     progress, per-participant sentinel accuracy and time per trial (token)

Every URL the pages use is relative, so the study also works under a path of a reverse proxy.
"""
from __future__ import annotations

import asyncio
import html
import json
import re
import secrets
import time
from pathlib import Path
from typing import Optional

try:
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
    from starlette.routing import Route
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(f"bapps-build serve needs Starlette and uvicorn: pip install 'bapps-build[serve]' "
                      f"({exc})") from None

from ..layouts import render_served_layout
from ..layouts.page import INSTRUCTIONS
from ..tasks import ImageFolder, trial_row
from .db import AnswerRefused, Study, StudyError, load_task_record, valid_id

COOKIE = "bapps_participant"
MAX_BODY = 2048  # bytes of one answer post; a real one is about 200
ANSWER_FIELDS = {"token", "position", "item", "response", "rt_ms", "timing"}
IMAGE_NAME = re.compile(r"^[0-9a-f]{16}\.png$")
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"), (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                                 b"script-src 'self' 'unsafe-inline'; connect-src 'self'; form-action 'self'; "
                                 b"frame-ancestors 'none'"),
]
DEFAULT_CONSENT = """This study is about how people see small image patches. It takes a few minutes.
Your answers are stored with a participant id, never with your name. You may stop at any time by
closing the page. By pressing the button below you agree to take part."""

class SecurityHeaders:
    """Pure ASGI middleware: the headers every response gets."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + SECURITY_HEADERS
            await send(message)
        await self.app(scope, receive, send_with_headers)


class BodyTooLarge(Exception):
    pass


async def read_limited(request: Request, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes (announced or actually sent)."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise BodyTooLarge()
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge()
    return body


def page(title: str, body: str, status: int = 200, extra_head: str = "") -> HTMLResponse:
    return HTMLResponse(f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>{extra_head}
<style>body {{ font-family: sans-serif; margin: 2em auto; max-width: 44em; background: #808080; }}
.panel {{ background: #eee; padding: 1em 1.5em; border-radius: 6px; }} button {{ font-size: 120%; }}
table {{ border-collapse: collapse; }} td, th {{ padding: .2em .6em; border-bottom: 1px solid #ccc; text-align: left; }}</style>
</head><body><section class="panel">{body}</section></body></html>
""", status_code=status)


def consent_html(path: Optional[str]) -> str:
    """The consent text: an .html file as it is (the researcher's own markup), any other file as
    plain text (paragraphs at blank lines)."""
    if path is None:
        text = DEFAULT_CONSENT
    else:
        text = Path(path).read_text(encoding="utf-8")
        if Path(path).suffix.lower() in (".html", ".htm"):
            return text
    return "\n".join(f"<p>{html.escape(p.strip())}</p>" for p in re.split(r"\n\s*\n", text) if p.strip())


def refused(text: str, status: int = 400) -> HTMLResponse:
    return page("Cannot start", f"<p>{html.escape(text)}</p>", status)


class StudySite:
    """The pages and API of one study (create_app gives each its URL): the participant's way in,
    consent, the task page, the answers, the completion page, the images and the admin view."""

    def __init__(self, study: Study, tasks_dir, consent: Optional[str] = None, completion_url: Optional[str] = None,
                 hits_per_participant: int = 1):
        self.study = study
        self.tasks_dir = Path(tasks_dir)
        self.record = study.record
        self.task = self.record["task"]
        self.practice = self.record["derived"]["practice_per_hit"]
        self.images = ImageFolder(self.tasks_dir / "images", None, "images/")
        self.consent_text = consent_html(consent)
        self.completion_url = completion_url
        self.hits_per_participant = hits_per_participant

    def routes(self) -> list:
        return [Route("/", self.entry), Route("/begin", self.begin, methods=["POST"]), Route("/task", self.task_page),
                Route("/api/assignment", self.assignment_json), Route("/api/answer", self.answer, methods=["POST"]),
                Route("/done", self.done), Route("/images/{name}", self.image), Route("/admin", self.admin),
                Route("/admin.json", self.admin_json), Route("/health", self.health)]

    # ------------------------------------------------------------ participants

    def participant_of(self, request: Request) -> Optional[str]:
        return self.study.participant_from_cookie(request.cookies.get(COOKIE, ""))

    def with_cookie(self, response: Response, request: Request, pid: str) -> Response:
        response.set_cookie(COOKIE, self.study.cookie_value(pid), max_age=30 * 86400, httponly=True, samesite="lax",
                            secure=request.url.scheme == "https")
        return response

    async def entry(self, request: Request):
        q = request.query_params
        study_id = session_id = ""
        if "PROLIFIC_PID" in q:
            pid, source = q["PROLIFIC_PID"], "prolific"
            study_id, session_id = q.get("STUDY_ID", ""), q.get("SESSION_ID", "")
            if not all(valid_id(v) or v == "" for v in (study_id, session_id)):
                return refused("STUDY_ID and SESSION_ID must be short ids (letters, digits, - _ . @).")
        elif "participant" in q:
            pid, source = q["participant"], "lab"
        else:
            pid, source = self.participant_of(request) or f"p-{secrets.token_hex(6)}", "cookie"
        if not valid_id(pid):
            return refused("The participant id must be 1 to 64 letters, digits or - _ . @ characters.")
        study = self.study
        await run_in_threadpool(study.add_participant, pid, source, study_id, session_id)
        if await run_in_threadpool(study.active_assignment, pid):
            return self.with_cookie(RedirectResponse("task", status_code=303), request, pid)
        if await run_in_threadpool(study.completed_assignments, pid) >= self.hits_per_participant:
            return self.with_cookie(RedirectResponse("done", status_code=303), request, pid)
        body = (f"<h2>Before you start</h2>{self.consent_text}<h3>What you will do</h3>{INSTRUCTIONS[self.task]}"
                f'<form method="post" action="begin"><button type="submit" id="consent">I agree: start</button></form>')
        return self.with_cookie(page("Before you start", body), request, pid)

    async def begin(self, request: Request):
        pid = self.participant_of(request)
        if pid is None:
            return RedirectResponse(".", status_code=303)
        await run_in_threadpool(self.study.consent, pid)
        return RedirectResponse("task", status_code=303)

    async def current_assignment(self, pid: str):
        study = self.study
        a = await run_in_threadpool(study.active_assignment, pid)
        if a is None and await run_in_threadpool(study.completed_assignments, pid) < self.hits_per_participant:
            a = await run_in_threadpool(study.assign, pid)
        return a

    async def consented(self, request: Request) -> Optional[str]:
        """The participant of the request, if known and consented."""
        pid = self.participant_of(request)
        if pid is None or not await run_in_threadpool(self.study.has_consented, pid):
            return None
        return pid

    # ------------------------------------------------------------ the task

    async def task_page(self, request: Request):
        pid = await self.consented(request)
        if pid is None:
            return RedirectResponse(".", status_code=303)
        a = await self.current_assignment(pid)
        if a is None:
            if await run_in_threadpool(self.study.completed_assignments, pid):
                return RedirectResponse("done", status_code=303)
            return page("Thank you", "<p>Every part of this study has all the answers it needs: there is nothing "
                                     "left to do. Thank you for coming.</p>")
        # rendering 200 trials takes a few ms: off the event loop
        text = await run_in_threadpool(self.task_html, a)
        return HTMLResponse(text, headers={"Cache-Control": "no-store"})

    def task_html(self, a: dict) -> str:
        """The task page of the assignment's trials not yet answered, posting each answer as it is given."""
        trials = a["trials"]
        remaining = trials[a["answered"]:]
        row = {}
        for i, trial in enumerate(remaining, 1):
            row.update(trial_row(self.record, trial, i, self.images))
        config = {"token": a["token"], "offset": a["answered"], "total": len(trials), "answer_url": "api/answer",
                  "done_url": "done"}
        return render_served_layout(self.task, len(remaining), max(0, self.practice - a["answered"]), row, config)

    async def assignment_json(self, request: Request):
        pid = await self.consented(request)
        if pid is None:
            return JSONResponse({"error": "no participant: open the study URL and consent first"}, 403)
        a = await self.current_assignment(pid)
        if a is None:
            return JSONResponse({"assignment": None})
        return JSONResponse({"assignment": a["id"], "token": a["token"], "hit": a["hit"], "answered": a["answered"],
                             "task": self.task, "trials": [{"position": k, **t} for k, t in enumerate(a["trials"], 1)]})

    async def answer(self, request: Request):
        started = time.perf_counter()
        response = await self.take_answer(request)
        # the server's own share of the latency, for load tests (the client sees queueing on top)
        response.headers["Server-Timing"] = f"app;dur={1000 * (time.perf_counter() - started):.2f}"
        return response

    async def take_answer(self, request: Request):
        data = await answer_of(request)
        if isinstance(data, Response):
            return data
        try:
            result = await self.commit_answer(data)
        except AnswerRefused as exc:
            return JSONResponse({"error": exc.reason}, exc.status)
        if result is None:
            return JSONResponse({"error": "the database is busy; try again"}, 503)
        return JSONResponse({"ok": True, **result})

    async def commit_answer(self, data: dict) -> Optional[dict]:
        """Store one answer; its outcome, or None when the database did not commit it within a minute."""
        study = self.study
        job = study.answer_job(data["token"], data["position"], data["item"], data["response"],
                               data.get("rt_ms"), data.get("timing") or "")
        # no thread waits on the commit: the writer thread wakes this coroutine when it is done
        loop = asyncio.get_running_loop()
        committed = loop.create_future()

        def wake():
            loop.call_soon_threadsafe(lambda: committed.done() or committed.set_result(None))
        pending = study.submit(job, wake)
        try:
            await asyncio.wait_for(asyncio.shield(committed), 60)
        except asyncio.TimeoutError:
            return None
        value, exc = pending[0]
        if exc is not None:
            raise exc
        return study.answer_outcome(value)

    async def done(self, request: Request):
        pid = self.participant_of(request)
        study = self.study
        if pid is None or not await run_in_threadpool(study.completed_assignments, pid):
            return RedirectResponse(".", status_code=303)
        code = html.escape(study.completion_code)
        more = ""
        if await run_in_threadpool(study.completed_assignments, pid) < self.hits_per_participant:
            more = '<form method="post" action="begin"><button type="submit" id="another">Go on with another block</button></form>'
        if self.completion_url:
            target = html.escape(self.completion_url, quote=True)
            body = (f"<h2>Thank you</h2><p>All your answers are saved. Your completion code: <b id='code'>{code}</b></p>"
                    f"<p>Taking you back to <a id='complete' href=\"{target}\">the study platform</a>...</p>"
                    f"<script>setTimeout(function () {{ window.location.replace("
                    f"document.getElementById('complete').href); }}, 1500);</script>")
            return page("Thank you", body)
        body = (f"<h2>Thank you</h2><p>All your answers are saved. Your completion code: <b id='code'>{code}</b></p>"
                f"{more}")
        return page("Thank you", body)

    async def image(self, request: Request):
        name = request.path_params["name"]
        path = self.tasks_dir / "images" / name
        if not IMAGE_NAME.match(name) or not path.is_file():
            return Response("not found", 404)
        return FileResponse(path, media_type="image/png", headers={"Cache-Control": "public, max-age=86400"})

    # ------------------------------------------------------------ admin

    def admin_allowed(self, request: Request) -> bool:
        given = request.query_params.get("token", "")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return bool(given) and secrets.compare_digest(given.encode(), self.study.admin_token.encode())

    async def admin_json(self, request: Request):
        if not self.admin_allowed(request):
            return JSONResponse({"error": "the admin token printed at start is needed (?token= or Bearer)"}, 401)
        return JSONResponse(await run_in_threadpool(self.study.progress), headers={"Cache-Control": "no-store"})

    async def admin(self, request: Request):
        if not self.admin_allowed(request):
            return page("Admin", "<p>The admin token printed when the server started is needed: "
                                 "/admin?token=TOKEN.</p>", 401)
        p = await run_in_threadpool(self.study.progress)
        return page("Admin", admin_html(p), extra_head='<meta http-equiv="refresh" content="5">')

    async def health(self, request: Request):
        return JSONResponse({"ok": True})


async def answer_of(request: Request):
    """The answer object a request posts, or the error response that refuses it."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        return JSONResponse({"error": "send the answer as application/json"}, 415)
    try:
        body = await read_limited(request, MAX_BODY)
    except BodyTooLarge:
        return JSONResponse({"error": f"an answer is at most {MAX_BODY} bytes"}, 413)
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return JSONResponse({"error": "the body is not JSON"}, 400)
    if not isinstance(data, dict) or not {"token", "position", "item", "response"} <= set(data) \
            or set(data) - ANSWER_FIELDS:
        return JSONResponse({"error": "an answer is an object with token, position, item, response "
                                      "(and rt_ms, timing), nothing else"}, 400)
    return data


def admin_html(p: dict) -> str:
    """The admin page's body: progress of the HITs and one row per participant."""
    h, a = p["hits"], p["assignments"]
    per_example = ", ".join(f"{n} judgment(s): {k} example(s)" for n, k in p["judgments_per_example"].items())
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            x["participant"], x["source"], x["complete"], x["active"], x["answers"],
            f"{x['sentinel_accuracy']:.0%} of {x['sentinels']}" if x["sentinel_accuracy"] is not None else "-",
            x["median_rt_ms"] if x["median_rt_ms"] is not None else "-")) + "</tr>"
        for x in p["participants"])
    return (f"<h2>{html.escape(p['tasks'])} ({p['task']}), {p['judgments']} judgments per example</h2>"
            f"<p>HITs: <b>{h['done']}</b> done, <b>{h['in_progress']}</b> in progress, <b>{h['left']}</b> left "
            f"(of {h['total']}). Assignments: {a['complete']} complete, {a['active']} active, {a['released']} "
            f"released.</p><p>Test examples by answers so far: {html.escape(per_example)}</p>"
            f"<table><tr><th>participant</th><th>source</th><th>complete</th><th>active</th><th>answers</th>"
            f"<th>sentinels right</th><th>median ms per trial</th></tr>{rows}</table>")


def create_app(study: Study, tasks_dir, consent: Optional[str] = None, completion_url: Optional[str] = None,
               hits_per_participant: int = 1) -> Starlette:
    """The Starlette application serving `study`; tasks_dir holds its images/."""
    site = StudySite(study, tasks_dir, consent, completion_url, hits_per_participant)
    app = Starlette(routes=site.routes())
    app.add_middleware(SecurityHeaders)
    return app


def prepare_study(tasks, dataset, db=None, judgments=None, assignment_timeout=3600.0, completion_code=None,
                  completion_url=None, admin_token=None, synchronous="normal") -> tuple:
    """(study, tasks folder): the task set checked against the dataset (and recorded in it when it
    is not yet, so `ingest` knows its ids), the database opened or created."""
    from ..catalog import load_catalog
    from ..tasks import record_in_dataset

    record, folder = load_task_record(tasks)
    catalog = load_catalog(dataset, [folder / "tasks.json"])
    for (k, _name), new in catalog.new_records.items():
        record_in_dataset(catalog.subsets[k], new)
    if completion_url:
        if not re.match(r"^https?://[^\s\"'<>]+$", completion_url):
            raise StudyError(f"--completion-url {completion_url!r}: give an http(s) address")
        m = re.search(r"[?&]cc=([A-Za-z0-9_-]+)", completion_url)
        if m and completion_code and completion_code != m.group(1):
            raise StudyError(f"--completion-code {completion_code} differs from the cc= of --completion-url")
        completion_code = completion_code or (m.group(1) if m else None)
    db = Path(db) if db else Path("study.sqlite")
    study = Study(db, record, judgments, assignment_timeout, completion_code, admin_token, synchronous=synchronous)
    return study, folder


def run_server(tasks, dataset, host="127.0.0.1", port=8000, db=None, judgments=None, assignment_timeout=3600.0,
               consent=None, completion_url=None, completion_code=None, hits_per_participant=1, admin_token=None,
               synchronous="normal", log=print) -> None:
    """Serve a task set until interrupted (uvicorn, one process: the database has one writer)."""
    import uvicorn

    study, folder = prepare_study(tasks, dataset, db, judgments, assignment_timeout, completion_code,
                                  completion_url, admin_token, synchronous)
    app = create_app(study, folder, consent, completion_url, hits_per_participant)
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{port}/"
    p = study.progress()
    log(f"serving {study.record['name']} ({study.task}): {p['hits']['total']} HITs x {study.judgments} judgments; "
        f"{p['assignments']['complete']} assignments complete so far; database {study.path}")
    log(f"study URL: {base}   (Prolific: {base}?PROLIFIC_PID={{{{%PROLIFIC_PID%}}}}&STUDY_ID={{{{%STUDY_ID%}}}}"
        f"&SESSION_ID={{{{%SESSION_ID%}}}}; lab: {base}?participant=ID)")
    log(f"admin: {base}admin?token={study.admin_token}")
    log(f"completion code: {study.completion_code}" + (f", then to {completion_url}" if completion_url else ""))
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, proxy_headers=True,
                    timeout_graceful_shutdown=5)
    finally:
        study.close()
