"""JPEG: a real libjpeg round trip (OpenCV's libjpeg-turbo), not a differentiable stand-in.

Severity maps quality 90 .. 5 linearly (KADID's strongest level is 4, ImageNet-C's 25);
chroma is subsampled 4:2:0, libjpeg's and PIL's default.
"""
from __future__ import annotations

import math
from typing import List

import cv2
import numpy as np

from ._common import finish, lerp, to_uint8
from .family import Family

# this module's families, in the spec's table order; the registry registers them on first use
FAMILIES: List[Family] = []


def sample_jpeg(rng, severity):
    # log-spaced: libjpeg's quality scales its tables as 50/q below 50 and 2 - q/50 above
    return {"quality": int(round(math.exp(lerp(math.log(98.0), math.log(3.0), severity))))}


def jpeg_round_trip(image_u8: np.ndarray, quality: int) -> np.ndarray:
    """Encode an (H, W, 3) uint8 RGB image as baseline JPEG 4:2:0 and decode it again."""
    bgr = cv2.cvtColor(image_u8, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality),
                                         cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420])
    if not ok:
        raise RuntimeError("libjpeg failed to encode the patch")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def apply_jpeg(image, params):
    decoded = jpeg_round_trip(to_uint8(image), int(params["quality"])).astype(np.float32)
    decoded /= np.float32(255.0)
    return finish(decoded)


FAMILIES.append(Family("jpeg", "compression", sample_jpeg, apply_jpeg,
                       {"quality": "libjpeg quality 5..90 (4:2:0 chroma)"},
                       "quality from 90 down to 5"))
