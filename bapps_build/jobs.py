"""The machinery every chunked build shares: units of examples, writers, resume, assembly.

A job makes examples 0..n-1 in chunks of consecutive indices. A chunk writes its images
(each file atomically, or one shard atomically) and then its part of the manifest; the
part file is the proof that the chunk is complete, so --resume redoes exactly the chunks
without one. At the end the parts are joined in index order into manifest.jsonl.

`distort` (build.py) and `real` (real.py) are jobs; they differ only in how they make an
example (`make_examples`) and what they count for the report (`tally`).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from . import __version__
from .executors import default_workers, run_units
from .files import encode_png, remove_partials, sha256_bytes, write_atomic, write_json_atomic
from .layout import BUILD, MANIFEST, PARTS, REPORT, stem
from .shards import shard_file_name, write_index, write_shard

BATCH = 64  # examples made (and inferred, for cnn) together inside a chunk


class BuildError(RuntimeError):
    """The build cannot go on; the message says why and what to do."""


@dataclass
class Job(ABC):
    out: str  # the subset folder
    n: int
    task: str
    folders: Tuple[str, ...]  # image folders: ref, p0, p1 (jnd: p0, p1)
    width: int  # stem width
    chunk_size: int
    fmt: str = "bapps"
    shard_name: str = ""

    # -- what a kind of job defines
    @abstractmethod
    def make_examples(self, indices: Sequence[int]) -> List[Tuple[dict, Dict[str, object]]]:
        """(recipe, images by folder as uint8 arrays) for each index."""

    def tally(self, recipe: dict, counts: dict) -> None:
        """Add what the report counts about one example to counts."""

    def setup_worker(self) -> None:
        """Once per worker process before any unit."""

    # -- shared
    def chunk_range(self, k: int) -> range:
        return range(k * self.chunk_size, min((k + 1) * self.chunk_size, self.n))

    @property
    def n_chunks(self) -> int:
        return -(-self.n // self.chunk_size)

    def part_path(self, k: int) -> Path:
        return Path(self.out) / PARTS / f"chunk-{k:06d}.jsonl"

    def stats_path(self, k: int) -> Path:
        return Path(self.out) / PARTS / f"chunk-{k:06d}.stats.json"

    def shard_path(self, k: int) -> Path:
        return Path(self.out) / shard_file_name(self.shard_name, k)

    def image_path(self, folder: str, index: int) -> Path:
        return Path(self.out) / folder / f"{stem(index, self.width)}.png"

    def chunk_done(self, k: int) -> bool:
        if not self.part_path(k).exists() or not self.stats_path(k).exists():
            return False
        if self.fmt == "webdataset":
            return self.shard_path(k).exists()
        return all(self.image_path(f, i).exists() for i in self.chunk_range(k) for f in self.folders)


def merge_counts(total: dict, part: dict) -> None:
    for key, value in part.items():
        if isinstance(value, dict):
            total.setdefault(key, Counter()).update(value)
        else:
            total[key] = total.get(key, 0) + value


def _setup(job: Job) -> None:
    job.setup_worker()


def build_chunk(job: Job, k: int, progress: Callable[[int], None] = lambda n: None) -> dict:
    """Make and write the examples of chunk k (a unit of work); returns its statistics."""
    lines, counts = [], {}  # the chunk's manifest lines, and what the report counts

    def produce():
        indices = list(job.chunk_range(k))
        for start in range(0, len(indices), BATCH):
            batch = indices[start:start + BATCH]
            for recipe, images in job.make_examples(batch):
                encoded = {f: encode_png(images[f]) for f in job.folders}
                recipe["files"] = {f: sha256_bytes(data) for f, data in encoded.items()}
                line = json.dumps(recipe, separators=(",", ":")).encode()
                lines.append(line)
                job.tally(recipe, counts)
                yield recipe["stem"], line, encoded
            progress(len(batch))

    stats = {"chunk": k}
    if job.fmt == "webdataset":
        # the sample's json is {"recipe": <the manifest line>}, encoded once
        samples = ((key, {**{f"{f}.png": data for f, data in enc.items()}, "json": b'{"recipe":' + line + b"}"})
                   for key, line, enc in produce())
        stats["shard"] = write_shard(job.shard_path(k), samples)
    else:
        out = Path(job.out)
        for key, _line, encoded in produce():
            for folder, data in encoded.items():
                write_atomic(out / folder / f"{key}.png", data)
    stats.update(examples=len(lines), counts=counts)
    write_json_atomic(job.stats_path(k), stats)
    write_atomic(job.part_path(k), b"".join(line + b"\n" for line in lines))
    return stats


# ------------------------------------------------------------------ the driver side


def progress_bar(total, desc, unit, enabled, initial=0):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled,
                file=sys.stderr, dynamic_ncols=True, smoothing=0.1)


def setting_differences(old: dict, new: dict) -> List[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            if key == "sources_digest":
                out.append("the usable source images differ (files added, removed or changed)")
            elif key == "plugin_digests":
                out.append("the plugin files differ")
            else:
                out.append(f"--{key.replace('_', '-')}: {old.get(key)!r} in the existing build, "
                           f"{new.get(key)!r} now")
    return out


def check_target(out: Path, resume: bool) -> Optional[dict]:
    """Refuse to overwrite; returns the existing build.json state when resuming one."""
    build_file = out / BUILD
    if build_file.exists():
        state = json.loads(build_file.read_text())
        if not resume:
            what = "a complete build" if state.get("complete") else "an unfinished build"
            raise BuildError(f"{out} already holds {what}; pass --resume to finish or check it, "
                             "or choose another --out")
        return state
    if out.exists() and any(out.iterdir()) and not resume:
        raise BuildError(f"{out} is not empty and holds no build.json; choose another --out")
    return None


def open_job(out: Path, state: Optional[dict], settings: dict, width: int, chunk_size: int,
             folders: Sequence[str], fmt: str, side_files: Optional[dict] = None) -> Tuple[int, int]:
    """Check a resumed build's settings, or record a new one. Returns (width, chunk_size)."""
    if state is not None:
        diffs = setting_differences(state["settings"], settings)
        if diffs:
            raise BuildError(f"--resume refused: {out} was built with other settings:\n  - "
                             + "\n  - ".join(diffs)
                             + "\nRun with the original settings, or build into another --out.")
        width, chunk_size = state["stem_width"], state["chunk_size"]
    else:
        out.mkdir(parents=True, exist_ok=True)
        for name, obj in (side_files or {}).items():
            write_json_atomic(out / name, obj)
        write_json_atomic(out / BUILD, {"tool": "bapps-build", "version": __version__, "settings": settings,
                                        "format": fmt, "chunk_size": chunk_size, "stem_width": width,
                                        "complete": False})
    if fmt == "bapps":
        for folder in folders:
            (out / folder).mkdir(parents=True, exist_ok=True)
    (out / PARTS).mkdir(parents=True, exist_ok=True)
    return width, chunk_size


