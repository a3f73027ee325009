"""Errors meant for people, and failures carried back from units of work.

A person's mistake (a setting, an input file, a missing extra) is a `UserError`, raised on
purpose; the command line shows it as `Error: message` (exit status 1). Anything else is a
bug and keeps its traceback. Conditions of the machine (a missing file, a full disk, no
memory: OSError, MemoryError) are shown like user errors, since no code is wrong.
This module imports no click: the core raises these; the command line's side is cli_errors.
"""
from __future__ import annotations

import os
import sys

from distortions.errors import UserError

__all__ = ["UserError", "ConfigError", "InputFileError", "MissingExtra", "is_user_error", "traceback_wanted", "for_terminal",
           "WorkError", "describe_failure", "work_error_detail", "worker_bug"]


class ConfigError(UserError, ValueError):
    """A setting that makes no sense; the message names the option."""


class InputFileError(UserError, ValueError):
    """A file given to a command (a manifest, an index, a results file) that cannot be read as what it
    should be; the message names the file and the line or field."""


class MissingExtra(UserError, RuntimeError):
    """An optional dependency a command needs is not installed; the message says what to install."""


# not a mistake in code: shown as a message, like a UserError
ENVIRONMENT_ERRORS = (OSError, MemoryError)


def is_user_error(exc: BaseException) -> bool:
    """Whether exc is for people (a message says it all) rather than a bug (a traceback is needed)."""
    return isinstance(exc, (UserError,) + ENVIRONMENT_ERRORS)


TRACEBACK_ENV = "BAPPS_BUILD_TRACEBACK"
OLD_TRACEBACK_ENV = "BAPPS_BUILD_DEBUG"  # its first name, still honoured


def traceback_wanted() -> bool:
    """BAPPS_BUILD_TRACEBACK=1 (or the older BAPPS_BUILD_DEBUG=1): show user errors' tracebacks too."""
    return any(os.environ.get(name, "") not in ("", "0") for name in (TRACEBACK_ENV, OLD_TRACEBACK_ENV))


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


# ---------------------------------------------------------------- failures inside units of work

MAX_MESSAGE = 500  # characters of a cause's message shown (a 50 MB id is not echoed whole)


def shorten(text: str, limit: int = MAX_MESSAGE) -> str:
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters in all)"


class WorkError(Exception):
    """An exception raised inside a unit of work (any executor), carried to the driver with where it
    happened: the cause's type and message, whether it was meant for people (`user_error`: a
    UserError or a condition of the machine; otherwise a bug), and its full traceback as text
    (`detail`), since the worker's frames do not cross processes. Picklable (strings and a bool)."""

    def __init__(self, where: str, cause: BaseException = None, *, kind: str = "", message: str = "",
                 detail: str = "", places=None, user_error: bool = False):
        if isinstance(cause, WorkError):
            places = [*cause.places, where]
            kind, message, detail, user_error = cause.kind, cause.message, cause.detail, cause.user_error
        elif cause is not None:
            import traceback

            places = [where]
            kind = type(cause).__name__
            message = str(cause)
            detail = "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))
            user_error = is_user_error(cause)
        self.places = list(places or [where])
        self.kind, self.message, self.detail, self.user_error = kind, message, detail, user_error
        super().__init__(str(self))

    @property
    def where(self) -> str:
        inner, *outer = [p for p in self.places if p] or ["a unit of work"]
        return inner + (f" ({'; '.join(reversed(outer))})" if outer else "")

    def __str__(self) -> str:
        return f"at {self.where}: {self.kind}: {shorten(self.message)}"

    def __reduce__(self):
        return (_rebuild_work_error, (self.places, self.kind, self.message, self.detail, self.user_error))


def _rebuild_work_error(places, kind, message, detail, user_error=False):
    return WorkError(places[0], kind=kind, message=message, detail=detail, places=places, user_error=user_error)


def describe_failure(exc: BaseException) -> str:
    """One line for people: what failed, where, and why (never an executor's internals)."""
    from concurrent.futures.process import BrokenProcessPool

    if isinstance(exc, WorkError):
        return str(exc)
    if isinstance(exc, BrokenProcessPool):
        return ("a worker process died (killed, or out of memory) while working; the machine's log "
                "(dmesg) may say why")
    if type(exc).__name__ == "KilledWorker":
        return f"Dask workers died running the same unit again and again ({shorten(exc)}); see the workers' logs"
    return f"{type(exc).__name__}: {shorten(exc)}"


def _chain(exc: BaseException):
    """exc and the exceptions it was raised from or during, innermost last."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def work_error_detail(exc: BaseException) -> str:
    """The worker-side traceback text carried by a WorkError in exc's chain, if any."""
    for e in _chain(exc):
        if isinstance(e, WorkError) and e.detail:
            return e.detail
    return ""


def worker_bug(exc: BaseException) -> str:
    """The worker's traceback when exc (a user error such as `the build stopped: ...`) was caused
    by a bug inside a unit of work; "" when the cause was meant for people, or there is none."""
    for e in _chain(exc):
        if isinstance(e, WorkError):
            return "" if e.user_error else (e.detail or f"{e.kind}: {e.message}")
    return ""
