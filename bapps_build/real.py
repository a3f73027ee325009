"""`bapps-build real`: triplets from the outputs of real algorithms (BAPPS's superres,
deblur, colorization and frame-interpolation subsets).

Each reference image is matched by file stem with the outputs of several algorithms run on
it (one folder per algorithm). Example i draws (from seed and i alone) a reference image,
two different algorithms (p0 and p1, in a random order) and one crop box, optionally after
a random rescale, and cuts the same box from all three. The manifest records which
crop and, as p0 and p1, one step each of family "real" naming the algorithm's output
(manifest.real_step).
"""
from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .executors import default_workers
from .files import sha256_bytes
from .errors import ConfigError
from .jobs import Job, check_target, holding_lock, open_job, plan_chunk_size, run_job
from .layout import stem, stem_width, subset_dir
from .manifest import real_output, real_step, upgrade_record
from .patch_spec import FLAT_THRESHOLD, MAX_FLAT_ATTEMPTS, PatchSpec
from .patches import extract_patch, flatness, sample_window
from .sources import (IMAGE_EXTENSIONS, DEFAULT_MAX_PIXELS, Source, SourceCache, SourceError, UnusableSource,
                      read_source)
from .recipes import draw_least_flat, stream_rng


@dataclass(frozen=True)
class RealImage:
    """A reference and the algorithms whose outputs match it (same stem, same size)."""

    stem: str
    reference: Source
    outputs: Tuple[Tuple[str, Source], ...]  # (algorithm, output)


def _by_stem(folder: Path, problems: List[dict]) -> Dict[str, Path]:
    found: Dict[str, Path] = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                continue
            key = os.path.splitext(name)[0]
            path = Path(root) / name
            if key in found:
                problems.append({"path": str(path), "reason": f"same stem as {found[key]}; this one is ignored"})
                continue
            found[key] = path
    return found


def _describe(path: Path, max_pixels: int) -> Source:
    data, image = read_source(str(path), max_pixels)
    return Source(str(path.resolve()), hashlib.sha256(data).hexdigest(), image.shape[1], image.shape[0], "val")


def match_outputs(reference_dir, output_dirs: Sequence, *, min_size: int, max_pixels: int = DEFAULT_MAX_PIXELS
                  ) -> Tuple[List[RealImage], List[dict]]:
    """Pair each reference with its algorithms' outputs; everything unusable is reported, not fatal."""
    reference_dir = Path(reference_dir)
    if not reference_dir.is_dir():
        raise SourceError(f"--reference {reference_dir}: no such folder")
    if len(output_dirs) < 2:
        raise SourceError("--outputs needs at least two algorithm folders (p0 and p1 come from two algorithms)")
    names = [Path(d).name for d in output_dirs]
    if len(set(names)) != len(names):
        raise SourceError(f"--outputs folders must have distinct names (they name the algorithms): {names}")
    problems: List[dict] = []
    refs = _by_stem(reference_dir, problems)
    outputs = {}
    for d in output_dirs:
        if not Path(d).is_dir():
            raise SourceError(f"--outputs {d}: no such folder")
        outputs[Path(d).name] = _by_stem(Path(d), problems)
    matched = []
    for key, ref_path in sorted(refs.items()):
        try:
            ref = _describe(ref_path, max_pixels)
        except UnusableSource as exc:
            problems.append({"path": str(ref_path), "reason": str(exc)})
            continue
        if min(ref.width, ref.height) < min_size:
            problems.append({"path": str(ref_path), "reason": f"too small: {ref.width}x{ref.height}, "
                                                              f"needs {min_size} px"})
            continue
        have = []
        for algorithm, files in outputs.items():
            path = files.get(key)
            if path is None:
                problems.append({"path": str(ref_path), "reason": f"no output of {algorithm} for it "
                                                                  f"(no {key}.* in {algorithm}/)"})
                continue
            try:
                out = _describe(path, max_pixels)
            except UnusableSource as exc:
                problems.append({"path": str(path), "reason": str(exc)})
                continue
            if (out.width, out.height) != (ref.width, ref.height):
                problems.append({"path": str(path), "reason": f"size {out.width}x{out.height} differs from the "
                                                              f"reference's {ref.width}x{ref.height}"})
                continue
            have.append((algorithm, out))
        if len(have) < 2:
            problems.append({"path": str(ref_path), "reason": f"only {len(have)} usable algorithm output(s); "
                                                              "a triplet needs two"})
            continue
        matched.append(RealImage(key, ref, tuple(have)))
    for algorithm, files in outputs.items():
        for key, path in sorted(files.items()):
            if key not in refs:
                problems.append({"path": str(path), "reason": f"no reference image named {key}.* for it"})
    return matched, problems


@dataclass(frozen=True)
class RealConfig:
    n: int
    name: str  # the subset's name (`real --subset`), recorded as "name" in build.json
    seed: int = 0
    split: str = "val"
    patch_size: int = 64
    scale_range: Tuple[float, float] = (1.0, 1.0)
    flat_threshold: float = FLAT_THRESHOLD
    max_flat_attempts: int = MAX_FLAT_ATTEMPTS
    max_pixels: int = DEFAULT_MAX_PIXELS
    format: str = "bapps"
    maxcount: int = 2000

    def __post_init__(self):
        if self.n < 1:
            raise ConfigError(f"--n must be positive, got {self.n}")
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"--subset must be a plain folder name such as superres, got {self.name!r}")
        lo, hi = self.scale_range
        if not 0 < lo <= hi or not math.isfinite(hi):
            raise ConfigError(f"--scale-range needs 0 < MIN <= MAX, got {lo} {hi}")

    @property
    def patch_spec(self) -> PatchSpec:
        """The reference's patch draw (no context: the outputs are cut from the same box)."""
        return PatchSpec(self.patch_size, tuple(self.scale_range), self.flat_threshold, self.max_flat_attempts)


