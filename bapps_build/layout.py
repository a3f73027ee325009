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
MAX_DATASET_FILE_BYTES = 256 * 2**20


def dataset_file(subset_path, folder: str, stem: str, ext: str = ".png") -> Path:
    """<subset>/<folder>/<stem><ext>, for a stem read from a manifest (which others may have written):
    refused (ValueError) unless the stem is a plain name and the file resolves inside its folder."""
    if not isinstance(stem, str) or not STEM_PATTERN.fullmatch(stem):
        shown = repr(stem) if len(repr(stem)) <= 100 else repr(stem)[:100] + "..."
        raise ValueError(f"{subset_path}: stem {shown} is not a plain name (letters, digits, _ and -); "
                         f"only the dataset's own files are read")
    base = Path(subset_path) / folder
    path = base / f"{stem}{ext}"
    real_base = base.resolve()
    if real_base not in path.resolve().parents:
        raise ValueError(f"{path} is a link that leads outside {base}; only the dataset's own files are read")
    return path


def read_dataset_file(subset_path, folder: str, stem: str, ext: str = ".png") -> bytes:
    """The bytes of a dataset's own file (see dataset_file): a regular file, at most 256 MB."""
    from .files import read_regular_file

    path = dataset_file(subset_path, folder, stem, ext)
    try:
        return read_regular_file(path, MAX_DATASET_FILE_BYTES)
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror or exc})") from None


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
