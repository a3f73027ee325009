"""Spatial families: shifts, warps, ghosting and lateral chromatic aberration.

All offsets are in pixels of the image the family is applied to. In a build that image is
the patch with CONTEXT pixels of real context on every side (bapps_build.patches), and no
pixel of the patch is ever moved by more than MAX_DISPLACEMENT = CONTEXT: what a shift or a
warp brings into the patch is the photo's own content, never the reflected border (which
is still there, for images given without context). Raw strength maps (calibration.json
maps severity to them):
- shift: offset length 0.05 .. 6 px, direction drawn.
- affine_warp: rotation up to 0.1 .. 15 degrees, shear up to 0.002 .. 0.3, log-scale per
  axis up to 0.002 .. 0.22; each component's share and sign are drawn; the whole transform
  is scaled down when a corner of a 64-px patch would move more than MAX_DISPLACEMENT.
- homography: each corner moves 0.1 .. 8 px (times a drawn share in [0.5, 1]).
- linear_warp, cubic_warp: displacement std at the control points 0.05 .. 12 px, the flow
  softly capped so that no pixel moves more than MAX_DISPLACEMENT, and scaled down until its
  Jacobian determinant is at least 0.6 .. MIN_JACOBIAN everywhere (no fold-over; the
  guard loosens with strength).
- ghosting: echo weight alpha 0.01 .. 0.7, offset length 2 .. 8 px (whole pixels).
- chromatic_aberration: radial displacement at the farthest corner 0.05 .. 9.5 px.
"""
from __future__ import annotations

import functools
import math
from typing import List

import cv2
import numpy as np
from scipy import interpolate

from ._common import draw_seed, finish, lerp, random_sign, remap, seeded, translate, warp_affine
from .family import Family

# this module's families, in the spec's table order; the registry registers them on first use
FAMILIES: List[Family] = []


CONTEXT = 8  # bapps_build.patches.CONTEXT_MARGIN (the distortions package imports nothing above it)
MAX_DISPLACEMENT = float(CONTEXT)
MIN_JACOBIAN = 0.05  # the strongest warp may compress space twentyfold locally, never fold it
PATCH = 64  # the patch size the affine bound is computed for


def _direction(rng):
    angle = rng.uniform(0.0, 2.0 * math.pi)
    return math.cos(angle), math.sin(angle)


def sample_shift(rng, severity):
    cx, cy = _direction(rng)
    r = lerp(0.05, 6.0, severity)
    return {"dx": r * cx, "dy": r * cy}


def apply_shift(image, params):
    return finish(translate(image, float(params["dx"]), float(params["dy"]), cv2.INTER_CUBIC))


def sample_affine_warp(rng, severity):
    shares = rng.uniform(0.5, 1.0, size=4)
    signs = [random_sign(rng) for _ in range(4)]
    parts = [signs[0] * shares[0] * lerp(0.1, 15.0, severity), signs[1] * shares[1] * lerp(0.002, 0.3, severity),
             signs[2] * shares[2] * lerp(0.002, 0.22, severity), signs[3] * shares[3] * lerp(0.002, 0.22, severity)]

    def params(k):
        return {"angle_deg": k * parts[0], "shear": k * parts[1],
                "scale_x": math.exp(k * parts[2]), "scale_y": math.exp(k * parts[3])}

    # scale every component down together until no corner of a patch moves too far
    if affine_corner_displacement(params(1.0), PATCH) <= MAX_DISPLACEMENT:
        return params(1.0)
    lo, hi = 0.0, 1.0
    for _ in range(16):  # bisection on k; the corner displacement grows with k
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if affine_corner_displacement(params(mid), PATCH) <= MAX_DISPLACEMENT else (lo, mid)
    return params(lo)


