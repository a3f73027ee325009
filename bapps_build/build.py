"""`bapps-build distort`: sources -> patches -> recipes -> images -> a BAPPS tree or shards.

The chunked machinery (resume, atomic files, executors, assembly) is in jobs.py; this
module says how a distort example is made: a recipe drawn from (seed, index), rendered.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

import distortions

from .config import BuildConfig
from .executors import default_workers
from .jobs import BuildError, Job, check_target, holding_lock, open_job, plan_chunk_size, run_job
from .layout import SOURCES, stem, stem_width, subset_dir
from .recipes import render, sample_recipe
from .stats import build_difficulty
from .sources import Source
from .split import load_split

__all__ = ["BuildContext", "BuildError", "run_build", "format_report", "prepare"]


@dataclass
class BuildContext(Job):
    """Everything a worker needs to make any chunk of a distort build; sent once per worker."""

    cfg: BuildConfig = None
    families: List[str] = field(default_factory=list)
    sources: List[Source] = field(default_factory=list)
    plugins: List[str] = field(default_factory=list)
    # Hooks for subsets beyond the traditional one (module-level callables: they are pickled
    # to the workers). chain_sampler(rng, families, cfg) -> chain;
    # batch_renderer(ctx, recipes, refs) -> [images by folder], for batched inference;
    # worker_setup(ctx) runs once per worker process (load a generator bank, ...).
    chain_sampler: Optional[Callable] = None
    batch_renderer: Optional[Callable] = None
    worker_setup: Optional[Callable] = None

    def setup_worker(self) -> None:
        for p in self.plugins:
            distortions.load_plugin_file(p)
        if self.worker_setup is not None:
            self.worker_setup(self)

    def make_examples(self, indices):
        cache = self.source_cache(self.cfg.max_pixels)  # one per worker process (jobs.Job.source_cache)
        sampled = [sample_recipe(i, self.cfg, self.families, self.sources, cache.get, stem(i, self.width),
                                 chain_sampler=self.chain_sampler) for i in indices]
        if self.batch_renderer is not None:
            rendered = self.batch_renderer(self, [r for r, _ in sampled], [ref for _, ref in sampled])
        else:
            rendered = [render(recipe, ref) for recipe, ref in sampled]
        return [(recipe, images) for (recipe, _), images in zip(sampled, rendered)]

    def tally(self, recipe, counts):
        family_use = counts.setdefault("family_use", {})
        lengths = counts.setdefault("chain_lengths", {})
        for key in ("p0", "p1"):
            if recipe[key]:
                lengths[str(len(recipe[key]))] = lengths.get(str(len(recipe[key])), 0) + 1
                for step in recipe[key]:
                    family_use[step["family"]] = family_use.get(step["family"], 0) + 1
        counts["flat_fallbacks"] = counts.get("flat_fallbacks", 0) + int(recipe["crop"].get("flat_fallback", False))
        counts["crop_attempts"] = counts.get("crop_attempts", 0) + recipe["crop"]["attempts"]


def _digest(items) -> str:
    h = hashlib.sha256()
    for item in items:
        h.update(json.dumps(item, sort_keys=True).encode())
    return h.hexdigest()


# ------------------------------------------------------------------ the driver


def prepare(cfg: BuildConfig, out_root, *, workers: int, resume: bool, progress: bool,
            hooks: Optional[dict] = None, extra_settings=None) -> tuple:
    """Everything before the work: plugins, sources, the settings check. Returns (ctx, scan info)."""
    plugins = [str(Path(p).resolve()) for p in cfg.plugins]
    for p in plugins:
        distortions.load_plugin_file(p)
    families = list(cfg.families) if cfg.families else distortions.family_names()
    for name in families:
        distortions.get_family(name)
    out = subset_dir(out_root, cfg.task, cfg.split, cfg.subset)
    state = check_target(out, resume)

    split = load_split(cfg.sources, cfg.split, cfg.patch_spec, val_fraction=cfg.val_fraction,
                       max_pixels=cfg.max_pixels, workers=workers, progress=progress).require()
    sources, skipped = split.sources, split.skipped
    settings = cfg.settings(families, _digest([s.to_json() for s in sources]))
    plugin_digests = sorted(distortions.loaded_plugin_files().values())
    if plugin_digests:
        settings["plugin_digests"] = plugin_digests
    settings.update(extra_settings or {})
    chunk_size = plan_chunk_size(cfg.n, workers, cfg.format, cfg.maxcount)
    side = {SOURCES: {"usable": [s.to_json() for s in sources], "skipped": [s.__dict__ for s in skipped],
                      "other_split": split.other_split, "ignored_non_image": split.ignored_non_image}}
    width, chunk_size = open_job(out, state, settings, stem_width(cfg.n), chunk_size, cfg.image_folders,
                                 cfg.format, side_files=side)
    ctx = BuildContext(out=str(out), n=cfg.n, task=cfg.task, folders=cfg.image_folders, width=width,
                       chunk_size=chunk_size, fmt=cfg.format, shard_name=f"{cfg.task}-{cfg.split}-{cfg.subset}",
                       cfg=cfg, families=families, sources=sources, plugins=plugins, **(hooks or {}))
    info = {"files_found": split.files_found, "ignored_non_image": split.ignored_non_image,
            "usable_in_split": len(sources), "other_split": split.other_split,
            "skipped": [{"path": s.path, "reason": s.reason} for s in skipped]}
    return ctx, info


@holding_lock(lambda cfg, out_root: subset_dir(out_root, cfg.task, cfg.split, cfg.subset), "bapps-build distort")
def run_build(cfg: BuildConfig, out_root, *, workers: Optional[int] = None, resume: bool = False,
              progress: bool = True, log: Callable[[str], None] = print, hooks: Optional[dict] = None,
              extra_settings=None, executor: str = "local", scheduler: Optional[str] = None) -> dict:
    """Build (or finish, with resume) one subset; returns the report (also saved as report.json).

    hooks: chain_sampler, batch_renderer, worker_setup (see BuildContext) for subsets
    beyond the traditional one; extra_settings join build.json's settings (what --resume checks).
    """
    started = time.time()
    workers = workers or default_workers()
    ctx, info = prepare(cfg, out_root, workers=workers, resume=resume, progress=progress,
                        hooks=hooks, extra_settings=extra_settings)

    def extra(totals):
        return {"family_use": dict(sorted(totals.get("family_use", {}).items(), key=lambda kv: -kv[1])),
                "chain_lengths": dict(sorted(totals.get("chain_lengths", {}).items())),
                "flat_patches_kept": totals.get("flat_fallbacks", 0),
                "max_flat_attempts": cfg.max_flat_attempts,
                "mean_crop_attempts": round(totals.get("crop_attempts", 0) / cfg.n, 3),
                # the difficulty profile of what was just written (bapps_build/stats.py; at most
                # BUILD_SAMPLE examples, a few seconds)
                "difficulty": build_difficulty(ctx.out, cfg.task)}

    return run_job(ctx, workers=workers, executor=executor, scheduler=scheduler, resume=resume,
                   progress=progress, log=log, desc=f"{cfg.task}/{cfg.split}/{cfg.subset}",
                   report_base={"task": cfg.task, "split": cfg.split, "subset": cfg.subset, "sources": info},
                   started=started, report_extra=extra)


def format_report(report: dict) -> str:
    lines = [f"{report['examples']} examples in {report['dataset']}"
             + (f" ({report['made_this_run']} made now, {report['already_there']} already there)"
                if report["already_there"] else "")]
    rate = report["rate_per_second"]
    lines.append(f"time {report['seconds']:.1f} s" + (f", {rate:.0f} examples/s with {report['workers']} worker(s)"
                                                     if rate else ""))
    src = report.get("sources")
    if src and "usable_in_split" in src:
        lines.append(f"sources: {src['usable_in_split']} used, {src['other_split']} in the other split, "
                     f"{len(src['skipped'])} skipped" + (f", {src['ignored_non_image']} non-image file(s) ignored"
                                                        if src["ignored_non_image"] else ""))
    if src and "matched_images" in src:
        lines.append(f"sources: {src['matched_images']} reference image(s) with two or more algorithm outputs, "
                     f"{len(src['skipped'])} problem(s) skipped")
    for s in (src or {}).get("skipped", [])[:20]:
        lines.append(f"  skipped {s['path']}: {s['reason']}")
    if src and len(src.get("skipped", [])) > 20:
        lines.append(f"  ... and {len(src['skipped']) - 20} more (see report.json)")
    for key, label in (("family_use", "families"), ("algorithm_use", "algorithms")):
        use = report.get(key)
        if use:
            lines.append(f"{label}: " + ", ".join(f"{k} {v}" for k, v in use.items()))
    if report.get("flat_patches_kept"):
        lines.append(f"{report['flat_patches_kept']} near-flat patch(es) kept after "
                     f"{report['max_flat_attempts']} attempts")
    return "\n".join(lines)
