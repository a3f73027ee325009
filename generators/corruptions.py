"""Input corruptions: what turns a generator into an autoencoder, a denoiser, a colorizer
or a super-resolver. Pure numpy on float32 (H, W, 3) images in [0, 1]; no torch.

A corruption's params are JSON and name their kind, so a recorded step replays alone:

| kind | params | what it does | severity drives |
|---|---|---|---|
| ``null`` | - | nothing (autoencoding) | nothing |
| ``pink_noise`` | sigma, seed | the ``pink_noise`` family (PSD ~ 1/f, std sigma) | sigma, sigma_min..sigma_max |
| ``white_noise`` | sigma, seed | the ``gaussian_noise`` family (i.i.d., std sigma) | sigma, sigma_min..sigma_max |
| ``color_removal`` | - | the ``saturation`` family at factor 0: CIELAB chroma set to 0 | nothing |
| ``downsample`` | factor | area-average down by the factor, bicubic back up (super-resolution input) | nothing (the factor is the network's) |

The noise kinds reuse the traditional families, so a "pink noise" here is exactly the
pink noise of the ``pink_noise`` family with the same sigma and seed.
"""
from __future__ import annotations

from typing import Mapping

import cv2
import numpy as np

from distortions import draw_seed, finish, get_family, lerp

NOISE_FAMILY = {"pink_noise": "pink_noise", "white_noise": "gaussian_noise"}


def sample_corruption(corruption_config: Mapping, rng: np.random.Generator, severity: float) -> dict:
    """Params of one corruption of the kind the network was trained for."""
    kind = corruption_config["kind"]
    if kind in NOISE_FAMILY:
        sigma = lerp(float(corruption_config["sigma_min"]), float(corruption_config["sigma_max"]), severity)
        return {"kind": kind, "sigma": sigma, "seed": draw_seed(rng)}
    if kind == "downsample":
        return {"kind": kind, "factor": int(corruption_config["factor"])}
    if kind in ("null", "color_removal"):
        return {"kind": kind}
    raise ValueError(f"unknown corruption kind {kind!r}")


def downsample_upsample(image: np.ndarray, factor: int) -> np.ndarray:
    """Area-average to 1/factor of the size (rounded up), then bicubic back to the size."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, -(-w // factor)), max(1, -(-h // factor))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def apply_corruption(image: np.ndarray, params: Mapping) -> np.ndarray:
    """The corrupted input: a pure function of the image and the params."""
    kind = params["kind"]
    image = np.ascontiguousarray(image, dtype=np.float32)
    if kind == "null":
        return image
    if kind == "pink_noise":
        return get_family("pink_noise").apply(image, {"sigma": float(params["sigma"]), "beta": 1.0,
                                                      "seed": int(params["seed"])})
    if kind == "white_noise":
        return get_family("gaussian_noise").apply(image, {"sigma": float(params["sigma"]), "seed": int(params["seed"])})
    if kind == "color_removal":
        return get_family("saturation").apply(image, {"factor": 0.0})
    if kind == "downsample":
        return finish(downsample_upsample(image, int(params["factor"])))
    raise ValueError(f"unknown corruption kind {kind!r} (known: null, pink_noise, white_noise, "
                     "color_removal, downsample)")


def training_corruption(corruption_config: Mapping, rng: np.random.Generator) -> dict:
    """Training draws the strength uniformly over the whole range the family can ask for."""
    return sample_corruption(corruption_config, rng, float(rng.uniform(0.0, 1.0)))


# re-exported for callers that want the seed convention of the families
__all__ = ["sample_corruption", "apply_corruption", "training_corruption", "downsample_upsample", "draw_seed"]
