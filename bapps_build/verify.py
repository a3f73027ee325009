"""`bapps-build verify`: would the LPIPS loader pair this dataset's files correctly?

The loader lists each folder recursively, filters by extension, sorts by full path and
matches examples by position only. So every folder of a subset must hold exactly the same
stems, of one width, and nothing else with an image or .npy extension; and the files must
be the ones the manifest describes, whose every record follows the manifest's schema
(manifest.py, docs/manifest.md).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Set, Tuple

import numpy as np

from .files import sha256_file
from .layout import (IMAGE_FOLDERS, LABEL_FOLDERS, LOADER_IMAGE_EXTENSIONS, LOADER_LABEL_EXTENSIONS,
                     MANIFEST, find_subsets)
from .manifest import SCHEMA_VERSION, check_manifest
from .shards import is_shard_set, read_index, verify_shard_set

WATCHED = LOADER_IMAGE_EXTENSIONS + LOADER_LABEL_EXTENSIONS


def _folder_files(folder: Path, wanted_ext: str, problems: List[str]) -> Dict[str, Path]:
    """Stems of the folder's files with wanted_ext; anything else the loader would see is a problem."""
    stems = {}
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            lower = name.lower()
            if not lower.endswith(WATCHED):
                continue  # invisible to the loader (temp files, notes)
            path = Path(dirpath) / name
            rel = path.relative_to(folder.parent)
            if Path(dirpath) != folder:
                problems.append(f"{rel}: in a subfolder; the loader lists recursively and would mis-pair it")
            elif not name.endswith(wanted_ext):
                problems.append(f"{rel}: a {os.path.splitext(name)[1]} file in {folder.name}/, where only "
                                f"{wanted_ext} belongs; the loader would pair it with another example")
            else:
                stems[name[: -len(wanted_ext)]] = path
    return stems


SHOWN_INVALID = 5  # invalid manifest records named one by one; the rest are counted


def check_manifest_records(manifest: Path) -> Tuple[List[dict], int, List[str]]:
    """The records the schema accepts (current shape), how many records in all, and the
    problems: the first SHOWN_INVALID invalid records by line number, then how many more."""
    valid, count, invalid, problems = [], 0, 0, []
    for n, record, problem in check_manifest(manifest):
        count += 1
        if problem is None:
            valid.append(record)
            continue
        invalid += 1
        if invalid <= SHOWN_INVALID:
            problems.append(f"{MANIFEST}, line {n}: {problem}")
    if invalid > SHOWN_INVALID:
        problems.append(f"{MANIFEST}: {invalid - SHOWN_INVALID} more invalid record(s) "
                        f"(schema version {SCHEMA_VERSION}, see docs/manifest.md)")
    return valid, count, problems


def _verify_shards(task: str, path: Path) -> dict:
    problems: List[str] = []
    records = None
    if (path / MANIFEST).exists():
        records, _count, problems = check_manifest_records(path / MANIFEST)
    problems += verify_shard_set(path, task, IMAGE_FOLDERS[task], LABEL_FOLDERS[task], records)
    index = read_index(path)
    return {"path": str(path), "task": task, "examples": index["samples"],
            "files_checked": len(index["shards"]), "checked": "shard(s)", "problems": problems}


def _list_folders(task: str, path: Path, problems: List[str]) -> Dict[str, Dict[str, Path]]:
    """Per folder (images, and labels when present): stem -> file, as the loader pairs them."""
    folders = {f: ".png" for f in IMAGE_FOLDERS[task]}
    if (path / LABEL_FOLDERS[task]).is_dir():
        folders[LABEL_FOLDERS[task]] = ".npy"
    listing = {}
    for folder, ext in folders.items():
        if not (path / folder).is_dir():
            problems.append(f"{folder}/ is missing")
            continue
        listing[folder] = _folder_files(path / folder, ext, problems)
    return listing


def _check_stems(listing: Dict[str, Dict[str, Path]], problems: List[str]) -> Set[str]:
    """Every stem of the subset; the loader pairs by sorted position, so all folders need all
    of them, of one width, numeric."""
    all_stems = set().union(*[set(v) for v in listing.values()]) if listing else set()
    for folder, stems in listing.items():
        missing = sorted(all_stems - set(stems))
        if missing:
            problems.append(f"{folder}/ lacks {len(missing)} stem(s) the other folders have, e.g. {missing[:3]}")
    widths = {len(s) for s in all_stems}
    if len(widths) > 1:
        problems.append(f"stems of different widths {sorted(widths)}: sorted order would no longer be numeric")
    non_numeric = [s for s in all_stems if not s.isdigit()]
    if non_numeric:
        problems.append(f"{len(non_numeric)} stem(s) are not zero-padded numbers, e.g. {sorted(non_numeric)[:3]}")
    return all_stems


def _check_manifest(path: Path, listing, all_stems: Set[str], checksums: bool, problems: List[str]) -> int:
    """Schema, one record per example, files as recorded; returns how many files were hashed.
    Only records the schema accepts are compared with the files (the others are reported)."""
    manifest = path / MANIFEST
    if not manifest.exists():
        problems.append(f"{MANIFEST} is missing (unfinished build? run distort with --resume)")
        return 0
    records, count, invalid = check_manifest_records(manifest)
    problems += invalid
    checked = 0
    for record in records:
        stem = record["stem"]
        if stem not in all_stems:
            problems.append(f"manifest example {record.get('id', stem)} (stem {stem}) has no files")
            continue
        for folder, digest in record["files"].items():
            f = listing.get(folder, {}).get(stem)
            if f is None or not checksums:
                continue  # a missing file is reported above as a missing stem
            checked += 1
            if sha256_file(f) != digest:
                problems.append(f"{f.relative_to(path)}: content differs from the manifest's checksum")
    if count != len(all_stems):
        problems.append(f"the manifest has {count} example(s), the folders {len(all_stems)}")
    return checked


def _check_labels(path: Path, files: Dict[str, Path], problems: List[str]) -> None:
    for stem, f in sorted(files.items())[:100000]:
        try:
            value = np.load(f, allow_pickle=False)
        except Exception as exc:
            problems.append(f"{f.relative_to(path)}: not a readable .npy ({exc})")
            continue
        if value.size != 1 or not np.isfinite(value).all() or not 0.0 <= float(value.reshape(-1)[0]) <= 1.0:
            problems.append(f"{f.relative_to(path)}: must hold one fraction in [0, 1], holds {value!r}")


def verify_subset(task: str, path: Path, checksums: bool = True) -> dict:
    """What the loader would mis-pair in one subset folder, and what differs from its manifest."""
    if is_shard_set(path) and not (path / IMAGE_FOLDERS[task][0]).is_dir():
        return _verify_shards(task, path)
    problems: List[str] = []
    listing = _list_folders(task, path, problems)
    all_stems = _check_stems(listing, problems)
    checked = _check_manifest(path, listing, all_stems, checksums, problems)
    if LABEL_FOLDERS[task] in listing:
        _check_labels(path, listing[LABEL_FOLDERS[task]], problems)
    return {"path": str(path), "task": task, "examples": len(all_stems), "files_checked": checked,
            "checked": "files", "problems": problems}


def verify_dataset(root, checksums: bool = True) -> List[dict]:
    root = Path(root)
    subsets = find_subsets(root)
    if not subsets and (root / MANIFEST).exists():  # a subset folder given directly
        task = root.parent.parent.name
        return [verify_subset(task if task in IMAGE_FOLDERS else "2afc", root, checksums)]
    return [verify_subset(task, path, checksums) for task, _split, _sub, path in subsets]
