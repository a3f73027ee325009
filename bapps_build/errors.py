"""Errors meant for people, shown as `Error: message` (exit status 1), not as a traceback."""
from __future__ import annotations

import functools
import os
import sys

import click


def _print_traceback(exc: BaseException) -> None:
    """A bug's traceback stays available: printed on request, with the worker's side when there is one."""
    import traceback

    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    detail = work_error_detail(exc)
    if detail:
        print("\nIn the worker:\n" + detail, file=sys.stderr)


MAX_LINE = 2000


def for_terminal(message: str) -> str:
    """A message as shown: each over-long line cut in the middle (a rejected 50 MB id is not echoed
    whole), and anything the terminal's encoding cannot show escaped (never a second error)."""
    lines = []
    for line in message.split("\n"):
        if len(line) > MAX_LINE:
            line = f"{line[:MAX_LINE // 2]} ...({len(line) - MAX_LINE:,} characters cut)... {line[-MAX_LINE // 2:]}"
        lines.append(line)
    text = "\n".join(lines)
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    return text.encode(encoding, "backslashreplace").decode(encoding, "replace")


def friendly_errors(people_errors):
    """A decorator for click commands: the given exception types become click errors.

    people_errors is a tuple of exception types, or a function returning one (so that a
    package can name its errors without importing its heavy modules up front).
    """

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            caught = people_errors() if callable(people_errors) else people_errors
            try:
                return fn(*args, **kwargs)
            except click.ClickException:
                raise
            except caught as exc:
                if os.environ.get(DEBUG_ENV):
                    _print_traceback(exc)
                raise click.ClickException(for_terminal(str(exc))) from None
            except WorkError as exc:
                if os.environ.get(DEBUG_ENV):
                    _print_traceback(exc)
                raise click.ClickException(for_terminal(f"{exc} (run with {DEBUG_ENV}=1 to see the traceback)")) from None

        return wrapper

    return decorate


# ---------------------------------------------------------------- failures inside units of work

MAX_MESSAGE = 500  # characters of a cause's message shown (a 50 MB id is not echoed whole)
DEBUG_ENV = "BAPPS_BUILD_DEBUG"


def shorten(text: str, limit: int = MAX_MESSAGE) -> str:
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters in all)"


class WorkError(Exception):
    """An exception raised inside a unit of work (any executor), carried to the driver with where it
    happened: the cause's type and message, and its full traceback as text (`detail`), since the
    worker's frames do not cross processes. Picklable by construction (strings only)."""

    def __init__(self, where: str, cause: BaseException = None, *, kind: str = "", message: str = "",
                 detail: str = "", places=None):
        if isinstance(cause, WorkError):
            places = [*cause.places, where]
            kind, message, detail = cause.kind, cause.message, cause.detail
        elif cause is not None:
            import traceback

            places = [where]
            kind = type(cause).__name__
            message = str(cause)
            detail = "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))
        self.places = list(places or [where])
        self.kind, self.message, self.detail = kind, message, detail
        super().__init__(str(self))

    @property
    def where(self) -> str:
        inner, *outer = [p for p in self.places if p] or ["a unit of work"]
        return inner + (f" ({'; '.join(reversed(outer))})" if outer else "")

    def __str__(self) -> str:
        return f"at {self.where}: {self.kind}: {shorten(self.message)}"

    def __reduce__(self):
        return (_rebuild_work_error, (self.places, self.kind, self.message, self.detail))


def _rebuild_work_error(places, kind, message, detail):
    return WorkError(places[0], kind=kind, message=message, detail=detail, places=places)


# causes that say what is wrong by themselves: no traceback hint
_PEOPLE_KINDS = {"BuildError", "SourceError", "UnusableSource", "ConfigError", "LockError", "ExportError",
                 "ShardError", "OSError", "PermissionError", "FileNotFoundError", "IsADirectoryError", "NotARegularFile",
                 "MemoryError"}


def describe_failure(exc: BaseException) -> str:
    """One line for people: what failed, where, and why (never an executor's internals)."""
    from concurrent.futures.process import BrokenProcessPool

    if isinstance(exc, WorkError):
        bug = exc.kind not in _PEOPLE_KINDS
        return str(exc) + (f" ({DEBUG_ENV}=1 shows the traceback)" if bug else "")
    if isinstance(exc, BrokenProcessPool):
        return ("a worker process died (killed, or out of memory) while working; the machine's log "
                "(dmesg) may say why")
    if type(exc).__name__ == "KilledWorker":
        return f"Dask workers died running the same unit again and again ({shorten(exc)}); see the workers' logs"
    return f"{type(exc).__name__}: {shorten(exc)}"


def work_error_detail(exc: BaseException) -> str:
    """The worker-side traceback text carried by a WorkError in exc's chain, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, WorkError) and exc.detail:
            return exc.detail
        exc = exc.__cause__ or exc.__context__
    return ""
