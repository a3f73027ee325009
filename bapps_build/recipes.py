"""Recipes: what example i is made of, drawn from (root seed, i) alone, and how to render it.

Each example has independent random streams (numpy SeedSequence([seed, i, stream])): one
for the patch (source, scale, crop) and one per distorted patch. The same seed therefore
gives the same crop whatever the distortion settings, and example i never depends on any
other example, on the worker that made it or on the order of work.
"""
from __future__ import annotations

from typing import Callable, Dict, Sequence, Tuple

import numpy as np

from distortions import apply_chain, sample_chain, to_uint8
from distortions._common import generator

from .config import BuildConfig
from .patches import crop_record, extract_patch, flatness, sample_window
from .sources import Source

STREAMS = {"patch": 0, "p0": 1, "p1": 2}


def stream_rng(root_seed: int, index: int, stream: str) -> np.random.Generator:
    return generator(np.random.SeedSequence([int(root_seed), int(index), STREAMS[stream]]))


def sample_patch(rng: np.random.Generator, cfg: BuildConfig, sources: Sequence[Source],
                 load: Callable[[Source], np.ndarray]) -> Tuple[Source, dict, np.ndarray]:
    """Draw (source, crop) until the patch is not near-flat; after max_flat_attempts keep
    the least flat one seen (and the record says how many attempts it took)."""
    best = None
    for attempt in range(1, cfg.max_flat_attempts + 1):
        source = sources[int(rng.integers(len(sources)))]
        box = sample_window(rng, source.width, source.height, cfg.patch_size, cfg.scale_range)
        patch = extract_patch(load(source), box, cfg.patch_size)
        score = flatness(patch)
        if best is None or score > best[0]:
            best = (score, source, box, patch, attempt)
        if score >= cfg.flat_threshold:
            break
    score, source, box, patch, attempt = best
    crop = crop_record(box, cfg.patch_size, attempt)
    if score < cfg.flat_threshold:
        crop["flat_fallback"] = True
    return source, crop, patch


def sample_recipe(index: int, cfg: BuildConfig, families: Sequence[str], sources: Sequence[Source],
                  load: Callable[[Source], np.ndarray], stem: str,
                  chain_sampler=None) -> Tuple[dict, np.ndarray]:
    """The recipe of example `index` and its reference patch (uint8).

    chain_sampler(rng, families, cfg) -> chain defaults to the traditional sampler; the CNN
    subsets pass their own.
    """
    source, crop, ref = sample_patch(stream_rng(cfg.seed, index, "patch"), cfg, sources, load)
    recipe = {"id": index, "stem": stem, "seed": cfg.seed, "task": cfg.task,
              "source": {"path": source.path, "sha256": source.sha256}, "crop": crop}
    sampler = chain_sampler or default_chain_sampler
    if cfg.task == "jnd":
        recipe["p0"] = []  # the reference itself, shown first
        recipe["p1"] = sampler(stream_rng(cfg.seed, index, "p1"), families, cfg)
    else:
        recipe["p0"] = sampler(stream_rng(cfg.seed, index, "p0"), families, cfg)
        recipe["p1"] = sampler(stream_rng(cfg.seed, index, "p1"), families, cfg)
    return recipe, ref


def default_chain_sampler(rng, families, cfg: BuildConfig):
    return sample_chain(rng, families, max_chain=cfg.max_chain, min_chain=cfg.min_chain,
                        severity_range=cfg.severity_range)


def render(recipe: dict, ref_u8: np.ndarray) -> Dict[str, np.ndarray]:
    """The example's images (uint8) by folder name.

    Distortions act on the quantised reference, so that applying a recorded chain to the
    written ref.png reproduces p0.png and p1.png exactly.
    """
    ref = ref_u8.astype(np.float32) / np.float32(255.0)
    distorted = {key: apply_chain(ref, recipe[key]) for key in ("p0", "p1") if recipe[key]}
    return images_by_folder(recipe, ref_u8, distorted)


def images_by_folder(recipe: dict, ref_u8: np.ndarray, distorted: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The uint8 images of an example from its float distorted patches (p0 absent in JND:
    the reference itself)."""
    p0 = to_uint8(distorted["p0"]) if recipe["p0"] else ref_u8
    p1 = to_uint8(distorted["p1"])
    if recipe.get("task", "2afc") == "jnd":
        return {"p0": p0, "p1": p1}
    return {"ref": ref_u8, "p0": p0, "p1": p1}


def reference_patch(recipe: dict, image: np.ndarray) -> np.ndarray:
    """Re-cut the reference from its source, from the record alone."""
    return extract_patch(image, recipe["crop"]["box"], recipe["crop"]["size"])
