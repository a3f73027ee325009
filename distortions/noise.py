"""Noise families: white (uniform, Gaussian), colored (pink, blue, any exponent), checkerboard.

Raw strength maps (noise on the [0, 1] pixel scale; calibration.json maps severity to them):
- uniform_noise: amplitude a = 0.005 .. 0.38 (std a / sqrt(3)).
- gaussian_noise, pink_noise, blue_noise, colored_noise: sigma = 0.003 .. 0.22.
- checkerboard: amplitude 0.003 .. 0.25 of a unit-std periodic pattern.
Colored noise shapes the amplitude spectrum, ~ |f|^-alpha (pink 1, blue -1, colored drawn
in [-2, 2]); the record names it "amplitude_exponent" so that it cannot be read as a
power-spectrum exponent.
"""
from __future__ import annotations

from typing import List

import numpy as np

from ._common import colored_noise, draw_seed, finish, lerp, normal_field, seeded
from .family import Family

# this module's families, in the spec's table order; the registry registers them on first use
FAMILIES: List[Family] = []


def sample_uniform_noise(rng, severity):
    return {"amplitude": lerp(0.005, 0.38, severity), "seed": draw_seed(rng)}


def apply_uniform_noise(image, params):
    a = float(params["amplitude"])
    noise = seeded(params).random(size=image.shape, dtype=np.float32)
    noise = (noise * np.float32(2.0 * a)) - np.float32(a)
    return finish(image + noise)


def sample_gaussian_noise(rng, severity):
    return {"sigma": lerp(0.003, 0.22, severity), "seed": draw_seed(rng)}


def apply_gaussian_noise(image, params):
    noise = normal_field(seeded(params), image.shape)
    noise *= np.float32(params["sigma"])
    noise += image
    return finish(noise)


def _spectral_sampler(alpha):
    def sample(rng, severity):
        a = float(rng.uniform(-2.0, 2.0)) if alpha is None else float(alpha)
        return {"sigma": lerp(0.003, 0.22, severity), "amplitude_exponent": a, "seed": draw_seed(rng)}
    return sample


def spectral_alpha(params) -> float:
    """The amplitude-spectrum exponent of a colored-noise step. Records made before the
    convention was fixed carry "beta", a power-spectrum exponent (PSD ~ |f|^-beta, so
    alpha = beta / 2): they replay exactly as they were made."""
    if "amplitude_exponent" in params:
        return float(params["amplitude_exponent"])
    return float(params["beta"]) / 2.0


def apply_spectral_noise(image, params):
    h, w, c = image.shape
    field = colored_noise(h, w, c, spectral_alpha(params), seeded(params))
    return finish(image + float(params["sigma"]) * field)


# A transposed convolution of stride s whose kernel size is not a multiple of s covers output
# pixels unevenly: each of the s x s output phases sums a different subset of the kernel taps.
KERNELS_FOR_STRIDE = {2: (3, 5), 4: (3, 5, 6, 7)}


def checkerboard_tile(stride: int, kernel_size: int, rng: np.random.Generator) -> np.ndarray:
    """The (stride, stride, 3) pattern a stride-s transposed conv prints on a flat input.

    Kernel weights near 1 (a trained upsampler roughly preserves the mean); output phase
    (py, px) receives the taps (i, j) with i = py, j = px (mod stride). Zero mean, unit std.
    """
    weights = 1.0 + 0.3 * rng.standard_normal((3, kernel_size, kernel_size))
    tile = np.zeros((3, stride, stride))
    for i in range(kernel_size):
        for j in range(kernel_size):
            tile[:, i % stride, j % stride] += weights[:, i, j]
    tile -= tile.mean(axis=(1, 2), keepdims=True)
    std = tile.std()
    if std < 1e-9:  # cannot happen for the kernel sizes above; keep the contract anyway
        tile = np.indices((stride, stride)).sum(axis=0) % 2 * 2.0 - 1.0
        tile = np.broadcast_to(tile, (3, stride, stride))
        std = 1.0
    return np.moveaxis(tile / std, 0, -1)


def sample_checkerboard(rng, severity):
    stride = int(rng.choice([2, 4]))
    kernel = int(rng.choice(KERNELS_FOR_STRIDE[stride]))
    phase = [int(rng.integers(0, stride)), int(rng.integers(0, stride))]
    return {"stride": stride, "kernel_size": kernel, "phase": phase,
            "amplitude": lerp(0.003, 0.25, severity), "seed": draw_seed(rng)}


def apply_checkerboard(image, params):
    stride = int(params["stride"])
    tile = checkerboard_tile(stride, int(params["kernel_size"]), seeded(params))
    h, w = image.shape[:2]
    py, px = (int(v) for v in params["phase"])
    tile = np.roll(tile, (py, px), axis=(0, 1))
    pattern = np.tile(tile, (h // stride + 1, w // stride + 1, 1))[:h, :w].astype(np.float32)
    # modulated by the image: a decoder's artifact scales with the signal it carries
    return finish(image + float(params["amplitude"]) * pattern * (0.25 + 0.75 * image))


FAMILIES.append(Family("uniform_noise", "noise", sample_uniform_noise, apply_uniform_noise,
                       {"amplitude": "half-width a of U[-a, a] per pixel and channel, 0.005..0.38",
                        "seed": "integer seed of the noise field"},
                       "amplitude from 0.005 to 0.38"))
FAMILIES.append(Family("gaussian_noise", "noise", sample_gaussian_noise, apply_gaussian_noise,
                       {"sigma": "standard deviation per pixel and channel, 0.003..0.22",
                        "seed": "integer seed of the noise field"},
                       "sigma from 0.003 to 0.22"))
_SPECTRAL_PARAMS = {"sigma": "standard deviation of the field, 0.003..0.22",
                    "amplitude_exponent": "alpha: amplitude spectrum ~ |f|^-alpha (power ~ |f|^-2 alpha)",
                    "seed": "integer seed of the noise field"}
FAMILIES.append(Family("pink_noise", "noise", _spectral_sampler(1.0), apply_spectral_noise,
                       {**_SPECTRAL_PARAMS, "amplitude_exponent": "1 (pink: amplitude ~ 1/|f|)"}, "sigma from 0.003 to 0.22"))
FAMILIES.append(Family("blue_noise", "noise", _spectral_sampler(-1.0), apply_spectral_noise,
                       {**_SPECTRAL_PARAMS, "amplitude_exponent": "-1 (blue: amplitude ~ |f|)"}, "sigma from 0.003 to 0.22"))
FAMILIES.append(Family("colored_noise", "noise", _spectral_sampler(None), apply_spectral_noise,
                       {**_SPECTRAL_PARAMS, "amplitude_exponent": "drawn in [-2, 2]: violet -2, white 0, brown 2"},
                       "sigma from 0.003 to 0.22; the exponent is drawn independently of severity"))
FAMILIES.append(Family("checkerboard", "noise", sample_checkerboard, apply_checkerboard,
                       {"stride": "2 or 4 (the period in pixels)",
                        "kernel_size": "transposed-conv kernel size, not a multiple of stride",
                        "phase": "[dy, dx] offset of the pattern, 0..stride-1",
                        "amplitude": "pattern strength, 0.003..0.25, scaled by 0.25 + 0.75 x",
                        "seed": "integer seed of the kernel weights"},
                       "amplitude from 0.003 to 0.25"))
