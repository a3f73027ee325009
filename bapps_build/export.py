"""`bapps-build export`: a BAPPS tree to WebDataset shards, and shards back to a tree.

Tree -> shards: every subset under DIR becomes OUT/<task>/<split>/<subset>/
NAME-000000.tar ... plus index.json (counts and checksums) and the manifest. A sample is
the example's stem (the key) with ref.png, p0.png, p1.png (JND: p0.png, p1.png), the label
(judge.npy / same.npy) when there is one, and json: {"recipe": ..., "counts": ...}, where
"counts" (judgment counts) and any other such field come from the packages that registered
them (bapps_build.hooks: judgments registers "counts"; the core does not import it). The
PNG bytes are the tree's own bytes, untouched. A tree without a manifest (the released
BAPPS, say) exports too, its json then holding only the stem.

Shards -> tree: the reverse, optionally storing the images at --stored-size (the released
BAPPS files are 256x256; the loader resizes them to 64).

Safety: a shard set comes from others, so every name in it is checked before it becomes a
path (index.json's task, split, subset and shard files; every tar member is <key>.<field>
with a plain key and a known field), and each final path is resolved under --out. Each
subset is written into a hidden folder beside its place (.<subset>.export.partial) under the
lock of that place (locks.py) and renamed into place only when complete, so a killed export
leaves nothing that looks finished; the next run removes the hidden folder and starts over,
and skips subsets already in place when they check out as complete.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from .errors import describe_failure, shorten
from .executors import default_workers, run_units
from .hooks import RESERVED_KEYS, ShardField, shard_fields
from .files import AtomicFile, decode_png, encode_photo_png, read_regular_file, sha256_bytes, sha256_file, write_atomic
from .jobs import BuildError, progress_bar
from .layout import IMAGE_FOLDERS, LABEL_FOLDERS, MANIFEST, TASKS, find_subsets
from .locks import lock_folders
from .manifest import ManifestError, load_record
from .shards import (INDEX, KEY_PATTERN, MAX_MEMBER_BYTES, json_bytes, read_shard, shard_file_name, verify_shard_set,
                     write_index, write_shard)

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}")  # a split or subset: one plain folder name
SHARD_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,199}\.tar")
MAX_INDEX_BYTES = 64 * 2**20


class ExportError(BuildError):
    """An export that cannot be done as asked (an untrusted shard set, a target in use); says what to do."""


def stage_dir(final: Path) -> Path:
    """Where a subset is written before it is renamed into place: hidden, beside it (same file system)."""
    return final.parent / f".{final.name}.export.partial"


def _under(root: Path, *parts: str) -> Path:
    """root/parts, refused unless it resolves inside root (no `..`, no absolute part, no link out)."""
    path = root.joinpath(*parts)
    real_root = root.resolve()
    resolved = path.resolve()
    if resolved != real_root and real_root not in resolved.parents:
        raise ExportError(f"{shorten('/'.join(parts), 200)!r} would be written outside {root}; refused")
    return path


def _check_name(value, what: str, where) -> str:
    if not isinstance(value, str) or not SAFE_NAME.fullmatch(value):
        raise ExportError(f"{where}: {what} {shorten(repr(value), 200)} is not a plain folder name (letters, "
                          f"digits, _ . + -, not starting with a dot); this shard set was not used")
    return value


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
    stage: str = ""  # the hidden folder it is written into, renamed to target when complete

    @property
    def name(self) -> str:
        return f"{self.task}-{self.split}-{self.subset}"

    @property
    def n_shards(self) -> int:
        return -(-self.n // self.maxcount)

    def field_values(self, fields: List[ShardField]) -> Dict[str, Dict[str, object]]:
        """key -> {stem: value} of the registered shard fields (judgment counts, ...) for this
        subset: read once per process and kept, not once per shard (a subset has many)."""
        values = self.__dict__.get("_field_values")
        if values is None:
            values = self._field_values = {f.key: f.read(Path(self.source), self.task) for f in fields}
        return values


def _records(unit: ExportUnit, start: int, stop: int):
    """Manifest records start..stop-1 (parsing only those lines)."""
    if not unit.has_manifest:
        for s in unit.stems[start:stop]:
            yield {"stem": s}
        return
    path = Path(unit.source) / MANIFEST
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if n > stop:
                break
            if n > start:
                try:  # as stored, not upgraded: shards carry the recipe byte for byte
                    yield load_record(line)
                except ManifestError as exc:
                    raise ExportError(f"{path}, line {n}: {exc}; the manifest is damaged") from None


def _restore_fields(subset_path: Path, task: str, records: List[dict], carried: List[dict], log) -> None:
    """Write back what the samples carried beside their recipe (carried[i] is records[i]'s)."""
    fields = {field.key: field for field in shard_fields()}
    for key in sorted({key for extra in carried for key in extra}):
        if key not in fields:
            log(f"note: the shards carry {key!r} per sample, which no imported package restores; left out "
                "(the command line restores judgment counts; in Python, import judgments first)")
            continue
        items = [(record["stem"], extra[key]) for record, extra in zip(records, carried) if extra.get(key)]
        if items:
            fields[key].write(Path(subset_path), task, items)


def _export_shard(context, k, progress):
    units, unit_of_shard, shard_field_list = context
    u_index, shard = unit_of_shard[k]
    unit = units[u_index]
    src = Path(unit.source)
    folders = IMAGE_FOLDERS[unit.task]
    label = LABEL_FOLDERS[unit.task]
    has_labels = (src / label).is_dir()
    extras = unit.field_values(shard_field_list)
    start, stop = shard * unit.maxcount, min((shard + 1) * unit.maxcount, unit.n)

    def samples():
        for record in _records(unit, start, stop):
            stem = record["stem"]
            # regular files only, bounded: a FIFO or a device in a tree must not hang or flood an export
            fields = {f"{f}.png": read_regular_file(src / f / f"{stem}.png", MAX_MEMBER_BYTES) for f in folders}
            if has_labels:
                fields[f"{label}.npy"] = read_regular_file(src / label / f"{stem}.npy", MAX_MEMBER_BYTES)
            meta = {"recipe": record}
            for key, values in extras.items():
                if stem in values:
                    meta[key] = values[stem]
            fields["json"] = json_bytes(meta)
            yield stem, fields

    info = write_shard(Path(unit.stage) / shard_file_name(unit.name, shard), samples())
    progress(info["samples"])
    return {"unit": u_index, "shard": shard, "info": info}


def _probe(task, path, n) -> "ExportUnit":
    return ExportUnit(task, "", "", str(path), "", 1, n, True)


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
        for stem in (stems or (r.get("stem") for r in _records(_probe(task, path, n), 0, n))):
            if not isinstance(stem, str) or not KEY_PATTERN.fullmatch(stem):
                raise ExportError(f"{path / MANIFEST if has_manifest else path}: stem {shorten(repr(stem), 200)} is "
                                  f"not a plain name (letters, digits, _ and -); refused, nothing was read for it")
        units.append(ExportUnit(task, split, subset, str(path), str(target / task / split / subset), maxcount, n,
                                has_manifest, stems))
    return units


def _run(fn, context, n_units, *, workers, on_result, on_progress, executor, scheduler, unit_name, stages):
    """run_units, with a failure shown as its cause and where; staged folders are removed."""
    try:
        run_units(fn, context, range(n_units), workers=workers or default_workers(), on_result=on_result,
                  on_progress=on_progress, executor=executor, scheduler=scheduler, unit_name=unit_name)
    except (Exception, KeyboardInterrupt) as exc:
        for stage in stages:
            shutil.rmtree(stage, ignore_errors=True)  # ours: made by this run, under its lock
        if isinstance(exc, KeyboardInterrupt):
            raise ExportError("interrupted; nothing was put in place. Run the same command again.") from None
        raise ExportError(f"export stopped: {describe_failure(exc)}. Nothing was put in place; fix the cause and "
                          f"run the same command again.") from exc
    return None


def _prepare_stage(final: Path, already_done, log) -> Optional[Path]:
    """The hidden folder to write final into; None when final is already a complete export."""
    if final.exists() and any(final.iterdir()):
        problem = already_done(final)
        if problem is None:
            log(f"{final} is already exported (checked); skipped")
            return None
        raise ExportError(f"{final} is not empty ({problem}); export into a new --out")
    stage = stage_dir(final)
    if stage.exists():
        shutil.rmtree(stage)  # a killed export's: the name is ours and we hold the lock
    stage.mkdir(parents=True)
    return stage


def _put_in_place(stage: Path, final: Path) -> None:
    from .files import fsync_dir

    if final.exists():
        final.rmdir()  # empty (checked in _prepare_stage): rename needs the name free
    os.rename(stage, final)
    fsync_dir(final.parent)


def _shard_set_complete(u: ExportUnit):
    def check(final: Path) -> Optional[str]:
        if not (final / INDEX).exists():
            return "no index.json"
        try:
            problems = verify_shard_set(final, u.task, IMAGE_FOLDERS[u.task], LABEL_FOLDERS[u.task])
            index = json.loads((final / INDEX).read_text())
        except (OSError, ValueError) as exc:
            return str(exc)
        if problems:
            return problems[0]
        if index.get("samples") != u.n:
            return f"{index.get('samples')} samples, the source has {u.n}"
        if u.has_manifest and sha256_file(final / MANIFEST) != sha256_file(Path(u.source) / MANIFEST):
            return "its manifest differs from the source's"
        return None
    return check


def _note_uncarried_folders(units: List[ExportUnit], log) -> None:
    """Say so when a subset holds data that no registered shard field carries (e.g. the
    judgment counts of `judgments/` when `judgments` was not imported): nothing is lost from
    the tree, but the shards will not have it."""
    if shard_fields():
        return
    known = set(IMAGE_FOLDERS["2afc"]) | set(IMAGE_FOLDERS["jnd"]) | set(LABEL_FOLDERS.values())
    for u in units:
        extra = sorted(p.name for p in Path(u.source).iterdir()
                       if p.is_dir() and p.name not in known and not p.name.startswith("."))
        if extra:
            log(f"note: {u.task}/{u.split}/{u.subset} holds {', '.join(e + '/' for e in extra)}, which no "
                "imported package carries into shards (`import judgments` carries the judgment counts; the "
                "command line always does)")


def _shard_unit_name(context, k):
    units, unit_of_shard, _fields = context
    u_index, shard = unit_of_shard[k]
    u = units[u_index]
    return f"{u.task}/{u.split}/{u.subset}, shard {shard_file_name(u.name, shard)}"


def export_to_shards(source, target, *, maxcount: int = 2000, workers: Optional[int] = None,
                     executor: str = "local", scheduler: Optional[str] = None, progress: bool = True,
                     log=lambda m: None) -> dict:
    """Every subset of a BAPPS tree to WebDataset shards; returns a summary."""
    import functools

    source, target = Path(source), Path(target)
    units = _plan_tree(source, target, maxcount)
    if not units:
        raise BuildError(f"{source} holds no BAPPS subset to export (<task>/<split>/<subset>/ with image folders)")
    _note_uncarried_folders(units, log)
    with _locked([u.target for u in units]):
        todo = []
        for u in units:
            stage = _prepare_stage(Path(u.target), _shard_set_complete(u), log)
            if stage is not None:
                u.stage = str(stage)
                todo.append(u)
        unit_of_shard = [(i, k) for i, u in enumerate(todo) for k in range(u.n_shards)]
        total = sum(u.n for u in todo)
        bar = progress_bar(total, "export", "ex", progress)
        results: List[dict] = []
        started = time.time()
        # the fields travel to the workers with the work (spawned workers import only what they unpickle)
        context = (todo, unit_of_shard, shard_fields())
        _run(_export_shard, context, len(unit_of_shard), workers=workers, on_result=results.append,
             on_progress=bar.update, executor=executor, scheduler=scheduler,
             unit_name=functools.partial(_shard_unit_name, context), stages=[u.stage for u in todo])
        bar.close()
        seconds = time.time() - started
        summary = []
        for i, u in enumerate(todo):
            shards = [r["info"] for r in sorted(results, key=lambda r: r["shard"]) if r["unit"] == i]
            write_index(u.stage, u.name, u.task, shards, {"split": u.split, "subset": u.subset})
            if u.has_manifest:
                with AtomicFile(Path(u.stage) / MANIFEST, durable=True) as f:
                    f.write((Path(u.source) / MANIFEST).read_bytes())
            _put_in_place(Path(u.stage), Path(u.target))
            summary.append({"subset": f"{u.task}/{u.split}/{u.subset}", "examples": u.n, "shards": len(shards),
                            "target": u.target})
    return {"subsets": summary, "examples": total, "seconds": round(seconds, 3),
            "rate_per_second": round(total / seconds, 1) if seconds > 0 else None}


def _locked(folders):
    try:
        return lock_folders(folders, "bapps-build export")
    except RuntimeError as exc:
        raise ExportError(str(exc)) from None


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
    return encode_photo_png(np.asarray(Image.fromarray(pixels).resize((size, size), Image.BICUBIC)))


def _import_shard(context, k, progress):
    jobs, stored_size = context
    shard_path, target, task = jobs[k]
    target = Path(target)
    folders = IMAGE_FOLDERS[task]
    label = LABEL_FOLDERS[task]
    name = Path(shard_path).name
    records, carried, n = [], [], 0
    for key, fields in read_shard(shard_path, strict=True):  # keys and fields checked: safe as names
        missing = [f for f in folders if f"{f}.png" not in fields]
        if missing:
            raise ExportError(f"{name}: sample {key} lacks {', '.join(f + '.png' for f in missing)}")
        try:
            meta = json.loads(fields["json"]) if "json" in fields else {}
        except ValueError as exc:
            raise ExportError(f"{name}: member {key}.json is not valid JSON ({exc})") from None
        if not isinstance(meta, dict):
            raise ExportError(f"{name}: member {key}.json is not a JSON object")
        record = meta.get("recipe") or {"stem": key}
        if not isinstance(record, dict) or record.get("stem") != key:
            raise ExportError(f"{name}: member {key}.json's recipe names another stem "
                              f"({shorten(repr(record.get('stem') if isinstance(record, dict) else record), 100)})")
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
        records.append(record)
        carried.append({name: v for name, v in meta.items() if name not in RESERVED_KEYS})  # judgment counts, ...
        n += 1
        if n % 64 == 0:
            progress(64)
    progress(n % 64)
    return {"shard": k, "records": records, "carried": carried}


def _read_index(folder: Path) -> dict:
    path = folder / INDEX
    try:
        if path.stat().st_size > MAX_INDEX_BYTES:
            raise ExportError(f"{path}: {path.stat().st_size:,} bytes, too big for an index; not used")
        index = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ExportError(f"{path}: not valid JSON ({shorten(exc, 200)}); not used") from None
    except OSError as exc:
        raise ExportError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not isinstance(index, dict) or not isinstance(index.get("shards"), list):
        raise ExportError(f"{path}: not a shard index (a JSON object with a list of shards); not used")
    task = index.get("task", "2afc")
    if task not in TASKS:
        raise ExportError(f"{path}: task {shorten(repr(task), 100)} is not one of {', '.join(TASKS)}; not used")
    for key in ("split", "subset"):
        if index.get(key) is not None:
            _check_name(index[key], key, path)
    total = 0
    for shard in index["shards"]:
        file = shard.get("file") if isinstance(shard, dict) else None
        if not isinstance(file, str) or not SHARD_FILE.fullmatch(file):
            raise ExportError(f"{path}: shard file {shorten(repr(file), 200)} is not a plain .tar name in this "
                              f"folder; not used")
        samples = shard.get("samples")
        if not isinstance(samples, int) or samples < 0:
            raise ExportError(f"{path}: shard {file} has no valid sample count; not used")
        total += samples
    index.setdefault("samples", total)
    return index


def _tree_complete(index: dict):
    def check(final: Path) -> Optional[str]:
        manifest = final / MANIFEST
        if not manifest.exists():
            return "no manifest.jsonl"
        with open(manifest, "rb") as f:
            lines = sum(1 for _ in f)
        if lines != index["samples"]:
            return f"{lines} examples, the shards hold {index['samples']}"
        from .verify import verify_subset

        problems = verify_subset(final.parent.parent.name, final, checksums=True)["problems"]
        return problems[0] if problems else None
    return check


def _import_unit_name(jobs, k):
    shard_path, target, task = jobs[k]
    return f"shard {shard_path}"


def export_to_tree(source, target, *, stored_size: Optional[int] = None, workers: Optional[int] = None,
                   executor: str = "local", scheduler: Optional[str] = None, progress: bool = True,
                   log=lambda m: None) -> dict:
    """WebDataset shards (an index.json folder, or a root holding several) to a BAPPS tree."""
    import functools

    source, target = Path(source), Path(target)
    sets = _find_shard_sets(source)
    if not sets:
        raise BuildError(f"{source} holds no shard set (a folder with {INDEX}, as export and distort write)")
    planned = _plan_tree_export(sets, target)
    with _locked([out for _, out, _, _ in planned]):
        jobs, plan = [], []
        for folder, out, task, index in planned:
            stage = _prepare_stage(out, _tree_complete(index), log)
            if stage is None:
                continue
            for f in IMAGE_FOLDERS[task]:
                (stage / f).mkdir(parents=True, exist_ok=True)
            first = len(jobs)
            for shard in index["shards"]:
                jobs.append((str(folder / shard["file"]), str(stage), task))
            plan.append((out, stage, task, index, first, len(jobs)))
        total = sum(p[3]["samples"] for p in plan)
        bar = progress_bar(total, "export", "ex", progress)
        results = {}
        started = time.time()
        _run(_import_shard, (jobs, stored_size), len(jobs), workers=workers,
             on_result=lambda r: results.__setitem__(r["shard"], r), on_progress=bar.update,
             executor=executor, scheduler=scheduler, unit_name=functools.partial(_import_unit_name, jobs),
             stages=[p[1] for p in plan])
        bar.close()
        summary = []
        for out, stage, task, index, first, stop in plan:
            has_label = (stage / LABEL_FOLDERS[task]).is_dir()
            records = [r for k in range(first, stop) for r in results[k]["records"]]
            carried = [c for k in range(first, stop) for c in results[k]["carried"]]
            _restore_fields(stage, task, records, carried, log)
            with AtomicFile(stage / MANIFEST, durable=True) as f:
                for record in records:
                    f.write((json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8"))
            _put_in_place(stage, out)
            summary.append({"subset": str(out), "examples": len(records), "labels": has_label})
    seconds = time.time() - started
    return {"subsets": summary, "examples": total, "seconds": round(seconds, 3),
            "rate_per_second": round(total / seconds, 1) if seconds > 0 else None}


def _plan_tree_export(sets, target: Path) -> list:
    """(shard set folder, subset folder it goes to, task, index) of each shard set, checked: its
    shards all there, no two sets to the same subset."""
    planned = []
    for folder in sets:
        index = _read_index(folder)
        task = index.get("task", "2afc")
        split, subset = index.get("split"), index.get("subset")
        if not split or not subset:  # distort's shard sets sit at <task>/<split>/<subset>/
            split = _check_name(folder.parent.name, "split (the folder's parent)", folder)
            subset = _check_name(folder.name, "subset (the folder's name)", folder)
        out = _under(target, task, split, subset)
        for other in planned:
            if other[1] == out:
                raise ExportError(f"{folder} and {other[0]} would both be written to {out}; export them separately")
        for shard in index["shards"]:
            if not (folder / shard["file"]).is_file():
                raise ExportError(f"{folder / shard['file']} is listed in {folder / INDEX} but missing")
        planned.append((folder, out, task, index))
    return planned
