"""What an item id in a results file means: a test example of a subset, a sentinel, a practice trial.

Two kinds of ids reach the ingester:
- direct ids, `<task>/<split>/<subset>/<stem>` (e.g. `2afc/val/traditional/000123`), which a
  lab study or own web page can use in the generic format;
- opaque trial ids (`q` + 12 hex digits) that `bapps-build tasks` puts in the hidden inputs of
  crowd pages, so a worker reading the page source cannot tell a sentinel from a test trial.
  Each task set records what its ids mean in `<subset>/judgments/tasks/<name>.json`.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from bapps_build.errors import UserError
from bapps_build.layout import IMAGE_FOLDERS, LABEL_FOLDERS, MANIFEST, STEM_PATTERN, find_subsets
from bapps_build.subsets import resolve_subset as core_resolve_subset
from bapps_build.manifest import read_manifest

JUDGMENTS_DIR = "judgments"  # beside ref/ p0/ p1/: the LPIPS loader never lists it
TASKS_DIR = "tasks"

KIND_TEST, KIND_SENTINEL, KIND_PRACTICE = 0, 1, 2
KIND_NAMES = {KIND_TEST: "test", KIND_SENTINEL: "sentinel", KIND_PRACTICE: "practice"}
# expected answers of sentinels, in the value space of the labels: 2AFC 1 = p1, JND 1 = "same"
EXPECTED_VALUES = {"p0": 0, "p1": 1, "different": 0, "same": 1}


class CatalogError(UserError, ValueError):
    """The dataset or a task record is not what the ingester needs; the message says what to do."""


def opaque_id(name: str, seed: int, what: str) -> str:
    """A trial id that reveals nothing about the trial (sentinel or not) but is stable for a task set."""
    return "q" + hashlib.sha256(f"{name}\0{seed}\0{what}".encode()).hexdigest()[:12]


@dataclass
class Subset:
    """One BAPPS subset folder and the example stems it holds, in id order."""

    task: str
    rel: str  # "<task>/<split>/<subset>"
    path: Path
    stems: List[str]
    index_of: Dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        self.index_of = {s: i for i, s in enumerate(self.stems)}

    @property
    def label_folder(self) -> str:
        return LABEL_FOLDERS[self.task]

    @property
    def store(self) -> Path:
        return self.path / JUDGMENTS_DIR


def subset_stems(path: Path, task: str) -> List[str]:
    """Example stems in manifest order; without a manifest, those of the first image folder."""
    manifest = path / MANIFEST
    if manifest.exists():
        stems = []
        for n, record in enumerate(read_manifest(manifest), 1):
            stem = record.get("stem")
            # a stem becomes a file name (images read, labels written): only a plain name is one
            if not isinstance(stem, str) or not STEM_PATTERN.fullmatch(stem):
                raise CatalogError(f"{manifest}, record {n}: the stem {str(stem)[:100]!r} is not a plain name "
                                   f"(letters, digits, _ and -); only the dataset's own files are read or "
                                   f"written. Fix or rebuild the manifest.")
            stems.append(stem)
        return stems
    folder = path / IMAGE_FOLDERS[task][0]
    return sorted(os.path.splitext(n)[0] for n in os.listdir(folder) if n.endswith(".png"))


def load_subset(path, root=None) -> Subset:
    path = Path(path).resolve()
    task = path.parent.parent.name
    if task not in IMAGE_FOLDERS:
        raise CatalogError(f"{path} is not a BAPPS subset folder (<root>/<task>/<split>/<subset>, "
                           f"task 2afc or jnd)")
    rel = f"{task}/{path.parent.name}/{path.name}"
    return Subset(task, rel, path, subset_stems(path, task))


def dataset_subsets(root) -> List[Subset]:
    """Every subset under a dataset root, or the one subset when root is a subset folder."""
    root = Path(root)
    found = find_subsets(root)
    if not found and ((root / MANIFEST).exists() or (root / "build.json").exists()):
        return [load_subset(root)]
    return [load_subset(p) for _t, _s, _n, p in found]


def resolve_subset(root, subset: Optional[str] = None) -> Subset:
    """The subset `--subset` names (bare NAME or TASK/SPLIT/SUBSET; see bapps_build.subsets), loaded."""
    return load_subset(core_resolve_subset(root, subset))


@dataclass(frozen=True)
class Target:
    """What one item id stands for."""

    subset: int  # index into Catalog.subsets
    kind: int  # KIND_TEST / KIND_SENTINEL / KIND_PRACTICE
    example: int  # example index within the subset (test), else -1
    expected: int  # sentinel's expected value (1 = p1 / same), else -1
    tasks_name: str  # the task set it came from ("" for direct ids)


class Catalog:
    """All item ids a dataset knows: direct example ids and every recorded task set's trial ids."""

    def __init__(self, subsets: List[Subset]):
        self.subsets = subsets
        self.by_rel = {s.rel: i for i, s in enumerate(subsets)}
        self.targets: Dict[str, Target] = {}
        self.task_records: Dict[Tuple[int, str], dict] = {}  # (subset, name) -> record
        self.new_records: Dict[Tuple[int, str], dict] = {}  # given with --tasks, not yet in the dataset
        self.sides: Dict[str, str] = {}  # 2AFC trial id -> the side p0 was shown on, where the record says

    def add_task_record(self, record: dict, origin: str, new: bool = False) -> None:
        rel = record.get("subset")
        if rel not in self.by_rel:
            raise CatalogError(f"{origin}: made for subset {rel!r}, which this dataset does not have "
                               f"(it has {', '.join(self.by_rel) or 'none'})")
        k = self.by_rel[rel]
        subset = self.subsets[k]
        name = record["name"]
        old = self.task_records.get((k, name))
        if old is not None:
            if old.get("items") != record.get("items"):
                raise CatalogError(f"{origin}: a different task set named {name!r} is already recorded in "
                                   f"{subset.store / TASKS_DIR}; the two cannot both be right")
            return
        self.task_records[(k, name)] = record
        if new:
            self.new_records[(k, name)] = record
        for item_id, info in record["items"].items():
            kind = info["kind"]
            if info.get("p0side") in ("left", "right"):
                self.sides[item_id] = info["p0side"]
            if kind == "test":
                stem = info["stem"]
                if stem not in subset.index_of:
                    raise CatalogError(f"{origin}: item {item_id} is example {stem}, which {subset.rel} "
                                       f"does not have (was the subset rebuilt with fewer examples?)")
                target = Target(k, KIND_TEST, subset.index_of[stem], -1, name)
            elif kind == "sentinel":
                target = Target(k, KIND_SENTINEL, -1, EXPECTED_VALUES[info["expected"]], name)
            else:
                target = Target(k, KIND_PRACTICE, -1, -1, name)
            self.targets[item_id] = target

    def resolve(self, item: str) -> Optional[Target]:
        """The target of an item id, or None when the dataset has no such item."""
        target = self.targets.get(item)
        if target is not None:
            return target
        rel, _, stem = item.rpartition("/")
        k = self.by_rel.get(rel)
        if k is None:
            return None
        example = self.subsets[k].index_of.get(stem)
        if example is None:
            return None
        target = Target(k, KIND_TEST, example, -1, "")
        self.targets[item] = target  # later rows of the same example skip the parsing
        return target


def load_catalog(root, extra_task_files=()) -> Catalog:
    """Every subset of a dataset and every task set recorded in it (+ task files given explicitly)."""
    subsets = dataset_subsets(root)
    if not subsets:
        raise CatalogError(f"{root} holds no BAPPS subset (<task>/<split>/<subset>/ with a manifest.jsonl)")
    catalog = Catalog(subsets)
    for subset in subsets:
        folder = subset.store / TASKS_DIR
        if folder.is_dir():
            for f in sorted(folder.glob("*.json")):
                catalog.add_task_record(read_task_record(f), str(f))
    for f in extra_task_files:
        f = Path(f)
        if f.is_dir():
            f = f / "tasks.json"
        catalog.add_task_record(read_task_record(f), str(f), new=True)
    return catalog


def read_task_record(path) -> dict:
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogError(f"{path}: no such task file (give the TASKS folder `bapps-build tasks` wrote, "
                           f"or its tasks.json)") from None
    except json.JSONDecodeError as exc:
        raise CatalogError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    for key in ("name", "subset", "task", "items"):
        if key not in record:
            raise CatalogError(f"{path}: not a task record of `bapps-build tasks` (no {key!r})")
    return record
