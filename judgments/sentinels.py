"""Sentinels and practice trials: trials whose answer is obvious, made from the dataset's own patches.

As in the paper: for 2AFC, a reference against a lightly and a heavily noised copy (the light
one is the right answer); for JND, identical pairs ("same") and heavy-noise pairs
("different"). Every image is a pure function of (seed, index): `gaussian_noise` from
`distortions` with its sigma and noise seed recorded, applied to a reference patch of the
subset. The images go to the task folder, never into the BAPPS tree.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np

import distortions
from bapps_build.files import read_png
from bapps_build.layout import reference_folder

LIGHT_SIGMA = 0.02  # barely visible on [0, 1] pixels
HEAVY_SIGMA = 0.25  # beyond the family's own top severity (0.22): unmistakable
# JND sentinels of the paper: 32 identical pairs and 8 heavy-noise pairs per 40
JND_IDENTICAL_SHARE = 0.8
SENTINEL_STREAM, PRACTICE_STREAM = 1, 2


def noised(image_u8: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    family = distortions.get_family("gaussian_noise")
    out = family.apply(image_u8.astype(np.float32) / 255.0, {"sigma": sigma, "seed": seed})
    return distortions.to_uint8(out)


def make_trial(kind: str, source_path: Path, rng: np.random.Generator) -> Dict:
    """One obvious trial: {'recipe': what was done, 'expected': answer, 'images': {folder: uint8}}.

    kind: 'heavy_vs_light' (2AFC), 'identical' or 'heavy_noise' (JND).
    """
    ref = read_png(source_path)
    recipe = {"type": kind, "source": source_path.stem}
    if kind == "heavy_vs_light":
        light = {"family": "gaussian_noise", "params": {"sigma": LIGHT_SIGMA, "seed": distortions.draw_seed(rng)}}
        heavy = {"family": "gaussian_noise", "params": {"sigma": HEAVY_SIGMA, "seed": distortions.draw_seed(rng)}}
        heavy_is = "p0" if rng.random() < 0.5 else "p1"
        light_is = "p1" if heavy_is == "p0" else "p0"
        images = {"ref": ref, heavy_is: noised(ref, **heavy["params"]), light_is: noised(ref, **light["params"])}
        recipe.update({light_is: [light], heavy_is: [heavy]})
        return {"recipe": recipe, "expected": light_is, "images": images}
    if kind == "identical":
        return {"recipe": recipe, "expected": "same", "images": {"p0": ref, "p1": ref.copy()}}
    if kind == "heavy_noise":
        heavy = {"family": "gaussian_noise", "params": {"sigma": HEAVY_SIGMA, "seed": distortions.draw_seed(rng)}}
        recipe["p1"] = [heavy]
        return {"recipe": recipe, "expected": "different",
                "images": {"p0": ref, "p1": noised(ref, **heavy["params"])}}
    raise ValueError(f"unknown sentinel kind {kind!r}")


def sentinel_kinds(task: str, count: int, identical_share: float = JND_IDENTICAL_SHARE) -> List[str]:
    if task == "2afc":
        return ["heavy_vs_light"] * count
    n_identical = int(round(count * identical_share))
    if count >= 2:  # keep both kinds: a worker who always says "same" must be caught
        n_identical = min(max(n_identical, 1), count - 1)
    return ["identical"] * n_identical + ["heavy_noise"] * (count - n_identical)


def make_obvious_trials(subset_path: Path, task: str, stems: List[str], kinds: List[str], seed: int,
                        stream: int) -> List[Dict]:
    """Trials of the given kinds, each from a reference patch drawn at random (without replacement
    while the subset has enough) with its own SeedSequence([seed, stream, k])."""
    folder = Path(subset_path) / reference_folder(task)
    out = []
    pick = np.random.default_rng(np.random.SeedSequence([seed, stream, 1 << 20]))
    order = pick.permutation(len(stems))
    for k, kind in enumerate(kinds):
        rng = np.random.default_rng(np.random.SeedSequence([seed, stream, k]))
        stem = stems[int(order[k % len(order)])]
        out.append(make_trial(kind, folder / f"{stem}.png", rng))
    return out