@dataclass
class RealJob(Job):
    cfg: RealConfig = None
    images: List[RealImage] = field(default_factory=list)

    def make_examples(self, indices):
        cache = self.source_cache(self.cfg.max_pixels)  # one per worker process (jobs.Job.source_cache)
        return [self.make_example(i, cache) for i in indices]

    def make_example(self, i: int, cache: SourceCache):
        cfg, spec = self.cfg, self.cfg.patch_spec
        rng = stream_rng(cfg.seed, i, "patch")

        def draw():
            image = self.images[int(rng.integers(len(self.images)))]
            picks = rng.choice(len(image.outputs), size=2, replace=False)
            box = sample_window(rng, image.reference.width, image.reference.height, spec.side, spec.scale_range)
            ref = extract_patch(cache.get(image.reference), box, spec.side)
            return flatness(ref), box, (image, picks, box, ref)

        (image, picks, box, ref), crop = draw_least_flat(spec, draw)
        recipe = {"id": i, "stem": stem(i, self.width), "seed": cfg.seed, "task": "2afc", "kind": "real",
                  "source": {"path": image.reference.path, "sha256": image.reference.sha256}, "crop": crop}
        images = {"ref": ref}
        for folder, pick in zip(("p0", "p1"), picks):
            algorithm, output = image.outputs[int(pick)]
            recipe[folder] = [real_step(algorithm, output.path, output.sha256)]
            images[folder] = extract_patch(cache.get(output), box, spec.side)
        return recipe, images

    def tally(self, recipe, counts):
        use = counts.setdefault("algorithm_use", {})
        for folder in ("p0", "p1"):
            a = real_output(recipe[folder])["algorithm"]
            use[a] = use.get(a, 0) + 1
        counts["flat_fallbacks"] = counts.get("flat_fallbacks", 0) + int(recipe["crop"].get("flat_fallback", False))


def render_real(recipe: dict, max_pixels: int = 0) -> Dict[str, np.ndarray]:
    """Re-cut a real-algorithm example from its record alone (for replay)."""
    recipe = upgrade_record(recipe)
    images = {}
    for folder, entry in (("ref", recipe["source"]), ("p0", real_output(recipe["p0"])),
                          ("p1", real_output(recipe["p1"]))):
        data, pixels = read_source(entry["path"], max_pixels)
        if sha256_bytes(data) != entry["sha256"]:
            raise UnusableSource(f"{entry['path']} has changed since example {recipe['id']} was made")
        images[folder] = extract_patch(pixels, recipe["crop"]["box"], recipe["crop"]["size"])
    return images


@holding_lock(lambda cfg, out_root: subset_dir(out_root, "2afc", cfg.split, cfg.name), "bapps-build real")
def run_real(cfg: RealConfig, reference_dir, output_dirs, out_root, *, workers: Optional[int] = None,
             resume: bool = False, progress: bool = True, log: Callable[[str], None] = print,
             executor: str = "local", scheduler: Optional[str] = None) -> dict:
    started = time.time()
    workers = workers or default_workers()
    out = subset_dir(out_root, "2afc", cfg.split, cfg.name)
    state = check_target(out, resume)
    images, problems = match_outputs(reference_dir, output_dirs, min_size=cfg.patch_size, max_pixels=cfg.max_pixels)
    if not images:
        raise SourceError(f"no reference image in {reference_dir} has two usable algorithm outputs "
                          f"({len(problems)} problem(s), e.g. "
                          + "; ".join(f"{p['path']}: {p['reason']}" for p in problems[:3]) + ")")
    digest = hashlib.sha256()
    for im in images:
        digest.update(im.reference.sha256.encode())
        for algorithm, src in im.outputs:
            digest.update(f"{algorithm}:{src.sha256}".encode())
    settings = {"kind": "real", "n": cfg.n, "name": cfg.name, "seed": cfg.seed, "split": cfg.split,
                "patch_size": cfg.patch_size, "scale_range": list(cfg.scale_range),
                "flat_threshold": cfg.flat_threshold, "max_flat_attempts": cfg.max_flat_attempts,
                "format": cfg.format, "maxcount": cfg.maxcount, "sources_digest": digest.hexdigest()}
    chunk = plan_chunk_size(cfg.n, workers, cfg.format, cfg.maxcount)
    side = {"sources.json": {"matched": [{"stem": im.stem, "reference": im.reference.path,
                                          "algorithms": [a for a, _ in im.outputs]} for im in images],
                             "skipped": problems}}
    width, chunk = open_job(out, state, settings, stem_width(cfg.n), chunk, ("ref", "p0", "p1"), cfg.format,
                            side_files=side)
    job = RealJob(out=str(out), n=cfg.n, task="2afc", folders=("ref", "p0", "p1"), width=width, chunk_size=chunk,
                  fmt=cfg.format, shard_name=f"2afc-{cfg.split}-{cfg.name}", cfg=cfg, images=images)
    algorithms = sorted({a for im in images for a, _ in im.outputs})

    def extra(totals):
        return {"algorithm_use": dict(sorted(totals.get("algorithm_use", {}).items())),
                "flat_patches_kept": totals.get("flat_fallbacks", 0), "max_flat_attempts": cfg.max_flat_attempts}

    return run_job(job, workers=workers, executor=executor, scheduler=scheduler, resume=resume, progress=progress,
                   log=log, desc=f"2afc/{cfg.split}/{cfg.name}",
                   report_base={"task": "2afc", "split": cfg.split, "subset": cfg.name, "kind": "real",
                                "algorithms": algorithms,
                                "sources": {"matched_images": len(images), "skipped": problems}},
                   started=started, report_extra=extra)
