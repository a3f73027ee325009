"""The machinery every chunked build shares: units of examples, writers, resume, assembly.

A job makes examples 0..n-1 in chunks of consecutive indices. A chunk writes its images
(each file atomically, or one shard atomically) and then its part of the manifest; the
chunk's statistics file is the proof that the chunk is complete: it is written last (fsynced)
and records the part file's length and checksum. --resume trusts a chunk only when its part
file matches that record and every image (or the shard) matches the checksum the manifest
lines give; any other chunk is redone. At the end the parts are joined in index order into
manifest.jsonl. A build holds the lock of its subset folder (locks.py) from the first check
to the last write, and refuses a folder that holds no build record of its own.

`distort` (build.py) and `real` (real.py) are jobs; they differ only in how they make an
example (`make_examples`) and what they count for the report (`tally`).
"""
from __future__ import annotations

import functools
import json
import shutil
import sys
import time
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .executors import default_workers, run_units
from .errors import UserError, WorkError, describe_failure
from .files import (AtomicFile, encode_png, remove_partials, sha256_bytes, sha256_file, write_atomic,
                    write_json_atomic)
from .locks import FolderLock
from .layout import BUILD, MANIFEST, PARTS, REPORT, stem
from .shards import shard_file_name, write_index, write_shard
from .sources import SourceCache
from .version import __version__

CHECK_ON_A_POOL = 50  # chunks to check on --resume from which a process pool is worth its start
BATCH = 64  # examples made (and inferred, for cnn) together inside a chunk
MIN_CHUNK, MAX_CHUNK = 10, 200  # examples per chunk (bapps trees)


class BuildError(UserError, RuntimeError):
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

    def source_cache(self, max_pixels: int) -> SourceCache:
        """This process's cache of decoded sources, made on first use and kept on the job.

        A worker process receives the job once, when it starts, and keeps that copy for the whole
        run: a cache held by the job is one per worker process, shared by all the chunks it makes.
        It is never sent along when the job is pickled (see __getstate__)."""
        cache = self.__dict__.get("_source_cache")
        if cache is None:
            cache = self._source_cache = SourceCache(max_pixels=max_pixels)
        return cache

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_source_cache", None)  # decoded images stay in the process that decoded them
        return state

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
        return self.chunk_problem(k) is None

    def chunk_problem(self, k: int) -> Optional[str]:
        """None when chunk k is complete and intact; else why it must be (re)made."""
        try:
            stats = json.loads(self.stats_path(k).read_bytes())
        except FileNotFoundError:
            return "not made"
        except (OSError, ValueError) as exc:
            return f"its statistics file is unreadable ({exc})"
        part = stats.get("part") if isinstance(stats, dict) else None
        if not isinstance(part, dict):
            return "its statistics file records no part file (an older or damaged chunk)"
        try:
            data = self.part_path(k).read_bytes()
        except OSError:
            return "its manifest part is missing"
        if len(data) != part.get("bytes") or sha256_bytes(data) != part.get("sha256"):
            return f"its manifest part has {len(data)} bytes, not the {part.get('bytes')} recorded (or other content)"
        lines = data.splitlines()
        if len(lines) != len(self.chunk_range(k)):
            return f"its manifest part has {len(lines)} lines for {len(self.chunk_range(k))} examples"
        if self.fmt == "webdataset":
            shard = stats.get("shard") or {}
            path = self.shard_path(k)
            try:
                if path.stat().st_size != shard.get("bytes") or sha256_file(path) != shard.get("sha256"):
                    return f"{path.name} differs from its recorded length and checksum"
            except OSError:
                return f"{path.name} is missing"
            return None
        for line in lines:
            recipe = json.loads(line)
            for folder, digest in recipe.get("files", {}).items():
                path = Path(self.out) / folder / f"{recipe['stem']}.png"
                try:
                    if sha256_file(path) != digest:
                        return f"{folder}/{path.name} differs from its checksum"
                except OSError:
                    return f"{folder}/{path.name} is missing"
        return None