def affine_corner_displacement(params, size: int) -> float:
    """How far (px) the affine transform moves the farthest corner of a size x size patch.

    About the center, a corner at offset v moves by (L - I) v, L the linear part (plain
    floats: the sampler calls this in a bisection)."""
    a = math.radians(float(params["angle_deg"]))
    ca, sa = math.cos(a), math.sin(a)
    sh, sx, sy = float(params["shear"]), float(params["scale_x"]), float(params["scale_y"])
    # L = rot @ [[1, sh], [0, 1]] @ diag(sx, sy)
    l00, l01 = ca * sx, (ca * sh - sa) * sy
    l10, l11 = sa * sx, (sa * sh + ca) * sy
    r = (size - 1) / 2.0
    worst = 0.0
    for vx, vy in ((-r, -r), (r, -r), (-r, r), (r, r)):
        dx = (l00 - 1.0) * vx + l01 * vy
        dy = l10 * vx + (l11 - 1.0) * vy
        worst = max(worst, math.hypot(dx, dy))
    return worst


def affine_matrix(params, width, height):
    """2x3 matrix: about the image center, rotate, shear (x += shear y), scale per axis."""
    a = math.radians(float(params["angle_deg"]))
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    shear = np.array([[1.0, float(params["shear"])], [0.0, 1.0]])
    scale = np.diag([float(params["scale_x"]), float(params["scale_y"])])
    linear = rot @ shear @ scale
    center = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    return np.hstack([linear, (center - linear @ center)[:, None]])


def apply_affine_warp(image, params):
    h, w = image.shape[:2]
    return finish(warp_affine(image, affine_matrix(params, w, h)))


def sample_homography(rng, severity):
    d = lerp(0.1, MAX_DISPLACEMENT, severity)
    corners = []
    for _ in range(4):
        cx, cy = _direction(rng)
        share = rng.uniform(0.5, 1.0)
        corners.append([d * share * cx, d * share * cy])
    return {"corners": corners}


def apply_homography(image, params):
    h, w = image.shape[:2]
    src = np.float32([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]])  # TL, TR, BR, BL
    dst = src + np.float32(params["corners"])
    matrix = cv2.getPerspectiveTransform(src, dst)
    return finish(cv2.warpPerspective(image, matrix, (w, h), flags=cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_REFLECT_101))


def _sample_grid_warp(grid_sizes):
    def sample(rng, severity):
        # the fold guard loosens as strength grows (never below MIN_JACOBIAN), so a stronger
        # warp is always a visibly stronger one instead of the same field scaled to the guard
        return {"grid": int(rng.choice(grid_sizes)), "amplitude": lerp(0.05, 12.0, severity),
                "seed": draw_seed(rng), "max_displacement": MAX_DISPLACEMENT,
                "min_jacobian": lerp(0.6, MIN_JACOBIAN, severity)}
    return sample


@functools.lru_cache(maxsize=64)
def _gradient_weights(length: int, grid: int, order: int) -> np.ndarray:
    """np.gradient along the pixels of the interpolation weights: the derivative of the
    dense flow is then a product of small matrices, like the flow itself."""
    return np.gradient(_interpolation_weights(length, grid, order), axis=0)


@functools.lru_cache(maxsize=64)
def _interpolation_weights(length: int, grid: int, order: int) -> np.ndarray:
    """(length, grid) matrix taking control values to every pixel of one axis.

    Control points sit on a regular lattice whose ends are the first and last pixel;
    order 1 is linear interpolation, order 3 a cubic spline through the control points.
    """
    t = np.linspace(0.0, grid - 1.0, length)
    knots = np.arange(grid, dtype=np.float64)
    basis = np.eye(grid)
    if order == 1:
        return np.stack([np.interp(t, knots, basis[k]) for k in range(grid)], axis=1)
    return interpolate.CubicSpline(knots, basis, axis=0)(t)


