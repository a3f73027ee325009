"""Recipes: what example i is made of, drawn from (root seed, i) alone, and how to render it.

Each example has independent random streams, numpy
SeedSequence([seed, i, stream, *domain]): one for the patch (source, scale, crop) and one
per distorted patch. The domain words come from the build's task, split and subset, so
train, val and JND builds made with the same --seed share no recipe and no noise field.
The same seed gives the same crop whatever the distortion settings, and example i never
depends on any other example, on the worker that made it or on the order of work.

The patch is cut with a margin of real context around it (crop["margin"] pixels, see
patches.CONTEXT_MARGIN): the chains are applied to the context and the center is kept,
so a shift or a warp brings in the photo's own pixels rather than a mirror image.
Records without a margin (older builds) are the patch itself and replay as before.
"""
from __future__ import annotations

import functools
import hashlib
from typing import Callable, Dict, Sequence, Tuple, TypeVar

import numpy as np

from distortions import apply_chain, get_family, sample_chain, to_uint8
from distortions._common import generator

from .config import BuildConfig
from .patch_spec import PatchSpec
from .patches import crop_record, extract_patch, flatness, sample_window
from .sources import Source

STREAMS = {"patch": 0, "p0": 1, "p1": 2}
T = TypeVar("T")


@functools.lru_cache(maxsize=32)
def stream_domain(task: str, split: str, subset: str) -> Tuple[int, int]:
    """Two 32-bit words naming the build's task, split and subset in the seed streams."""
    digest = hashlib.sha256(f"{task}/{split}/{subset}".encode()).digest()
    return int.from_bytes(digest[:4], "little"), int.from_bytes(digest[4:8], "little")


def stream_rng(root_seed: int, index: int, stream: str, domain: Sequence[int] = ()) -> np.random.Generator:
    """The generator of one stream of one example. An empty domain is the scheme of the
    first builds (and of `real` subsets), kept so that their seeds mean what they meant."""
    return generator(np.random.SeedSequence([int(root_seed), int(index), STREAMS[stream], *domain]))


def config_rng(cfg: BuildConfig, index: int, stream: str) -> np.random.Generator:
    return stream_rng(cfg.seed, index, stream, stream_domain(cfg.task, cfg.split, cfg.subset))


def center(image: np.ndarray, margin: int) -> np.ndarray:
    """The patch inside a context image (the image itself when margin is 0)."""
    if not margin:
        return image
    return image[margin:image.shape[0] - margin, margin:image.shape[1] - margin]


def draw_least_flat(spec: PatchSpec, draw: Callable[[], Tuple[float, Sequence[int], T]]) -> Tuple[T, dict]:
    """Call draw() -> (flatness, crop box, what was drawn) until the patch is not near-flat;
    after spec.max_flat_attempts keep the least flat one seen. Returns it and its crop
    record, which says how many attempts it took (and flat_fallback when even it is flat)."""
    best = None
    for attempt in range(1, spec.max_flat_attempts + 1):
        score, box, drawn = draw()
        if best is None or score > best[0]:
            best = (score, box, drawn, attempt)
        if score >= spec.flat_threshold:
            break
    score, box, drawn, attempt = best
    crop = crop_record(box, spec.side, attempt)
    if spec.context_margin:
        crop["margin"] = int(spec.context_margin)
    if score < spec.flat_threshold:
        crop["flat_fallback"] = True
    return drawn, crop


def sample_patch(rng: np.random.Generator, spec: PatchSpec, sources: Sequence[Source],
                 load: Callable[[Source], np.ndarray]) -> Tuple[Source, dict, np.ndarray]:
    """Draw (source, crop) until the patch is not near-flat (draw_least_flat).

    With a context margin, the window cut is the patch plus that many pixels of context on
    every side (crop["size"] = spec.side) and what is returned is that context; the
    flatness test looks at the patch alone."""
    def draw():
        source = sources[int(rng.integers(len(sources)))]
        box = sample_window(rng, source.width, source.height, spec.side, spec.scale_range)
        context = extract_patch(load(source), box, spec.side)
        return flatness(center(context, spec.context_margin)), box, (source, context)

    (source, context), crop = draw_least_flat(spec, draw)
    return source, crop, context


