"""Blur families: Gaussian blur and bilateral (edge-preserving) filtering.

Severity maps (pixels of the image the family is applied to):
- gaussian_blur: sigma = 0.4 .. 3.0 (ImageNet-C's 64-px script stops at 1.5, KADID at 5 on
  full images).
- bilateral_filter: spatial sigma 1 .. 4 px, range sigma 0.05 .. 0.4 (on [0, 1]),
  1 .. 2 passes (a window of +-1.5 sigma keeps it under 1.5 ms at 64x64).
"""
from __future__ import annotations

import math

import cv2

from ._common import BORDER, finish, lerp
from .registry import Family, register


def sample_gaussian_blur(rng, severity):
    return {"sigma": lerp(0.2, 8.0, severity)}


def apply_gaussian_blur(image, params):
    sigma = float(params["sigma"])
    ksize = 2 * int(math.ceil(3.0 * sigma)) + 1
    return finish(cv2.GaussianBlur(image, (ksize, ksize), sigmaX=sigma, sigmaY=sigma, borderType=BORDER))


def sample_bilateral_filter(rng, severity):
    return {"sigma_space": lerp(0.5, 8.0, severity), "sigma_color": lerp(0.02, 1.0, severity),
            "iterations": 1 if severity < 0.5 else 2}


def apply_bilateral_filter(image, params):
    sigma_space = float(params["sigma_space"])
    diameter = 2 * int(math.ceil(1.5 * sigma_space)) + 1
    out = image
    for _ in range(int(params["iterations"])):
        out = cv2.bilateralFilter(out, diameter, float(params["sigma_color"]), sigma_space,
                                  borderType=BORDER)
    return finish(out)


register(Family("gaussian_blur", "blur", sample_gaussian_blur, apply_gaussian_blur,
                {"sigma": "standard deviation of the kernel in pixels, 0.4..3"},
                "sigma from 0.4 to 3 px"))
register(Family("bilateral_filter", "blur", sample_bilateral_filter, apply_bilateral_filter,
                {"sigma_space": "spatial sigma in pixels, 1..4",
                 "sigma_color": "range sigma on the [0, 1] scale, 0.05..0.4",
                 "iterations": "passes of the filter, 1..2"},
                "all three together: spatial sigma 1 to 4 px, range sigma 0.05 to 0.4, 1 or 2 passes"))