def assemble(job: Job) -> dict:
    """Join the parts into manifest.jsonl (index order); sum the chunk statistics; index shards."""
    out = Path(job.out)
    tmp = out / f".{MANIFEST}.partial"
    totals, shards = {}, []
    with open(tmp, "wb") as f:
        for k in range(job.n_chunks):
            f.write(job.part_path(k).read_bytes())
            st = json.loads(job.stats_path(k).read_text())
            merge_counts(totals, st["counts"])
            if "shard" in st:
                shards.append(st["shard"])
    os.replace(tmp, out / MANIFEST)
    if job.fmt == "webdataset":
        write_index(out, job.shard_name, job.task, shards)
    return totals


def run_job(job: Job, *, workers: Optional[int], executor: str = "local", scheduler: Optional[str] = None,
            resume: bool, progress: bool, log: Callable[[str], None], desc: str,
            report_base: dict, started: float, report_extra: Callable[[dict], dict]) -> dict:
    """Run the pending chunks of a prepared job, assemble, and write the report."""
    workers = workers or default_workers()
    out = Path(job.out)
    removed = remove_partials(out)
    state = json.loads((out / BUILD).read_text())
    if state.get("complete") and (out / MANIFEST).exists():
        return _already_complete(job, log)
    pending = [k for k in range(job.n_chunks) if not job.chunk_done(k)]
    already = job.n - sum(len(job.chunk_range(k)) for k in pending)
    if resume and already:
        log(f"resuming: {already} of {job.n} examples were already made"
            + (f"; removed {removed} half-written file(s)" if removed else ""))
    bar = progress_bar(job.n, desc, "ex", progress, initial=already)
    work_started = time.time()

    def advance(n):
        bar.update(max(0, min(n, job.n - bar.n)))  # a unit redone after a lost worker counts once

    try:
        run_units(build_chunk, job, pending, workers=workers, on_result=lambda st: None, on_progress=advance,
                  setup=_setup, executor=executor, scheduler=scheduler)
    except KeyboardInterrupt:
        bar.close()
        raise BuildError(f"interrupted; everything written so far is kept. Run the same command with "
                         f"--resume to finish {out}.") from None
    except Exception as exc:
        bar.close()
        if isinstance(exc, BuildError):
            raise
        raise BuildError(f"the build stopped: {type(exc).__name__}: {exc}. Everything written so far is kept; "
                         f"fix the cause and run the same command with --resume.") from exc
    advance(job.n)
    bar.close()
    work_seconds = time.time() - work_started
    remove_partials(out)  # a worker lost mid-write (its unit was redone) leaves a temp file behind
    totals = assemble(job)
    made = job.n - already
    report = {**report_base, "dataset": str(out), "format": job.fmt, "examples": job.n,
              "made_this_run": made, "already_there": already, "workers": workers, "executor": executor,
              "seconds": round(time.time() - started, 3), "work_seconds": round(work_seconds, 3),
              "rate_per_second": round(made / work_seconds, 1) if work_seconds > 0 and made else None,
              **report_extra(totals)}
    write_json_atomic(out / REPORT, report)
    state["complete"] = True
    write_json_atomic(out / BUILD, state)
    shutil.rmtree(out / PARTS, ignore_errors=True)  # the manifest holds it all now
    return report


def _already_complete(job: Job, log) -> dict:
    """--resume on a finished build: check the files are all there and change nothing."""
    out = Path(job.out)
    if job.fmt == "webdataset":
        missing = [job.shard_path(k).name for k in range(job.n_chunks) if not job.shard_path(k).exists()]
    else:
        missing = [f"{f}/{stem(i, job.width)}.png" for i in range(job.n) for f in job.folders
                   if not job.image_path(f, i).exists()]
    if missing:
        raise BuildError(f"{out} is a complete build, but {len(missing)} file(s) were deleted since "
                         f"(e.g. {', '.join(missing[:3])}); run `bapps-build verify`, or rebuild into a new --out")
    log(f"{out} is already complete; nothing to do")
    report = json.loads((out / REPORT).read_text())
    report.update(made_this_run=0, already_there=job.n)
    return report