def merge_counts(total: dict, part: dict) -> None:
    for key, value in part.items():
        if isinstance(value, dict):
            total.setdefault(key, Counter()).update(value)
        else:
            total[key] = total.get(key, 0) + value


def _setup(job: Job) -> None:
    job.setup_worker()


def _make_examples(job: Job, batch: List[int]):
    """job.make_examples(batch), and when it fails, the index of the example that failed."""
    try:
        return job.make_examples(batch)
    except Exception as exc:
        if len(batch) > 1:  # an example depends on (seed, index) alone: redo them one by one to find it
            for i in batch:
                _make_examples(job, [i])
        raise WorkError(f"example {batch[0]}" if len(batch) == 1 else f"examples {batch[0]}-{batch[-1]}",
                        exc) from exc


def build_chunk(job: Job, k: int, progress: Callable[[int], None] = lambda n: None) -> dict:
    """Make and write the examples of chunk k (a unit of work); returns its statistics."""
    lines, counts = [], {}  # the chunk's manifest lines, and what the report counts

    def produce():
        indices = list(job.chunk_range(k))
        for start in range(0, len(indices), BATCH):
            batch = indices[start:start + BATCH]
            for recipe, images in _make_examples(job, batch):
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
    part = b"".join(line + b"\n" for line in lines)
    write_atomic(job.part_path(k), part, durable=True)
    # written last: the proof that the chunk is complete, with what --resume checks it against
    stats.update(examples=len(lines), counts=counts, part={"bytes": len(part), "sha256": sha256_bytes(part)})
    write_json_atomic(job.stats_path(k), stats, durable=True)
    return stats


# ------------------------------------------------------------------ the driver side


def progress_bar(total, desc, unit, enabled, initial=0):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled,
                file=sys.stderr, dynamic_ncols=True, smoothing=0.1)


# build.json setting -> the option that sets it, where its name differs from --<key> or none does
SETTING_OPTIONS = {"name": "--subset", "generators": "--bank (the generator bank)"}
# settings no command-line option sets (a Python caller's, or this version's)
NOT_OPTIONS = {"kind": "the kind of build", "max_flat_attempts": "max_flat_attempts (Python setting)",
               "min_chain": "min_chain (Python setting)", "context_margin": "context_margin (Python setting)",
               "extra": "extra settings (Python setting)",
               "seed_scheme": "the seed scheme (the existing build was made by another version of bapps-build)"}


def describe_setting(key: str) -> str:
    """How a --resume refusal names a setting: its option (`--patch-size`), or in words."""
    if key in NOT_OPTIONS:
        return NOT_OPTIONS[key]
    return SETTING_OPTIONS.get(key, f"--{key.replace('_', '-')}")


