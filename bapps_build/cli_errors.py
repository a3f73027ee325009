"""How the command line shows errors: a user error as `Error: message`, a bug with its traceback.

Every command is wrapped by `friendly_errors`. It turns a UserError (errors.is_user_error:
also a missing file or a full disk) into click's `Error: message` (exit status 1); any other
exception goes on untouched, so Python prints its traceback: it is a bug. When a user error
was caused by a bug inside a worker (`the build stopped: at example 17 ...: KeyError: 'p0'`),
the worker's traceback is printed before the message. `--traceback` on the top-level group, or
BAPPS_BUILD_TRACEBACK=1, prints the traceback of user errors too.
"""
from __future__ import annotations

import functools
import sys
import traceback

import click

from .errors import TRACEBACK_ENV, WorkError, for_terminal, is_user_error, traceback_wanted, worker_bug

_TRACEBACK_KEY = "bapps_build.traceback"  # in click's context meta, shared by every sub-command


def _traceback_requested() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get(_TRACEBACK_KEY)) or traceback_wanted()


def _remember_traceback_flag(ctx: click.Context, _param, value: bool) -> bool:
    if value:
        ctx.meta[_TRACEBACK_KEY] = True
    return value


traceback_option = click.option(
    "--traceback", is_flag=True, expose_value=False, is_eager=True, callback=_remember_traceback_flag,
    help=f"Print the full traceback of an error, not only its message (or set {TRACEBACK_ENV}=1).")


def _print_traceback(exc: BaseException) -> None:
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)


def _show(exc: BaseException) -> click.ClickException:
    """What a command prints for a user error (or a worker's failure), as a click error."""
    bug = worker_bug(exc)
    if _traceback_requested():
        _print_traceback(exc)
    if bug:
        click.echo(for_terminal("In the worker (a bug; please report it with this traceback):\n" + bug.rstrip()),
                   err=True)
    return click.ClickException(for_terminal(str(exc)))


def friendly_errors(fn):
    """Decorator for click commands: user errors become `Error: message`; bugs keep their traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except WorkError as exc:  # a unit's failure that no job wrapped: a message, plus the worker's side
            raise _show(exc) from None
        except Exception as exc:
            if not is_user_error(exc):
                raise
            raise _show(exc) from None

    return wrapper
