"""`bapps-build verify`: would the LPIPS loader pair this dataset's files correctly?

The loader lists each folder recursively, filters by extension, sorts by full path and
matches examples by position only. So every folder of a subset must hold exactly the same
stems, of one width, and nothing else with an image or .npy extension; and the files must
be the ones the manifest describes.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List

import numpy as np

import json

from .files import read_jsonl, sha256_file
from .shards import INDEX, is_shard_set, read_index, verify_shard_set
from .layout import (IMAGE_FOLDERS, LABEL_FOLDERS, LOADER_IMAGE_EXTENSIONS, LOADER_LABEL_EXTENSIONS,
                     MANIFEST, find_subsets)

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


def verify_subset(task: str, path: Path, checksums: bool = True) -> dict:
    if is_shard_set(path) and not (path / IMAGE_FOLDERS[task][0]).is_dir():
        records = list(read_jsonl(path / MANIFEST)) if (path / MANIFEST).exists() else None
        problems = verify_shard_set(path, task, IMAGE_FOLDERS[task], LABEL_FOLDERS[task], records)
        index = read_index(path)
        return {"path": str(path), "task": task, "examples": index["samples"],
                "files_checked": len(index["shards"]), "checked": "shard(s)", "problems": problems}
    problems: List[str] = []
    folders = {f: ".png" for f in IMAGE_FOLDERS[task]}
    label = LABEL_FOLDERS[task]
    if (path / label).is_dir():
        folders[label] = ".npy"
    listing = {}
    for folder, ext in folders.items():
        if not (path / folder).is_dir():
            problems.append(f"{folder}/ is missing")
            continue
        listing[folder] = _folder_files(path / folder, ext, problems)
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
    checked = 0
    manifest = path / MANIFEST
    if manifest.exists():
        records = 0
        for record in read_jsonl(manifest):
            records += 1
            stem = record["stem"]
            if stem not in all_stems:
                problems.append(f"manifest example {record['id']} (stem {stem}) has no files")
                continue
            for folder, digest in record.get("files", {}).items():
                f = listing.get(folder, {}).get(stem)
                if f is None:
                    continue  # reported above as a missing stem
                if checksums:
                    checked += 1
                    if sha256_file(f) != digest:
                        problems.append(f"{f.relative_to(path)}: content differs from the manifest's checksum")
        if records != len(all_stems):
            problems.append(f"the manifest has {records} example(s), the folders {len(all_stems)}")
    else:
        problems.append(f"{MANIFEST} is missing (unfinished build? run distort with --resume)")
    if label in listing:
        for stem, f in sorted(listing[label].items())[:100000]:
            try:
                value = np.load(f, allow_pickle=False)
            except Exception as exc:
                problems.append(f"{f.relative_to(path)}: not a readable .npy ({exc})")
                continue
            if value.size != 1 or not np.isfinite(value).all() or not 0.0 <= float(value.reshape(-1)[0]) <= 1.0:
                problems.append(f"{f.relative_to(path)}: must hold one fraction in [0, 1], holds {value!r}")
    return {"path": str(path), "task": task, "examples": len(all_stems), "files_checked": checked,
            "checked": "files", "problems": problems}


def verify_dataset(root, checksums: bool = True) -> List[dict]:
    root = Path(root)
    subsets = find_subsets(root)
    if not subsets and (root / MANIFEST).exists():  # a subset folder given directly
        task = root.parent.parent.name
        return [verify_subset(task if task in IMAGE_FOLDERS else "2afc", root, checksums)]
    return [verify_subset(task, path, checksums) for task, _split, _sub, path in subsets]
