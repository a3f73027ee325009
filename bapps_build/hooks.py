"""What the packages above the core plug into it, so that the core never imports them.

`generators` and `judgments` sit on the core. Where the core needs something only they know, the
package registers it here when it is imported, as a distortion family registers itself:

- a shard field: per-example data a subset keeps beside its images and manifest (the judgment
  counts of `judgments`), which `export` carries in each shard sample's json under its key and
  writes back when shards become a tree again;
- a replay preparer: what must be set up before a subset's recipes can be replayed (the
  generator bank behind the family ``cnn``), given the settings recorded in its build.json.

The command line imports both packages. In a notebook, import the package whose data you work
with (``import judgments``, ``import generators``) and its hooks are there.

The functions given are sent to worker processes by reference: make them module-level functions.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Tuple

# a subset folder and its task -> {stem: JSON-able value} for the stems that have one
FieldReader = Callable[[Path, str], Dict[str, object]]
# a subset folder, its task and [(stem, value)] in example order -> writes the data back
FieldWriter = Callable[[Path, str, List[Tuple[str, object]]], None]
# the settings of a subset's build.json -> registers what its recipes need (or nothing)
ReplayPreparer = Callable[[dict], None]

RESERVED_KEYS = ("recipe",)  # what export itself writes into a sample's json


@dataclass(frozen=True)
class ShardField:
    """Per-example data carried through shards under `key`."""

    key: str
    read: FieldReader
    write: FieldWriter


_SHARD_FIELDS: Dict[str, ShardField] = {}
_REPLAY_PREPARERS: Dict[str, ReplayPreparer] = {}


def register_shard_field(field: ShardField) -> ShardField:
    """Carry `field` through shards; registering its key again replaces it (a re-import)."""
    if field.key in RESERVED_KEYS:
        raise ValueError(f"the shard field key {field.key!r} is export's own; choose another")
    _SHARD_FIELDS[field.key] = field
    return field


def shard_fields() -> List[ShardField]:
    """The registered shard fields, in registration order."""
    return list(_SHARD_FIELDS.values())


def register_replay_preparer(name: str, prepare: ReplayPreparer) -> ReplayPreparer:
    """Run prepare(settings) before a subset is replayed; `name` (the package) makes it idempotent."""
    _REPLAY_PREPARERS[name] = prepare
    return prepare


def replay_preparers() -> List[ReplayPreparer]:
    return list(_REPLAY_PREPARERS.values())
