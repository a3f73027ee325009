"""Small shared pieces of the families: seeds, severity maps, color space, resampling."""
from __future__ import annotations

import functools
import math

import cv2
import numpy as np

# OpenCV's thread count is not set here: importing the families must not change it for the
# importing program. The executors (bapps_build/executors.py) set it where workers start.

SEED_MAX = 2**31 - 1  # seeds are plain JSON integers
BORDER = cv2.BORDER_REFLECT_101  # "borders reflected" (the edge pixel is not repeated)


def draw_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, SEED_MAX))


def generator(seed) -> np.random.Generator:
    """A numpy Generator from an integer (or a SeedSequence). SFC64: a third of PCG64's set-up
    cost, which matters when every patch seeds a few of them."""
    return np.random.Generator(np.random.SFC64(seed))


def seeded(params) -> np.random.Generator:
    """The generator behind everything random inside an apply: a function of params alone."""
    return generator(int(params["seed"]))


_TWO_PI = np.float32(2.0 * math.pi)


def normal_field(rng: np.random.Generator, shape) -> np.ndarray:
    """Standard normal float32 samples (Box-Muller on float32 uniforms).

    Twice as fast as numpy's ziggurat for a patch-sized field; float32 uniforms cut the
    tails off at about 5.8 sigma, which no image noise notices.
    """
    n = int(np.prod(shape))
    half = (n + 1) // 2
    u = rng.random((2, half), dtype=np.float32)
    radius = np.sqrt(np.float32(-2.0) * np.log1p(-u[0]))  # 1 - u is in (0, 1]: log is finite
    angle = u[1] * _TWO_PI
    out = np.empty(2 * half, dtype=np.float32)
    np.multiply(radius, np.cos(angle), out=out[:half])
    np.multiply(radius, np.sin(angle), out=out[half:])
    return out[:n].reshape(shape)


def lerp(lo: float, hi: float, severity: float) -> float:
    """Map severity in [0, 1] linearly to [lo, hi] (clamped, so replays never extrapolate)."""
    s = min(max(float(severity), 0.0), 1.0)
    return float(lo + (hi - lo) * s)


def random_sign(rng: np.random.Generator) -> int:
    return 1 if rng.random() < 0.5 else -1


def finish(image: np.ndarray) -> np.ndarray:
    """The family contract: float32, finite, clipped to [0, 1]."""
    out = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)  # also takes +-inf to 1 and 0
    if not math.isfinite(float(out.sum())):  # only NaN survives a clip
        out = np.nan_to_num(out, nan=0.0)
    return out


def as_float_rgb(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {img.shape}")
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    return np.ascontiguousarray(img, dtype=np.float32)


def rgb_to_lab(image: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] to CIELAB (L* 0..100, a*, b* about -128..127), D65."""
    return cv2.cvtColor(np.ascontiguousarray(image, dtype=np.float32), cv2.COLOR_RGB2Lab)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(lab, dtype=np.float32), cv2.COLOR_Lab2RGB)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Round float [0, 1] to 8 bits, half to even (the one quantiser used everywhere)."""
    scaled = np.multiply(np.asarray(image, dtype=np.float32), np.float32(255.0))
    np.rint(scaled, out=scaled)
    np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8)


def warp_affine(image: np.ndarray, matrix: np.ndarray, interpolation=cv2.INTER_LINEAR) -> np.ndarray:
    h, w = image.shape[:2]
    return cv2.warpAffine(image, np.asarray(matrix, dtype=np.float64), (w, h),
                          flags=interpolation, borderMode=BORDER)


def translate(image: np.ndarray, dx: float, dy: float, interpolation=cv2.INTER_LINEAR) -> np.ndarray:
    """Content moves by (+dx, +dy) pixels: out[y, x] = in[y - dy, x - dx], borders reflected."""
    return warp_affine(image, np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]]), interpolation)


def remap(image: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, interpolation=cv2.INTER_LINEAR) -> np.ndarray:
    return cv2.remap(image, map_x.astype(np.float32), map_y.astype(np.float32), interpolation,
                     borderMode=BORDER)


@functools.lru_cache(maxsize=64)
def _spectral_gain(height: int, width: int, alpha: float) -> np.ndarray:
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    radius = np.sqrt(fx * fx + fy * fy)
    radius[0, 0] = 1.0
    gain = radius ** (-alpha)  # the amplitude spectrum; power goes as its square
    gain[0, 0] = 0.0  # zero mean
    return gain.astype(np.float32)


def colored_noise(height: int, width: int, channels: int, alpha: float,
                  rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-std Gaussian noise whose amplitude spectrum falls as |f|^(-alpha).

    The convention (docs/distort.md, "Distortions"): colors are named by their 1-D meaning
    and shape the amplitude spectrum, isotropic in 2-D (radial frequency), so the power
    spectral density falls as |f|^(-2 alpha): pink alpha = 1 (equal power per octave, the
    spectrum of natural images), brown 2, white 0, blue -1, violet -2.
    Each channel is an independent field. Every frequency bin gets exactly the target
    amplitude and a uniformly random phase (the random-phase method): the field is
    Gaussian by the central limit theorem, and its spectrum has no sampling scatter.
    The phases are those of the spectrum of real white noise, so they are Hermitian-
    consistent: independent phases on the fx = 0 and Nyquist columns, which irfft2 must
    pair with their mirror bins, would cancel there at random (half the power on average
    and an anisotropic field).
    """
    white = normal_field(rng, (channels, height, width))
    coeffs = np.fft.rfft2(white)
    magnitude = np.abs(coeffs)
    magnitude[magnitude == 0] = 1.0
    gain = _spectral_gain(height, width, float(alpha))
    spectrum = (coeffs / magnitude * gain).astype(np.complex64)
    field = np.fft.irfft2(spectrum, s=(height, width))
    field -= field.mean(axis=(1, 2), keepdims=True)
    std = field.std()
    if std > 0:
        field /= std
    return np.moveaxis(field, 0, -1).astype(np.float32)
