"""`bapps-build serve`: host a task set yourself (lab sessions, Prolific) and keep every answer.

db.py (standard library only: sqlite3) holds the study: participants, assignments, one row per
answer committed on arrival; `ingest` reads it through db.snapshot_jsonl without the web
framework. app.py (Starlette on uvicorn, the `serve` extra) is the web side.
"""
