"""`bapps-build distort`: sources -> patches -> recipes -> images -> a BAPPS tree + manifest.

The work is cut into chunks of consecutive example indices. A chunk writes its images
(each atomically) and then its part of the manifest; the part file is the proof that the
chunk is complete, so --resume redoes exactly the chunks without one. At the end the
parts are joined in index order into manifest.jsonl and the report is written.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import distortions

from . import __version__
from .config import BuildConfig, ConfigError
from .executors import default_workers, run_local
from .files import encode_png, remove_partials, sha256_bytes, write_atomic, write_json_atomic
from .layout import BUILD, MANIFEST, PARTS, REPORT, SOURCES, stem, stem_width, subset_dir
from .recipes import render, sample_recipe
from .sources import (Skipped, Source, SourceCache, SourceError, discover_sources, inspect_source,
                      select_sources)

MAX_CHUNK = 200


class BuildError(RuntimeError):
    """The build cannot go on; the message says why and what to do."""


@dataclass
class BuildContext:
    """Everything a worker needs to make any chunk; sent once per worker."""

    cfg: BuildConfig
    families: List[str]
    sources: List[Source]
    out: str  # the subset folder
    width: int
    chunk_size: int
    plugins: List[str] = field(default_factory=list)
    # Hooks for subsets beyond the traditional one (module-level callables: they are pickled
    # to the workers). chain_sampler(rng, families, cfg) -> chain;
    # batch_renderer(ctx, recipes, refs) -> [images by folder], for batched inference;
    # worker_setup(ctx) runs once per worker process (load a generator bank, ...).
    chain_sampler: Optional[Callable] = None
    batch_renderer: Optional[Callable] = None
    worker_setup: Optional[Callable] = None

    def chunk_range(self, k: int) -> range:
        return range(k * self.chunk_size, min((k + 1) * self.chunk_size, self.cfg.n))

    @property
    def n_chunks(self) -> int:
        return -(-self.cfg.n // self.chunk_size)


def part_path(out, k: int) -> Path:
    return Path(out) / PARTS / f"chunk-{k:06d}.jsonl"


def stats_path(out, k: int) -> Path:
    return Path(out) / PARTS / f"chunk-{k:06d}.stats.json"


# ------------------------------------------------------------------ the worker side

_CACHE: Optional[SourceCache] = None


def setup_worker(ctx: BuildContext) -> None:
    """Per process: the plugins the build uses, and a cache of decoded sources."""
    global _CACHE
    for p in ctx.plugins:
        distortions.load_plugin_file(p)
    _CACHE = SourceCache(max_pixels=ctx.cfg.max_pixels)
    if ctx.worker_setup is not None:
        ctx.worker_setup(ctx)


def build_chunk(ctx: BuildContext, k: int) -> dict:
    """Make examples of chunk k; returns counts for the report."""
    cache = _CACHE or SourceCache(max_pixels=ctx.cfg.max_pixels)
    out = Path(ctx.out)
    folders = ctx.cfg.image_folders
    records, family_use, lengths, fallbacks, attempts = [], Counter(), Counter(), 0, 0
    sampled = [sample_recipe(i, ctx.cfg, ctx.families, ctx.sources, cache.get, stem(i, ctx.width),
                             chain_sampler=ctx.chain_sampler) for i in ctx.chunk_range(k)]
    if ctx.batch_renderer is not None:
        rendered = ctx.batch_renderer(ctx, [r for r, _ in sampled], [ref for _, ref in sampled])
    else:
        rendered = [render(recipe, ref) for recipe, ref in sampled]
    for (recipe, _ref), images in zip(sampled, rendered):
        s = recipe["stem"]
        files = {}
        for folder in folders:
            data = encode_png(images[folder])
            write_atomic(out / folder / f"{s}.png", data)
            files[folder] = sha256_bytes(data)
        recipe["files"] = files
        records.append(recipe)
        for key in ("p0", "p1"):
            if recipe[key]:
                lengths[len(recipe[key])] += 1
                for step in recipe[key]:
                    family_use[step["family"]] += 1
        fallbacks += int(recipe["crop"].get("flat_fallback", False))
        attempts += recipe["crop"]["attempts"]
    stats = {"chunk": k, "examples": len(records), "family_use": dict(family_use),
             "chain_lengths": {str(a): b for a, b in lengths.items()},
             "flat_fallbacks": fallbacks, "crop_attempts": attempts}
    write_json_atomic(stats_path(out, k), stats)
    write_atomic(part_path(out, k), "".join(json.dumps(r, separators=(",", ":")) + "\n"
                                            for r in records).encode("utf-8"))
    return stats


# ------------------------------------------------------------------ the driver side


def scan_sources(paths: Sequence[str], cfg: BuildConfig, workers: int, progress: bool) -> list:
    kwargs = dict(min_size=cfg.patch_size, max_pixels=cfg.max_pixels,
                  flat_threshold=cfg.flat_threshold, val_fraction=cfg.val_fraction)
    results = []
    bar = _progress_bar(len(paths), "scanning sources", "img", progress and len(paths) > 20)
    if workers > 1 and len(paths) > 20:
        run_local(_inspect_unit, (list(paths), kwargs), range(len(paths)), workers,
                  lambda r: (results.append(r), bar.update(1)))
    else:
        for p in paths:
            results.append(inspect_source(p, **kwargs))
            bar.update(1)
    bar.close()
    return results


def _inspect_unit(context, i):
    paths, kwargs = context
    return inspect_source(paths[i], **kwargs)


def _progress_bar(total, desc, unit, enabled, initial=0):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled,
                file=sys.stderr, dynamic_ncols=True, smoothing=0.1)


def _digest(items) -> str:
    h = hashlib.sha256()
    for item in items:
        h.update(json.dumps(item, sort_keys=True).encode())
    return h.hexdigest()


def _setting_differences(old: dict, new: dict) -> List[str]:
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


def chunk_done(ctx: BuildContext, k: int) -> bool:
    if not part_path(ctx.out, k).exists() or not stats_path(ctx.out, k).exists():
        return False
    out = Path(ctx.out)
    return all((out / f / f"{stem(i, ctx.width)}.png").exists()
               for i in ctx.chunk_range(k) for f in ctx.cfg.image_folders)


def prepare(cfg: BuildConfig, out_root, *, workers: int, resume: bool, progress: bool,
            log: Callable[[str], None], hooks: Optional[dict] = None, extra_settings=None) -> tuple:
    """Everything before the work: plugins, sources, the settings check. Returns (ctx, scan info)."""
    plugins = [str(Path(p).resolve()) for p in cfg.plugins]
    for p in plugins:
        distortions.load_plugin_file(p)
    families = list(cfg.families) if cfg.families else distortions.family_names()
    for name in families:
        distortions.get_family(name)
    out = subset_dir(out_root, cfg.task, cfg.split, cfg.subset)
    build_file = out / BUILD
    if build_file.exists() and not resume:
        state = json.loads(build_file.read_text())
        what = "a complete build" if state.get("complete") else "an unfinished build"
        raise BuildError(f"{out} already holds {what}; pass --resume to finish or check it, "
                         "or choose another --out")
    if not build_file.exists() and out.exists() and any(out.iterdir()) and not resume:
        raise BuildError(f"{out} is not empty and holds no build.json; choose another --out")

    paths, ignored = discover_sources(cfg.sources)
    scan = scan_sources(paths, cfg, workers, progress)
    sources, skipped, other_split = select_sources(scan, cfg.split)
    if not sources:
        usable = len(paths) - len(skipped)
        reasons = Counter(s.reason.split(":")[0] for s in skipped)
        detail = ", ".join(f"{n} {r}" for r, n in reasons.most_common())
        raise SourceError(
            f"no usable source image for the {cfg.split} split: {len(paths)} file(s) found, "
            f"{len(skipped)} skipped ({detail or 'none'}), {other_split} of {usable} usable belong to the "
            f"other split (--val-fraction {cfg.val_fraction}). Add images with --sources, or change "
            "--val-fraction (0 puts every image in train, 1 every image in val).")
    plugin_digests = sorted(distortions.loaded_plugin_files().values())
    settings = cfg.settings(families, _digest([s.to_json() for s in sources]))
    if plugin_digests:
        settings["plugin_digests"] = plugin_digests
    settings.update(extra_settings or {})
    width = stem_width(cfg.n)
    chunk_size = max(10, min(MAX_CHUNK, -(-cfg.n // (max(workers, 1) * 8))))
    if build_file.exists():
        state = json.loads(build_file.read_text())
        diffs = _setting_differences(state["settings"], settings)
        if diffs:
            raise BuildError(f"--resume refused: {out} was built with other settings:\n  - "
                             + "\n  - ".join(diffs)
                             + "\nRun with the original settings, or build into another --out.")
        chunk_size, width = state["chunk_size"], state["stem_width"]
    else:
        for folder in cfg.image_folders:
            (out / folder).mkdir(parents=True, exist_ok=True)
        (out / PARTS).mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / SOURCES, {"usable": [s.to_json() for s in sources],
                                          "skipped": [s.__dict__ for s in skipped],
                                          "other_split": other_split, "ignored_non_image": ignored})
        write_json_atomic(build_file, {"tool": "bapps-build", "version": __version__, "settings": settings,
                                       "chunk_size": chunk_size, "stem_width": width, "complete": False})
    for folder in cfg.image_folders:
        (out / folder).mkdir(parents=True, exist_ok=True)
    (out / PARTS).mkdir(parents=True, exist_ok=True)
    ctx = BuildContext(cfg=cfg, families=families, sources=sources, out=str(out), width=width,
                       chunk_size=chunk_size, plugins=plugins, **(hooks or {}))
    info = {"files_found": len(paths), "ignored_non_image": ignored, "usable_in_split": len(sources),
            "other_split": other_split, "skipped": [{"path": s.path, "reason": s.reason} for s in skipped]}
    return ctx, info


def assemble(ctx: BuildContext) -> dict:
    """Join the parts into manifest.jsonl (index order) and sum the chunk statistics."""
    out = Path(ctx.out)
    tmp = out / f".{MANIFEST}.partial"
    totals = {"family_use": Counter(), "chain_lengths": Counter(), "flat_fallbacks": 0, "crop_attempts": 0}
    with open(tmp, "wb") as f:
        for k in range(ctx.n_chunks):
            f.write(part_path(out, k).read_bytes())
            st = json.loads(stats_path(out, k).read_text())
            totals["family_use"].update(st["family_use"])
            totals["chain_lengths"].update(st["chain_lengths"])
            totals["flat_fallbacks"] += st["flat_fallbacks"]
            totals["crop_attempts"] += st["crop_attempts"]
    os.replace(tmp, out / MANIFEST)
    return totals


def run_build(cfg: BuildConfig, out_root, *, workers: Optional[int] = None, resume: bool = False,
              progress: bool = True, log: Callable[[str], None] = print, hooks: Optional[dict] = None,
              extra_settings=None) -> dict:
    """Build (or finish, with resume) one subset; returns the report (also saved as report.json).

    hooks: chain_sampler, batch_renderer, worker_setup (see BuildContext) for subsets
    beyond the traditional one; extra_settings join build.json's settings (what --resume checks).
    """
    started = time.time()
    workers = workers or default_workers()
    ctx, info = prepare(cfg, out_root, workers=workers, resume=resume, progress=progress, log=log,
                        hooks=hooks, extra_settings=extra_settings)
    out = Path(ctx.out)
    removed = remove_partials(out)
    state = json.loads((out / BUILD).read_text())
    if state.get("complete") and (out / MANIFEST).exists():
        return _already_complete(ctx, log)
    pending = [k for k in range(ctx.n_chunks) if not chunk_done(ctx, k)]
    already = cfg.n - sum(len(ctx.chunk_range(k)) for k in pending)
    if resume and already:
        log(f"resuming: {already} of {cfg.n} examples were already made"
            + (f"; removed {removed} half-written file(s)" if removed else ""))
    bar = _progress_bar(cfg.n, f"{cfg.task}/{cfg.split}/{cfg.subset}", "ex", progress, initial=already)
    work_started = time.time()
    try:
        run_local(build_chunk, ctx, pending, workers, lambda st: bar.update(st["examples"]), setup=setup_worker)
    except KeyboardInterrupt:
        bar.close()
        raise BuildError(f"interrupted; everything written so far is kept. Run the same command with "
                         f"--resume to finish {out}.") from None
    bar.close()
    work_seconds = time.time() - work_started
    totals = assemble(ctx)
    made = cfg.n - already
    report = {
        "dataset": str(out), "task": cfg.task, "split": cfg.split, "subset": cfg.subset, "examples": cfg.n,
        "made_this_run": made, "already_there": already, "workers": workers,
        "seconds": round(time.time() - started, 3), "work_seconds": round(work_seconds, 3),
        "rate_per_second": round(made / work_seconds, 1) if work_seconds > 0 and made else None,
        "sources": info,
        "family_use": dict(sorted(totals["family_use"].items(), key=lambda kv: -kv[1])),
        "chain_lengths": dict(sorted(totals["chain_lengths"].items())),
        "flat_patches_kept": totals["flat_fallbacks"],
        "mean_crop_attempts": round(totals["crop_attempts"] / cfg.n, 3),
    }
    write_json_atomic(out / REPORT, report)
    state["complete"] = True
    write_json_atomic(out / BUILD, state)
    shutil.rmtree(out / PARTS, ignore_errors=True)  # the manifest holds it all now
    return report


def _already_complete(ctx: BuildContext, log) -> dict:
    """--resume on a finished build: check the files are all there and change nothing."""
    out = Path(ctx.out)
    missing = [f"{folder}/{stem(i, ctx.width)}.png" for i in range(ctx.cfg.n) for folder in ctx.cfg.image_folders
               if not (out / folder / f"{stem(i, ctx.width)}.png").exists()]
    if missing:
        raise BuildError(f"{out} is a complete build, but {len(missing)} image(s) were deleted since "
                         f"(e.g. {', '.join(missing[:3])}); run `bapps-build verify`, or rebuild into a new --out")
    log(f"{out} is already complete; nothing to do")
    report = json.loads((out / REPORT).read_text())
    report.update(made_this_run=0, already_there=ctx.cfg.n)
    return report


def format_report(report: dict) -> str:
    lines = [f"{report['examples']} examples in {report['dataset']}"
             + (f" ({report['made_this_run']} made now, {report['already_there']} already there)"
                if report["already_there"] else "")]
    rate = report["rate_per_second"]
    lines.append(f"time {report['seconds']:.1f} s" + (f", {rate:.0f} examples/s with {report['workers']} worker(s)"
                                                     if rate else ""))
    src = report["sources"]
    lines.append(f"sources: {src['usable_in_split']} used, {src['other_split']} in the other split, "
                 f"{len(src['skipped'])} skipped" + (f", {src['ignored_non_image']} non-image file(s) ignored"
                                                    if src["ignored_non_image"] else ""))
    for s in src["skipped"][:20]:
        lines.append(f"  skipped {s['path']}: {s['reason']}")
    if len(src["skipped"]) > 20:
        lines.append(f"  ... and {len(src['skipped']) - 20} more (see report.json)")
    use = report["family_use"]
    if use:
        lines.append("families: " + ", ".join(f"{k} {v}" for k, v in use.items()))
    if report["flat_patches_kept"]:
        lines.append(f"{report['flat_patches_kept']} near-flat patch(es) kept after "
                     f"{BuildConfig.__dataclass_fields__['max_flat_attempts'].default} attempts")
    return "\n".join(lines)
