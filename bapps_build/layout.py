"""Where things go in a BAPPS tree, and how the LPIPS loader will see it.

    <root>/2afc/<split>/<subset>/{ref,p0,p1,judge}/NNNNNN.{png,npy}
    <root>/jnd/<split>/<subset>/{p0,p1,same}/NNNNNN.{png,npy}

Beside the folders of a subset: manifest.jsonl (one recipe per example), build.json (the
settings, for --resume), report.json (the summary), sources.json (what the scan found).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import List, Tuple

TASKS = ("2afc", "jnd")
IMAGE_FOLDERS = {"2afc": ("ref", "p0", "p1"), "jnd": ("p0", "p1")}
LABEL_FOLDERS = {"2afc": "judge", "jnd": "same"}
# what richzhang/PerceptualSimilarity's loader lists (data/image_folder.py)
LOADER_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".ppm", ".bmp")
LOADER_LABEL_EXTENSIONS = (".npy",)

MANIFEST = "manifest.jsonl"
BUILD = "build.json"
REPORT = "report.json"
SOURCES = "sources.json"
PARTS = ".parts"
STEM_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")  # an example's stem: no dots, separators or `..`


def image_folders(task: str) -> Tuple[str, ...]:
    """The image folders of a subset of `task`, the reference's first."""
    return IMAGE_FOLDERS[task]


def reference_folder(task: str) -> str:
    """Where a subset keeps its undistorted patches (JND: p0 is the reference, shown first)."""
    return IMAGE_FOLDERS[task][0]


def subset_dir(root, task: str, split: str, subset: str) -> Path:
    return Path(root) / task / split / subset


def stem_width(n: int) -> int:
    """Zero-padded stems of one width (lexicographic order = numeric order); at least 6."""
    return max(6, len(str(max(n - 1, 0))))


def stem(index: int, width: int) -> str:
    return f"{index:0{width}d}"


def find_subsets(root) -> List[Tuple[str, str, str, Path]]:
    """Every (task, split, subset, path) under a dataset root that holds a build or images."""
    root = Path(root)
    found = []
    for task in TASKS:
        for split_dir in sorted((root / task).glob("*")):
            for sub in sorted(split_dir.glob("*")):
                if sub.is_dir() and ((sub / BUILD).exists() or (sub / MANIFEST).exists() or (sub / "index.json").exists()
                                     or any((sub / f).is_dir() for f in IMAGE_FOLDERS[task])):
                    found.append((task, split_dir.name, sub.name, sub))
    return found