def sample_recipe(index: int, cfg: BuildConfig, families: Sequence[str], sources: Sequence[Source],
                  load: Callable[[Source], np.ndarray], stem: str,
                  chain_sampler=None) -> Tuple[dict, np.ndarray]:
    """The recipe of example `index` and its reference context (uint8; the patch itself
    when the build has no context margin).

    chain_sampler(rng, families, cfg) -> chain defaults to the traditional sampler (the JND
    one for --task jnd); the CNN subsets pass their own.
    """
    source, crop, context = sample_patch(config_rng(cfg, index, "patch"), cfg.patch_spec, sources, load)
    recipe = {"id": index, "stem": stem, "seed": cfg.seed, "task": cfg.task,
              "seed_domain": [cfg.task, cfg.split, cfg.subset],
              "source": {"path": source.path, "sha256": source.sha256}, "crop": crop}
    sampler = chain_sampler or default_chain_sampler
    if cfg.task == "jnd":
        recipe["p0"] = []  # the reference itself, shown first
        recipe["p1"] = sampler(config_rng(cfg, index, "p1"), families, cfg)
    else:
        recipe["p0"] = sampler(config_rng(cfg, index, "p0"), families, cfg)
        recipe["p1"] = sampler(config_rng(cfg, index, "p1"), families, cfg)
    return recipe, context


# JND pairs ask whether a difference is visible at all, so their severities sit around the
# threshold (s = 0 is where each family's median visibility is the threshold): one family
# per pair (--max-chain defaults to 1 for jnd: two families at s = 0 together are above the
# threshold 90% of the time) at s = JND_SEVERITY_SCALE * u ** 2, u uniform, puts about 30%
# of the pairs of a default (train) build below the measure's threshold (BAPPS: people
# called 27.9% of its JND test pairs "same"); the share depends on the photos (48% on the
# two val photos). docs/calibration.md shows the measured shares.
JND_SEVERITY_SCALE = 0.08


def jnd_severity(rng: np.random.Generator) -> float:
    return float(JND_SEVERITY_SCALE * rng.random() ** 2)


def default_chain_sampler(rng, families, cfg: BuildConfig):
    if cfg.severity_range is None and cfg.task == "jnd":
        return sample_chain(rng, families, max_chain=cfg.longest_chain, min_chain=cfg.min_chain,
                            severity_sampler=jnd_severity)
    return sample_chain(rng, families, max_chain=cfg.longest_chain, min_chain=cfg.min_chain,
                        severity_range=cfg.severity_range or (0.0, 1.0))


def render(recipe: dict, context_u8: np.ndarray) -> Dict[str, np.ndarray]:
    """The example's images (uint8) by folder name, from its reference context.

    Distortions act on the quantised context, and the patch is its center, so applying a
    recorded chain to the recorded context (reference_patch) reproduces p0.png and p1.png
    exactly; without a margin the context is the written ref.png itself.
    """
    margin = int(recipe.get("crop", {}).get("margin", 0))
    context = context_u8.astype(np.float32) / np.float32(255.0)
    distorted = {key: apply_in_context(context, recipe[key], margin) for key in ("p0", "p1") if recipe[key]}
    return images_by_folder(recipe, np.ascontiguousarray(center(context_u8, margin)), distorted)


# Families that never move or mix neighbouring pixels (their noise fields come from the seed;
# contrast uses the patch's own mean): no border artifact for context to hide, so a chain made
# of them alone runs on the bare patch (a third fewer pixels). Everything else (blur, spatial,
# JPEG's blocks, plugins) gets the context.
POINTWISE_GROUPS = frozenset({"photometric", "noise"})
# ... except the generator networks (group "cnn"), trained on bare patches.
BARE_PATCH_GROUPS = frozenset({"cnn"})


def apply_in_context(context: np.ndarray, chain, margin: int) -> np.ndarray:
    """A chain applied to the context, the patch kept (see POINTWISE_GROUPS)."""
    if margin:
        groups = {get_family(step["family"]).group for step in chain}
        if groups & BARE_PATCH_GROUPS or groups <= POINTWISE_GROUPS:
            return apply_chain(np.ascontiguousarray(center(context, margin)), chain)
    return center(apply_chain(context, chain), margin)


def images_by_folder(recipe: dict, ref_u8: np.ndarray, distorted: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The uint8 images of an example from its float distorted patches (p0 absent in JND:
    the reference itself)."""
    p0 = to_uint8(distorted["p0"]) if recipe["p0"] else ref_u8
    p1 = to_uint8(distorted["p1"])
    if recipe.get("task", "2afc") == "jnd":
        return {"p0": p0, "p1": p1}
    return {"ref": ref_u8, "p0": p0, "p1": p1}


def reference_patch(recipe: dict, image: np.ndarray) -> np.ndarray:
    """Re-cut the reference context (the patch when there is no margin) from its source,
    from the record alone."""
    return extract_patch(image, recipe["crop"]["box"], recipe["crop"]["size"])