def dense_flow(params, height, width, order):
    """A (grid x grid) random displacement field interpolated to every pixel: (flow_x, flow_y).

    Records with "max_displacement" L scale the flow so that its peak displacement p becomes
    p / (1 + (p / L)^4)^(1/4), below L and still growing with p; with
    "min_jacobian" the flow is scaled by the largest k in (0, 1] (bisection) for which the
    Jacobian determinant of x -> x + k flow(x) stays above it everywhere, so the warp never
    folds. Records without them (older builds) replay the raw field as they were made.
    """
    g = int(params["grid"])
    control = seeded(params).standard_normal((2, g, g)) * float(params["amplitude"])
    wy = _interpolation_weights(height, g, order)
    wx = _interpolation_weights(width, g, order)
    flow = [wy @ c @ wx.T for c in control]
    scale = 1.0
    if "max_displacement" in params:
        # a soft cap: the peak displacement p becomes p / (1 + (p / L)^4)^(1/4) < L, nearly p
        # well below L and still growing with p above it
        peak = float(np.hypot(flow[0], flow[1]).max())
        limit = float(params["max_displacement"])
        if peak > 0:
            scale = 1.0 / (1.0 + (peak / limit) ** 4) ** 0.25
    if "min_jacobian" in params:
        floor = float(params["min_jacobian"])
        # np.gradient of the flow, from the weights' gradients (exactly what np.gradient gives)
        gy, gx = _gradient_weights(height, g, order), _gradient_weights(width, g, order)
        cx, cy = control
        grads = tuple(scale * m for m in (wy @ cx @ gx.T, gy @ cx @ wx.T, wy @ cy @ gx.T, gy @ cy @ wx.T))
        if _min_det(grads, 1.0) < floor:  # most fields pass as they are: no roots to find
            scale *= largest_safe_scale(None, floor, grads)
    if scale != 1.0:
        flow = [f * scale for f in flow]
    return flow


def _flow_gradients(flow):
    fx, fy = flow
    dfx_dy, dfx_dx = np.gradient(fx)
    dfy_dy, dfy_dx = np.gradient(fy)
    return dfx_dx, dfx_dy, dfy_dx, dfy_dy


def _min_det(grads, k: float) -> float:
    a, b, c, d = grads
    return float(((1.0 + k * a) * (1.0 + k * d) - (k * b) * (k * c)).min())


def min_jacobian(flow, k: float = 1.0) -> float:
    """The smallest Jacobian determinant of x -> x + k flow(x) (central differences)."""
    return _min_det(_flow_gradients(flow), k)


def largest_safe_scale(flow, floor: float, grads=None) -> float:
    """The largest k in [0, 1] with det(I + k grad flow) >= floor at every pixel.

    Per pixel the determinant is the quadratic 1 + k tr + k^2 det(grad flow), which is 1 at
    k = 0; k is the smallest positive root of (quadratic - floor) over all pixels, capped at
    1 (closed form: one pass, where a bisection needs thirty)."""
    a, b, c, d = grads if grads is not None else _flow_gradients(flow)
    lin = a + d
    quad = a * d - b * c
    const = 1.0 - floor
    with np.errstate(divide="ignore", invalid="ignore"):
        disc = lin * lin - 4.0 * quad * const
        sq = np.sqrt(np.maximum(disc, 0.0))
        # the roots of quad k^2 + lin k + const; only real, positive ones bound k
        r1 = np.where(quad != 0, (-lin - sq) / (2.0 * quad), np.where(lin < 0, -const / lin, np.inf))
        r2 = np.where(quad != 0, (-lin + sq) / (2.0 * quad), np.inf)
    roots = np.concatenate([r1[disc >= 0].ravel(), r2[disc >= 0].ravel(), r1[quad == 0].ravel()])
    roots = roots[np.isfinite(roots) & (roots > 0)]
    if roots.size == 0:
        return 1.0
    return float(min(1.0, roots.min() * (1.0 - 1e-9)))


@functools.lru_cache(maxsize=16)
def _pixel_grid(height: int, width: int):
    yy, xx = np.mgrid[0:height, 0:width]
    return xx.astype(np.float64), yy.astype(np.float64)


def _apply_grid_warp(order):
    def apply(image, params):
        h, w = image.shape[:2]
        flow_x, flow_y = dense_flow(params, h, w, order)
        xx, yy = _pixel_grid(h, w)
        return finish(remap(image, xx + flow_x, yy + flow_y))
    return apply


def sample_ghosting(rng, severity):
    cx, cy = _direction(rng)
    length = lerp(2.0, MAX_DISPLACEMENT, severity)
    dx, dy = int(round(length * cx)), int(round(length * cy))
    if dx == 0 and dy == 0:  # cannot happen for length >= 2; keep an echo regardless
        dx = 2
    return {"alpha": lerp(0.01, 0.7, severity), "dx": dx, "dy": dy}


def apply_ghosting(image, params):
    # whole-pixel offsets, so the echo is an exact copy: (1 - alpha) x + alpha x(. - offset)
    alpha = float(params["alpha"])
    echo = translate(image, float(params["dx"]), float(params["dy"]), cv2.INTER_NEAREST)
    return finish((1.0 - alpha) * image + alpha * echo)


