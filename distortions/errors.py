"""Errors meant for people, and the one base class every package's such errors share.

`UserError` is defined here, in the bottom layer, because every package (the core of
bapps_build, generators, judgments) already imports `distortions` and nothing here imports
them: one base class, reachable from every raiser without an upward import. The command line
shows a UserError as `Error: message`; any other exception is a bug and keeps its traceback.
`bapps_build.errors` re-exports it as the name the rest of the project uses.
"""
from __future__ import annotations


class UserError(Exception):
    """Raised on purpose for something a person can fix (a setting, an input file, a missing
    extra); the message says what was wrong and what to do."""


class UnknownFamilyError(UserError, KeyError):
    """No distortion family of that name (KeyError: it is a failed look-up)."""

    def __str__(self):  # KeyError quotes its message; people read this one
        return self.args[0]


class ChainSpecError(UserError, ValueError):
    """A chain spec or a severity that cannot be applied as written."""


class FamilyError(UserError, ValueError):
    """A family that cannot be registered (its name, or a second family of that name)."""


class PluginError(UserError, RuntimeError):
    """A plugin file that failed to import or defined no family."""


class CalibrationError(UserError, ValueError):
    """A calibration file or map that is not one."""