def setting_differences(old: dict, new: dict) -> List[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            if key == "sources_digest":
                out.append("the usable source images differ (files added, removed or changed)")
            elif key == "plugin_digests":
                out.append("the plugin files differ")
            else:
                out.append(f"{describe_setting(key)}: {old.get(key)!r} in the existing build, "
                           f"{new.get(key)!r} now")
    return out


_LOCKS: Dict[str, FolderLock] = {}  # the subset folders this process is building, and their locks


def holding_lock(folder_of: Callable, command: str):
    """Decorator for a build function f(cfg, out_root, ...): it runs holding the lock of the subset
    folder folder_of(cfg, out_root), so no other command writes there meanwhile."""
    import functools

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(cfg, out_root, *args, **kwargs):
            folder = Path(folder_of(cfg, out_root)).absolute()
            lock = FolderLock(folder, command)
            try:
                lock.acquire()
            except RuntimeError as exc:
                raise BuildError(str(exc)) from None
            _LOCKS[str(folder)] = lock
            try:
                return fn(cfg, out_root, *args, **kwargs)
            finally:
                _LOCKS.pop(str(folder), None)
                lock.release()

        return wrapper

    return decorate


def check_target(out: Path, resume: bool) -> Optional[dict]:
    """Refuse to overwrite; returns the existing build.json state when resuming one.

    A folder is only ever written by the build recorded in its own build.json: --resume on a
    folder without one (a released dataset, another tool's output) is refused, never merged into.
    """
    build_file = out / BUILD
    if build_file.exists():
        try:
            state = json.loads(build_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BuildError(f"{build_file} is unreadable ({exc}); it is not a build record this tool can resume. "
                             "Build into another --out.") from None
        if not isinstance(state, dict) or state.get("tool") != "bapps-build" or "settings" not in state:
            raise BuildError(f"{build_file} is not a bapps-build record; {out} was not made by this tool and is "
                             "left as it is. Build into another --out.")
        if not resume:
            what = "a complete build" if state.get("complete") else "an unfinished build"
            raise BuildError(f"{out} already holds {what}; pass --resume to finish or check it, "
                             "or choose another --out")
        return state
    if out.exists() and any(out.iterdir()):
        if resume:
            raise BuildError(f"--resume refused: {out} holds files but no {BUILD}, so it was not started by "
                             "bapps-build (a released dataset, or another tool's output); nothing was changed. "
                             "Build into another --out.")
        raise BuildError(f"{out} is not empty and holds no build.json; choose another --out")
    return None


def plan_chunk_size(n: int, workers: int, fmt: str, maxcount: int) -> int:
    """Examples per chunk of a new job: for shards one chunk is one shard (shard k holds the
    examples of chunk k); for trees about 8 chunks per worker, so a slow chunk does not idle
    the others, within MIN_CHUNK..MAX_CHUNK."""
    if fmt == "webdataset":
        return maxcount
    return max(MIN_CHUNK, min(MAX_CHUNK, -(-n // (max(workers, 1) * 8))))


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
            write_json_atomic(out / name, obj, durable=True)
        write_json_atomic(out / BUILD, {"tool": "bapps-build", "version": __version__, "settings": settings,
                                        "format": fmt, "chunk_size": chunk_size, "stem_width": width,
                                        "complete": False}, durable=True)
    if fmt == "bapps":
        for folder in folders:
            (out / folder).mkdir(parents=True, exist_ok=True)
    (out / PARTS).mkdir(parents=True, exist_ok=True)
    return width, chunk_size


def assemble(job: Job) -> dict:
    """Join the parts into manifest.jsonl (index order); sum the chunk statistics; index shards."""
    out = Path(job.out)
    totals, shards = {}, []
    with AtomicFile(out / MANIFEST, durable=True) as f:
        for k in range(job.n_chunks):
            f.write(job.part_path(k).read_bytes())
            st = json.loads(job.stats_path(k).read_text())
            merge_counts(totals, st["counts"])
            if "shard" in st:
                shards.append(st["shard"])
    if job.fmt == "webdataset":
        write_index(out, job.shard_name, job.task, shards)
    return totals


def run_job(job: Job, *, workers: Optional[int], executor: str = "local", scheduler: Optional[str] = None,
            resume: bool, progress: bool, log: Callable[[str], None], desc: str,
            report_base: dict, started: float, report_extra: Callable[[dict], dict]) -> dict:
    """Run the pending chunks of a prepared job, assemble, and write the report."""
    workers = workers or default_workers()
    out = Path(job.out)
    own_folders = [out, out / PARTS] + ([out / f for f in job.folders] if job.fmt == "bapps" else [])
    removed = remove_partials(own_folders)  # ours: the lock is held, so no live writer's
    state = json.loads((out / BUILD).read_text())
    if state.get("complete") and (out / MANIFEST).exists():
        return _already_complete(job, log)
    pending, redone = _pending_chunks(job, workers)
    already = job.n - sum(len(job.chunk_range(k)) for k in pending)
    if resume and (already or redone):
        log(f"resuming: {already} of {job.n} examples were already made and checked"
            + (f"; removed {removed} half-written file(s)" if removed else ""))
        for line in redone[:5]:
            log(f"  redoing {line}")
        if len(redone) > 5:
            log(f"  ... and {len(redone) - 5} more chunk(s) to redo")
    work_seconds = _run_chunks(job, pending, already, workers=workers, executor=executor, scheduler=scheduler,
                               progress=progress, desc=desc)
    remove_partials(own_folders)  # a worker lost mid-write (its unit was redone) leaves a temp file behind
    lock = _LOCKS.get(str(out.absolute()))
    if lock is not None:
        lock.check()  # still ours: nobody removed it by hand and started another writer
    totals = assemble(job)
    made = job.n - already
    report = {**report_base, "dataset": str(out), "format": job.fmt, "examples": job.n,
              "made_this_run": made, "already_there": already, "workers": workers, "executor": executor,
              "seconds": round(time.time() - started, 3), "work_seconds": round(work_seconds, 3),
              "rate_per_second": round(made / work_seconds, 1) if work_seconds > 0 and made else None,
              **report_extra(totals)}
    write_json_atomic(out / REPORT, report, durable=True)
    state["complete"] = True
    write_json_atomic(out / BUILD, state, durable=True)
    shutil.rmtree(out / PARTS, ignore_errors=True)  # the manifest holds it all now
    return report


def _pending_chunks(job: Job, workers: int) -> Tuple[List[int], List[str]]:
    """(the chunks to make, why each one made before is made again)."""
    pending, redone = [], []
    problems = check_chunks(job, workers)
    for k in range(job.n_chunks):
        problem = problems.get(k, "not made")
        if problem is not None:
            pending.append(k)
            if problem != "not made":
                redone.append(f"chunk {k} (examples {job.chunk_range(k).start}-{job.chunk_range(k).stop - 1}): "
                              f"{problem}")
    return pending, redone


def _run_chunks(job: Job, pending: List[int], already: int, *, workers: int, executor: str,
                scheduler: Optional[str], progress: bool, desc: str) -> float:
    """Make the pending chunks on the executor; returns the seconds it took. A failure or an
    interruption becomes a BuildError that says how to resume."""
    bar = progress_bar(job.n, desc, "ex", progress, initial=already)
    work_started = time.time()

    def advance(n):
        bar.update(max(0, min(n, job.n - bar.n)))  # a unit redone after a lost worker counts once

    try:
        run_units(build_chunk, job, pending, workers=workers, on_result=lambda st: None, on_progress=advance,
                  setup=_setup, executor=executor, scheduler=scheduler, unit_name=functools.partial(_chunk_name, job))
    except KeyboardInterrupt:
        bar.close()
        raise BuildError(f"interrupted; everything written so far is kept. Run the same command with "
                         f"--resume to finish {Path(job.out)}.") from None
    except Exception as exc:
        bar.close()
        if isinstance(exc, BuildError):
            raise
        raise BuildError(f"the build stopped: {describe_failure(exc)}. Everything written so far is kept "
                         f"(an unfinished chunk is redone); fix the cause and run the same command with "
                         f"--resume.") from exc
    advance(job.n)
    bar.close()
    return time.time() - work_started


def _check_unit(job: Job, k: int, progress) -> tuple:
    return k, job.chunk_problem(k)


def check_chunks(job: Job, workers: int) -> Dict[int, Optional[str]]:
    """chunk_problem of every chunk that has a statistics file (the others are simply not made).
    Hashing every image of a big build takes a while (about 0.2 ms an image), so many chunks
    are checked on a local process pool."""
    candidates = [k for k in range(job.n_chunks) if job.stats_path(k).exists()]
    found: Dict[int, Optional[str]] = {}
    if len(candidates) < CHECK_ON_A_POOL or workers <= 1:
        for k in candidates:
            found[k] = job.chunk_problem(k)
    else:
        run_units(_check_unit, job, candidates, workers=workers, on_result=lambda r: found.__setitem__(r[0], r[1]))
    return found


def _chunk_name(job: Job, k: int) -> str:
    r = job.chunk_range(k)
    where = f" ({job.shard_path(k).name})" if job.fmt == "webdataset" else ""
    return f"chunk {k}, examples {r.start}-{r.stop - 1}{where}"


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
