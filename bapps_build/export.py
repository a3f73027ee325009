"""`bapps-build export`: a BAPPS tree to WebDataset shards, and shards back to a tree.

Tree -> shards: every subset under DIR becomes OUT/<task>/<split>/<subset>/
NAME-000000.tar ... plus index.json (counts and checksums) and the manifest. A sample is
the example's stem (the key) with ref.png, p0.png, p1.png (JND: p0.png, p1.png), the label
(judge.npy / same.npy) when there is one, and json: {"recipe": ..., "counts": ...}. The
PNG bytes are the tree's own bytes, untouched. A tree without a manifest (the released
BAPPS, say) exports too, its json then holding only the stem.

Shards -> tree: the reverse, optionally storing the images at --stored-size (the released
BAPPS files are 256x256; the loader resizes them to 64).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from .executors import default_workers, run_units
from .files import decode_png, encode_png, sha256_bytes, write_atomic
from .jobs import BuildError, progress_bar
from .layout import IMAGE_FOLDERS, LABEL_FOLDERS, MANIFEST, find_subsets
from .shards import INDEX, json_bytes, read_shard, shard_file_name, write_index, write_shard


@dataclass
class ExportUnit:
    """One subset to export: where it is, where it goes, and how it is cut into shards."""

    task: str
    split: str
    subset: str
    source: str
    target: str
    maxcount: int
    n: int
    has_manifest: bool
    stems: Optional[List[str]] = None  # when there is no manifest: the sorted stems of the tree

    @property
    def name(self) -> str:
        return f"{self.task}-{self.split}-{self.subset}"

    @property
    def n_shards(self) -> int:
        return -(-self.n // self.maxcount)


def _records(unit: ExportUnit, start: int, stop: int):
    """Manifest records start..stop-1 (parsing only those lines)."""
    if not unit.has_manifest:
        for s in unit.stems[start:stop]:
            yield {"stem": s}
        return
    with open(Path(unit.source) / MANIFEST, "rb") as f:
        for n, line in enumerate(f):
            if n >= stop:
                break
            if n >= start:
                yield json.loads(line)


def _counts(subset_path: Path, task: str) -> Dict[str, dict]:
    """Per-stem judgment counts when the subset has been judged (`bapps-build ingest`)."""
    from judgments.store import COUNTS, read_counts

    counts = read_counts(Path(subset_path) / "judgments" / COUNTS) or {}
    positive = "n_same" if task == "jnd" else "n_p1"
    return {stem: {positive: p, "n_total": t} for stem, (p, t) in counts.items()}


def _write_counts(subset_path: Path, task: str, records: List[dict]) -> None:
    """Restore judgments/counts.csv from the counts the shards carried."""
    from judgments.store import COUNTS, counts_text

    judged = [r for r in records if r.get("counts")]
    if not judged:
        return
    positive = "n_same" if task == "jnd" else "n_p1"
    folder = Path(subset_path) / "judgments"
    folder.mkdir(exist_ok=True)
    text = counts_text([r["stem"] for r in judged], np.array([r["counts"][positive] for r in judged]),
                       np.array([r["counts"]["n_total"] for r in judged]), positive)
    write_atomic(folder / COUNTS, text.encode("utf-8"))


def _export_shard(context, k, progress):
    units, unit_of_shard = context
    u_index, shard = unit_of_shard[k]
    unit = units[u_index]
    src = Path(unit.source)
    folders = IMAGE_FOLDERS[unit.task]
    label = LABEL_FOLDERS[unit.task]
    has_labels = (src / label).is_dir()
    counts = _counts(src, unit.task)
    start, stop = shard * unit.maxcount, min((shard + 1) * unit.maxcount, unit.n)

    def samples():
        for record in _records(unit, start, stop):
            stem = record["stem"]
            fields = {f"{f}.png": (src / f / f"{stem}.png").read_bytes() for f in folders}
            if has_labels:
                fields[f"{label}.npy"] = (src / label / f"{stem}.npy").read_bytes()
            meta = {"recipe": record}
            if stem in counts:
                meta["counts"] = counts[stem]
            fields["json"] = json_bytes(meta)
            yield stem, fields

    info = write_shard(Path(unit.target) / shard_file_name(unit.name, shard), samples())
    progress(info["samples"])
    return {"unit": u_index, "shard": shard, "info": info}


def _plan_tree(source: Path, target: Path, maxcount: int) -> List[ExportUnit]:
    units = []
    for task, split, subset, path in find_subsets(source):
        if (path / INDEX).exists() and not (path / IMAGE_FOLDERS[task][0]).is_dir():
            continue  # already shards
        has_manifest = (path / MANIFEST).exists()
        stems = None
        if has_manifest:
            with open(path / MANIFEST, "rb") as f:
                n = sum(1 for _ in f)
        else:
            first = path / IMAGE_FOLDERS[task][0]
            stems = sorted(p.stem for p in first.iterdir() if p.suffix == ".png")
            n = len(stems)
        if n == 0:
            continue
        units.append(ExportUnit(task, split, subset, str(path), str(target / task / split / subset), maxcount, n,
                                has_manifest, stems))
    return units


def export_to_shards(source, target, *, maxcount: int = 2000, workers: Optional[int] = None,
                     executor: str = "local", scheduler: Optional[str] = None, progress: bool = True) -> dict:
    """Every subset of a BAPPS tree to WebDataset shards; returns a summary."""
    source, target = Path(source), Path(target)
    units = _plan_tree(source, target, maxcount)
    if not units:
        raise BuildError(f"{source} holds no BAPPS subset to export (<task>/<split>/<subset>/ with image folders)")
    for u in units:
        t = Path(u.target)
        if t.exists() and any(t.iterdir()):
            raise BuildError(f"{t} is not empty; export into a new --out")
        t.mkdir(parents=True, exist_ok=True)
    unit_of_shard = [(i, k) for i, u in enumerate(units) for k in range(u.n_shards)]
    total = sum(u.n for u in units)
    bar = progress_bar(total, "export", "ex", progress)
    results: List[dict] = []
    started = time.time()
    run_units(_export_shard, (units, unit_of_shard), range(len(unit_of_shard)), workers=workers or default_workers(),
              on_result=results.append, on_progress=bar.update, executor=executor, scheduler=scheduler)
    bar.close()
    seconds = time.time() - started
    summary = []
    for i, u in enumerate(units):
        shards = [r["info"] for r in sorted(results, key=lambda r: r["shard"]) if r["unit"] == i]
        write_index(u.target, u.name, u.task, shards, {"split": u.split, "subset": u.subset})
        if u.has_manifest:
            shutil.copyfile(Path(u.source) / MANIFEST, Path(u.target) / MANIFEST)
        summary.append({"subset": f"{u.task}/{u.split}/{u.subset}", "examples": u.n, "shards": len(shards),
                        "target": u.target})
    return {"subsets": summary, "examples": total, "seconds": round(seconds, 3),
            "rate_per_second": round(total / seconds, 1) if seconds > 0 else None}


# ------------------------------------------------------------------ shards -> tree


def _find_shard_sets(source: Path) -> List[Path]:
    if (source / INDEX).exists():
        return [source]
    found = sorted(p.parent for p in source.rglob(INDEX))
    return found


def _resize(png: bytes, size: int) -> bytes:
    from PIL import Image

    pixels = decode_png(png)
    if pixels.shape[0] == size and pixels.shape[1] == size:
        return png
    return encode_png(np.asarray(Image.fromarray(pixels).resize((size, size), Image.BICUBIC)))


def _import_shard(context, k, progress):
    jobs, stored_size = context
    shard_path, target, task = jobs[k]
    target = Path(target)
    folders = IMAGE_FOLDERS[task]
    label = LABEL_FOLDERS[task]
    records, n = [], 0
    for key, fields in read_shard(shard_path):
        missing = [f for f in folders if f"{f}.png" not in fields]
        if missing:
            raise BuildError(f"{shard_path}: sample {key} lacks {', '.join(f + '.png' for f in missing)}")
        meta = json.loads(fields["json"]) if "json" in fields else {}
        record = meta.get("recipe") or {"stem": key}
        files = {}
        for f in folders:
            data = fields[f"{f}.png"]
            if stored_size:
                data = _resize(data, stored_size)
            write_atomic(target / f / f"{key}.png", data)
            files[f] = sha256_bytes(data)
        if f"{label}.npy" in fields:
            (target / label).mkdir(exist_ok=True)
            write_atomic(target / label / f"{key}.npy", fields[f"{label}.npy"])
        if "files" in record or not meta.get("recipe"):
            record["files"] = files
        if stored_size:
            record["stored_size"] = stored_size
        if "counts" in meta:
            record["counts"] = meta["counts"]  # kept out of the manifest below; restored to counts.csv
        records.append(record)
        n += 1
        if n % 64 == 0:
            progress(64)
    progress(n % 64)
    return {"shard": k, "records": records}


def export_to_tree(source, target, *, stored_size: Optional[int] = None, workers: Optional[int] = None,
                   executor: str = "local", scheduler: Optional[str] = None, progress: bool = True) -> dict:
    """WebDataset shards (an index.json folder, or a root holding several) to a BAPPS tree."""
    source, target = Path(source), Path(target)
    sets = _find_shard_sets(source)
    if not sets:
        raise BuildError(f"{source} holds no shard set (a folder with {INDEX}, as export and distort write)")
    jobs, plan = [], []
    for folder in sets:
        index = json.loads((folder / INDEX).read_text())
        task = index.get("task", "2afc")
        split, subset = index.get("split"), index.get("subset")
        if not split or not subset:  # distort's shard sets sit at <task>/<split>/<subset>/
            split, subset = folder.parent.name, folder.name
        out = target / task / split / subset
        if out.exists() and any(out.iterdir()):
            raise BuildError(f"{out} is not empty; export into a new --out")
        for f in IMAGE_FOLDERS[task]:
            (out / f).mkdir(parents=True, exist_ok=True)
        first = len(jobs)
        for shard in index["shards"]:
            path = folder / shard["file"]
            if not path.exists():
                raise BuildError(f"{path} is listed in {folder / INDEX} but missing")
            jobs.append((str(path), str(out), task))
        plan.append((out, task, index, first, len(jobs)))
    total = sum(p[2]["samples"] for p in plan)
    bar = progress_bar(total, "export", "ex", progress)
    results = {}
    started = time.time()
    run_units(_import_shard, (jobs, stored_size), range(len(jobs)), workers=workers or default_workers(),
              on_result=lambda r: results.__setitem__(r["shard"], r["records"]), on_progress=bar.update,
              executor=executor, scheduler=scheduler)
    bar.close()
    summary = []
    for out, task, index, first, stop in plan:
        has_label = (out / LABEL_FOLDERS[task]).is_dir()
        records = [r for k in range(first, stop) for r in results[k]]
        _write_counts(out, task, records)
        with open(out / f".{MANIFEST}.partial", "w", encoding="utf-8") as f:
            for record in records:
                record.pop("counts", None)
                f.write(json.dumps(record, separators=(",", ":")) + "\n")
        os.replace(out / f".{MANIFEST}.partial", out / MANIFEST)
        summary.append({"subset": str(out), "examples": index["samples"], "labels": has_label})
    seconds = time.time() - started
    return {"subsets": summary, "examples": total, "seconds": round(seconds, 3),
            "rate_per_second": round(total / seconds, 1) if seconds > 0 else None}
