"""Photometric families: lightness, color cast, contrast, saturation.

Raw strength maps (calibration.json maps severity to them):
- lightness_shift: |delta L*| = 0.5 .. 40 (L* runs 0..100), sign drawn.
- color_shift: |(delta a*, delta b*)| = 0.5 .. 40, direction drawn.
- contrast: factor c = exp(-(0.02 .. 2.0)) = 0.98 .. 0.14 (lower) or exp(0.02 .. 1.2) = 1.02 .. 3.3 (higher).
- saturation: chroma factor 0.97 .. 0 (towards gray) or 1.03 .. 2.5 (oversaturated).
"""
from __future__ import annotations

import math
from typing import List

import cv2
import numpy as np

from ._common import finish, lab_to_rgb, lerp, random_sign, rgb_to_lab
from .family import Family

# this module's families, in the spec's table order; the registry registers them on first use
FAMILIES: List[Family] = []


def sample_lightness_shift(rng, severity):
    sign = random_sign(rng)
    return {"delta_l": sign * lerp(0.5, 40.0, severity)}


# Per-channel arithmetic goes through cv2 with a scalar per channel: one SIMD pass over the
# interleaved pixels, where a numpy view of one channel is a slow strided loop.


def apply_lightness_shift(image, params):
    lab = cv2.add(rgb_to_lab(image), (float(params["delta_l"]), 0.0, 0.0, 0.0))
    lightness = lab[..., 0]
    np.clip(lightness, 0.0, 100.0, out=lightness)
    return finish(lab_to_rgb(lab))


def sample_color_shift(rng, severity):
    angle = rng.uniform(0.0, 2.0 * math.pi)
    magnitude = lerp(0.5, 40.0, severity)
    return {"delta_a": magnitude * math.cos(angle), "delta_b": magnitude * math.sin(angle)}


def apply_color_shift(image, params):
    lab = cv2.add(rgb_to_lab(image), (0.0, float(params["delta_a"]), float(params["delta_b"]), 0.0))
    return finish(lab_to_rgb(lab))


def sample_contrast(rng, severity):
    if rng.random() < 0.5:
        return {"factor": math.exp(-lerp(0.02, 2.0, severity))}
    return {"factor": math.exp(lerp(0.02, 1.2, severity))}


def apply_contrast(image, params):
    # per-channel mean, as ImageNet-C: (x - mean) c + mean; no min-max stretch (KADID's habit).
    # One affine pass per pixel (cv2.transform): c x + (1 - c) mean.
    c = float(params["factor"])
    mean = cv2.mean(image)[:3]
    matrix = np.zeros((3, 4), dtype=np.float64)
    matrix[:, :3] = np.eye(3) * c
    matrix[:, 3] = [(1.0 - c) * m for m in mean]
    return finish(cv2.transform(image, matrix))


def sample_saturation(rng, severity):
    if rng.random() < 0.5:
        return {"factor": lerp(0.97, 0.0, severity)}
    # oversaturation is far more visible than desaturation at the same step (it leaves the
    # gamut): a shorter range keeps the two directions closer, so the family's median is a
    # stable statistic rather than a pick between two far-apart clusters
    return {"factor": lerp(1.03, 2.5, severity)}


def apply_saturation(image, params):
    k = float(params["factor"])
    lab = cv2.multiply(rgb_to_lab(image), (1.0, k, k, 1.0))
    return finish(lab_to_rgb(lab))


FAMILIES.append(Family("lightness_shift", "photometric", sample_lightness_shift, apply_lightness_shift,
                       {"delta_l": "L* units added to lightness, -40..40 (|.| >= 0.5)"},
                       "|delta_l| from 0.5 to 40 L* units; the sign is drawn"))
FAMILIES.append(Family("color_shift", "photometric", sample_color_shift, apply_color_shift,
                       {"delta_a": "a* units added, -40..40", "delta_b": "b* units added, -40..40"},
                       "length of the (a*, b*) cast from 0.5 to 40; the direction is drawn"))
FAMILIES.append(Family("contrast", "photometric", sample_contrast, apply_contrast,
                       {"factor": "deviations from the per-channel mean are scaled by it, 0.14..3.3"},
                       "factor from 0.98 to 0.14 (lower) or 1.02 to 3.3 (higher); the direction is drawn"))
FAMILIES.append(Family("saturation", "photometric", sample_saturation, apply_saturation,
                       {"factor": "chroma (a*, b*) scale, 0..2.5"},
                       "factor from 0.97 to 0 (towards gray) or 1.03 to 2.5 (oversaturated); the direction is drawn"))
