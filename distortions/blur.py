"""Blur families: Gaussian blur and bilateral (edge-preserving) filtering.

Raw strength maps (pixels of the image the family is applied to; calibration.json maps
severity to them):
- gaussian_blur: sigma = 0.2 .. 8.0 (ImageNet-C's 64-px script stops at 1.5, KADID at 5 on
  full images).
- bilateral_filter: spatial sigma 0.5 .. 5 px, range sigma 0.02 .. 3 (on [0, 1]),
  1 .. 2 passes, the second faded in (a window of +-1.5 sigma).
"""
from __future__ import annotations

import math
from typing import List

import cv2
import numpy as np

from ._common import BORDER, finish, lerp
from .family import Family

# this module's families, in the spec's table order; the registry registers them on first use
FAMILIES: List[Family] = []


def sample_gaussian_blur(rng, severity):
    return {"sigma": lerp(0.2, 8.0, severity)}


def apply_gaussian_blur(image, params):
    sigma = float(params["sigma"])
    ksize = 2 * int(math.ceil(3.0 * sigma)) + 1
    return finish(cv2.GaussianBlur(image, (ksize, ksize), sigmaX=sigma, sigmaY=sigma, borderType=BORDER))


def sample_bilateral_filter(rng, severity):
    # a second pass fades in between strengths 0.4 and 0.6, so visibility grows without a jump
    # the spatial sigma stays small (the filter's cost grows with its square); strength comes
    # from the range sigma, which costs nothing: towards 3 the filter becomes a plain blur
    return {"sigma_space": lerp(0.5, 5.0, severity), "sigma_color": lerp(0.02, 3.0, severity),
            "passes": 1.0 + min(max((severity - 0.4) / 0.2, 0.0), 1.0)}


def apply_bilateral_filter(image, params):
    """One pass, or two; "passes" between 1 and 2 blends the second pass in by its fraction.
    Records with whole "iterations" (older builds) replay as made."""
    sigma_space = float(params["sigma_space"])
    diameter = 2 * int(math.ceil(1.5 * sigma_space)) + 1

    def one_pass(img):
        return cv2.bilateralFilter(img, diameter, float(params["sigma_color"]), sigma_space, borderType=BORDER)

    if "iterations" in params:
        out = image
        for _ in range(int(params["iterations"])):
            out = one_pass(out)
        return finish(out)
    out = one_pass(image)
    second = float(params["passes"]) - 1.0
    if second > 0:
        out = out + np.float32(second) * (one_pass(out) - out)
    return finish(out)


FAMILIES.append(Family("gaussian_blur", "blur", sample_gaussian_blur, apply_gaussian_blur,
                       {"sigma": "standard deviation of the kernel in pixels, 0.2..8"},
                       "sigma from 0.2 to 8 px"))
FAMILIES.append(Family("bilateral_filter", "blur", sample_bilateral_filter, apply_bilateral_filter,
                       {"sigma_space": "spatial sigma in pixels, 0.5..5",
                        "sigma_color": "range sigma on the [0, 1] scale, 0.02..3",
                        "passes": "1..2: one pass, plus this fraction of a second pass"},
                       "all three together: spatial sigma 0.5 to 5 px, range sigma 0.02 to 3, 1 to 2 passes"))
