"""Errors meant for people, shown as `Error: message` (exit status 1), not as a traceback."""
from __future__ import annotations

import functools

import click


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
                raise click.ClickException(str(exc)) from None

        return wrapper

    return decorate
