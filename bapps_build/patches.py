"""Patches: a random rescale and crop of a source, with near-flat patches rejected.

Rescale-then-crop is done as crop-then-resize: a square window of side
round(patch_size / scale) is cut from the source at full resolution and resized to
patch_size, which costs the same for a 1-MP or a 50-MP source. The window (the crop box,
in source pixels) and the effective scale patch_size / window are recorded.
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import cv2
import numpy as np

from distortions import to_uint8

from .sources import luma_std, to_float

# Pixels of real context kept around a patch (in patch pixels) so that shifts, warps and
# filters take what lies beyond the patch's edge from the photo, not from a mirror image.
CONTEXT_MARGIN = 8


def sample_window(rng: np.random.Generator, width: int, height: int, patch_size: int,
                  scale_range: Tuple[float, float]) -> list:
    """A square crop box [x0, y0, x1, y1] whose side is patch_size / scale.

    The scale is drawn log-uniformly in scale_range and clamped so the window fits.
    """
    lo, hi = scale_range
    scale = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    side = int(round(patch_size / scale))
    side = max(1, min(side, width, height))
    x0 = int(rng.integers(0, width - side + 1))
    y0 = int(rng.integers(0, height - side + 1))
    return [x0, y0, x0 + side, y0 + side]


def extract_patch(image: np.ndarray, box: Sequence[int], patch_size: int) -> np.ndarray:
    """Cut the box from a uint8/uint16 source and resize it to an 8-bit patch (uint8)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    window = image[y0:y1, x0:x1]
    side = x1 - x0
    if side != patch_size:
        # area averaging when shrinking (no aliasing), bicubic when enlarging; in the source's
        # own integer type, rounded once, as a float pipeline would be
        interp = cv2.INTER_AREA if side > patch_size else cv2.INTER_CUBIC
        window = cv2.resize(np.ascontiguousarray(window), (patch_size, patch_size), interpolation=interp)
    if window.dtype == np.uint16:
        return to_uint8(to_float(window))
    return np.ascontiguousarray(window, dtype=np.uint8)


def flatness(patch_u8: np.ndarray) -> float:
    """Standard deviation of the patch's gray levels (luma) on the [0, 1] scale."""
    return luma_std(patch_u8, 255.0)


def crop_record(box: Sequence[int], patch_size: int, attempts: int) -> dict:
    side = int(box[2]) - int(box[0])
    return {"box": [int(v) for v in box], "size": int(patch_size), "scale": patch_size / side,
            "attempts": attempts}