def sample_chromatic_aberration(rng, severity):
    center = [float(rng.uniform(-0.1, 0.1)), float(rng.uniform(-0.1, 0.1))]
    return {"shift_px": random_sign(rng) * lerp(0.05, 9.5, severity), "center": center}


def apply_chromatic_aberration(image, params):
    """Red scaled radially by (1 + k), blue by (1 - k), green untouched.

    k is chosen so the farthest corner moves by shift_px; a positive shift_px pushes red
    outward and pulls blue inward. center is the optical center's offset from the image
    center, as a fraction of width and height.
    """
    h, w = image.shape[:2]
    cx = (w - 1) / 2.0 + float(params["center"][0]) * w
    cy = (h - 1) / 2.0 + float(params["center"][1]) * h
    far = max(math.hypot(x - cx, y - cy) for x in (0, w - 1) for y in (0, h - 1))
    k = float(params["shift_px"]) / far
    out = image.copy()
    for channel, factor in ((0, 1.0 + k), (2, 1.0 - k)):
        m = np.array([[factor, 0.0, cx * (1.0 - factor)], [0.0, factor, cy * (1.0 - factor)]])
        out[..., channel] = warp_affine(np.ascontiguousarray(image[..., channel]), m)
    return finish(out)


FAMILIES.append(Family("shift", "spatial", sample_shift, apply_shift,
                       {"dx": "horizontal offset in pixels (content moves right if > 0)",
                        "dy": "vertical offset in pixels (content moves down if > 0)"},
                       "offset length from 0.05 to 6 px (bicubic, sub-pixel); the direction is drawn"))
FAMILIES.append(Family("affine_warp", "spatial", sample_affine_warp, apply_affine_warp,
                       {"angle_deg": "rotation about the center, up to +-15 degrees",
                        "shear": "x += shear * y, up to +-0.3",
                        "scale_x": "horizontal scale, exp(+-0.22)", "scale_y": "vertical scale, exp(+-0.22)"},
                       "the size of every component together; shares and signs are drawn; a 64-px patch corner moves at most 8 px"))
FAMILIES.append(Family("homography", "spatial", sample_homography, apply_homography,
                       {"corners": "[[dx, dy] x 4]: offsets in pixels of the TL, TR, BR, BL corners, up to 8"},
                       "corner displacement from 0.1 to 8 px"))
_GRID_PARAMS = {"grid": "control points per side", "amplitude": "displacement std at the control points in pixels, 0.05..12",
                "seed": "integer seed of the control displacements",
                "max_displacement": "soft cap L: the peak displacement p becomes p / (1 + (p / L)^4)^(1/4) (px)",
                "min_jacobian": "the flow is scaled down until its Jacobian determinant is >= this everywhere"}
FAMILIES.append(Family("linear_warp", "spatial", _sample_grid_warp((3, 4, 5)), _apply_grid_warp(1),
                       {**_GRID_PARAMS, "grid": "control points per side, 3..5"},
                       "displacement amplitude from 0.05 to 12 px"))
FAMILIES.append(Family("cubic_warp", "spatial", _sample_grid_warp((3, 4, 5)), _apply_grid_warp(3),
                       {**_GRID_PARAMS, "grid": "control points per side, 3..5"},
                       "displacement amplitude from 0.05 to 12 px"))
FAMILIES.append(Family("ghosting", "spatial", sample_ghosting, apply_ghosting,
                       {"alpha": "weight of the echo, 0.01..0.7",
                        "dx": "echo offset in whole pixels (x)", "dy": "echo offset in whole pixels (y)"},
                       "alpha from 0.01 to 0.7 and offset length from 2 to 8 px"))
FAMILIES.append(Family("chromatic_aberration", "spatial", sample_chromatic_aberration, apply_chromatic_aberration,
                       {"shift_px": "radial displacement of red at the farthest corner (blue opposite), +-0.05..9.5 px",
                        "center": "[cx, cy] optical center offset as a fraction of the size, +-0.1"},
                       "|shift_px| from 0.05 to 9.5 px; the sign is drawn"))
