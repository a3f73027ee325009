"""Old option spellings that keep working after a rename, so that people's scripts do not break.

    @click.option("--subset", cls=RenamedOption, old=["--name"], required=True, ...)

accepts `--name superres` as `--subset superres`, prints a one-line deprecation warning to
stderr, and leaves `--name` out of `--help` and out of error messages (they name `--subset`).
"""
from __future__ import annotations

from typing import Sequence

import click

# every rename, for the tests and the docs: (command, old spelling, new spelling)
RENAMES = (
    ("real", "--name", "--subset"),
    ("distort", "--generators", "--bank"),
    ("apply", "--generators", "--bank"),
    ("preview", "--count", "--n"),
    ("generators sample", "--count", "--n"),
    ("generators preview", "--count", "--n"),
)


class RenamedOption(click.Option):
    """An option that also answers to its old spellings (`old`), hidden and with a warning."""

    def __init__(self, param_decls=None, old: Sequence[str] = (), **attrs):
        super().__init__(param_decls, **attrs)
        self.old = tuple(old)
        self._old_dest = f"{self.name}__old_spelling"

    def add_to_parser(self, parser, ctx: click.Context) -> None:
        super().add_to_parser(parser, ctx)
        if self.old:
            action = "append" if self.multiple else "store"
            parser.add_option(obj=self, opts=self.old, dest=self._old_dest, action=action, nargs=self.nargs)

    def consume_value(self, ctx: click.Context, opts):
        if self._old_dest in opts:
            new = self.opts[0]
            if self.name in opts:
                raise click.UsageError(f"{new} was given twice, also under its old name "
                                       f"{'/'.join(self.old)}; give {new} only", ctx=ctx)
            click.echo(f"warning: {'/'.join(self.old)} is deprecated and will be removed; use {new}", err=True)
            opts = {**opts, self.name: opts[self._old_dest]}
        return super().consume_value(ctx, opts)
