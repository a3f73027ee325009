"""The manifest (manifest.jsonl): one record per example, read and checked in one place.

Every record follows one JSON Schema, shipped with the package (schemas/manifest.schema.json,
described in docs/manifest.md). Its version is SCHEMA_VERSION, also the last word of the
schema's $id. In version 2, p0 and p1 are a list of steps ``{"family", "params", ...}`` for
every kind of example; a real-algorithm side is one step of family "real" whose params name
the algorithm's output. Version 1 (real subsets built before the schema) wrote each real side
as one object ``{"algorithm", "path", "sha256"}``. The two shapes differ in JSON type, so a
record needs no version marker: upgrade_record turns a version 1 record into version 2, and
every reader goes through read_manifest / parse_record, which upgrade as they read.
"""
from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path
from typing import Iterator, Optional, Tuple

from .errors import UserError

SCHEMA_VERSION = 2
SCHEMA_FILE = "manifest.schema.json"
REAL_FAMILY = "real"  # the family name of a real-algorithm step (not a distortion family)
SIDES = ("p0", "p1")


class ManifestError(UserError, ValueError):
    """A manifest line that is not a record (not JSON, or not a JSON object)."""


# ---------------------------------------------------------------- the record's shape


def real_step(algorithm: str, path: str, sha256: str) -> dict:
    """A real-algorithm side's only step: the output of `algorithm` for the reference photo."""
    return {"family": REAL_FAMILY, "params": {"algorithm": algorithm, "path": path, "sha256": sha256}}


def real_output(side) -> dict:
    """{algorithm, path, sha256} of a real-algorithm side (a list of one "real" step)."""
    return side[0]["params"]


def is_real_side(side) -> bool:
    return bool(side) and side[0].get("family") == REAL_FAMILY


def upgrade_record(record):
    """The record in the current schema's shape: a version 1 real record's p0/p1 objects
    become one-step lists. Anything else is returned as it is (the same object); the input
    is never modified."""
    if not isinstance(record, dict) or record.get("kind") != REAL_FAMILY:
        return record
    old = [side for side in SIDES if isinstance(record.get(side), dict)]
    if not old:
        return record
    upgraded = dict(record)
    for side in old:
        upgraded[side] = [{"family": REAL_FAMILY, "params": record[side]}]
    return upgraded


# ---------------------------------------------------------------- reading


def numbered_lines(path) -> Iterator[Tuple[int, str]]:
    """(line number from 1, text) of each non-blank line of a manifest."""
    with open(path, "r", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if line:
                yield n, line


def load_record(line) -> dict:
    """One manifest line (str or bytes) as the JSON object it holds, exactly as stored."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"not valid JSON ({exc.msg})") from None
    if not isinstance(record, dict):
        raise ManifestError(f"not a record (a JSON object) but {_json_type(record)}")
    return record


def parse_record(line: str) -> dict:
    """One manifest line as a record of the current schema (not validated: see record_problem)."""
    return upgrade_record(load_record(line))


def read_manifest(path) -> Iterator[dict]:
    """Every record of a manifest in file order, in the current schema's shape."""
    for n, line in numbered_lines(path):
        try:
            yield parse_record(line)
        except ManifestError as exc:
            raise ManifestError(f"{path}, line {n}: {exc}; the manifest is damaged") from None


def find_record(path, example_id: int) -> Optional[dict]:
    """The record with this id, or None. Records of our builds are in id order, one per
    line, so line `id` is tried first; any other layout is searched."""
    with open(path, "r", encoding="utf-8") as f:
        for n, line in enumerate(f):
            if n == example_id:
                try:
                    record = parse_record(line)
                except ManifestError:
                    break  # read_manifest below names the line
                if record.get("id") == example_id:
                    return record
                break
    return next((r for r in read_manifest(path) if r.get("id") == example_id), None)


# ---------------------------------------------------------------- checking against the schema


@functools.lru_cache(maxsize=1)
def load_schema() -> dict:
    """The manifest's JSON Schema (draft 2020-12), as shipped in the package."""
    return json.loads((resources.files("bapps_build") / "schemas" / SCHEMA_FILE).read_text("utf-8"))


@functools.lru_cache(maxsize=1)
def _validator():
    from jsonschema import Draft202012Validator  # only where records are checked

    return Draft202012Validator(load_schema())


def record_problem(record) -> Optional[str]:
    """What is wrong with a record (after upgrade_record) in plain words, or None when the
    schema accepts it. When several things are wrong, the most telling one."""
    from jsonschema.exceptions import best_match

    error = best_match(_validator().iter_errors(record))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{where}: {_plain(error)}" if where else _plain(error)


_TYPE_WORDS = {"array": "a list", "object": "an object", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "true or false", "null": "null"}


def _json_type(value) -> str:
    if isinstance(value, bool):
        return "true or false"
    for kind, words in (((list, tuple), "a list"), (dict, "an object"), (str, "a string"), (int, "an integer"),
                        (float, "a number"), (type(None), "null")):
        if isinstance(value, kind):
            return words
    return type(value).__name__


def _plain(error) -> str:
    """The schema's complaint in words a person reads without knowing JSON Schema."""
    kind, expected, value = error.validator, error.validator_value, error.instance
    if kind == "required" and isinstance(value, dict):
        missing = [k for k in expected if k not in value]
        return f"lacks the field{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}"
    if kind == "type":
        wanted = " or ".join(_TYPE_WORDS.get(t, t) for t in ([expected] if isinstance(expected, str) else expected))
        return f"is {_json_type(value)} where the schema wants {wanted}"
    if kind == "additionalProperties" and isinstance(value, dict):
        known = set(error.schema.get("properties", {}))
        return f"has field(s) the schema does not know: {', '.join(repr(k) for k in value if k not in known)}"
    if kind in ("const", "enum"):
        allowed = [expected] if kind == "const" else expected
        return f"is {_short(value)}, must be {' or '.join(_short(a) for a in allowed)}"
    if kind == "not":
        return f"is {_short(value)}, which is not allowed here"
    if kind in ("minItems", "maxItems"):
        return f"has {len(value)} item(s), the schema wants {'at least' if kind == 'minItems' else 'at most'} {expected}"
    return error.message if len(error.message) <= 300 else error.message[:300] + "..."


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:80] + "..."


def check_manifest(path) -> Iterator[Tuple[int, Optional[dict], Optional[str]]]:
    """(line number, record or None, problem or None) for each line of a manifest: the record
    in the current shape and what the schema says is wrong with it; a line that is not a
    record has no record and says why."""
    for n, line in numbered_lines(Path(path)):
        try:
            record = parse_record(line)
        except ManifestError as exc:
            yield n, None, str(exc)
            continue
        yield n, record, record_problem(record)
