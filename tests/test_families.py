"""Properties of the 20 traditional distortion families that a wrong implementation would fail.

Not "does it return": each test checks something docs/distort.md (the families and their conventions) says a
family does: a spectrum slope, an exact libjpeg round trip, the direction of a shift or an
echo, a replay that is bit-identical after a JSON round trip. Reference computations use
independent code (PIL's libjpeg, scipy's Gaussian, skimage's CIELAB, numpy shifts) where one
exists, and several tests also check that the *wrong* answer (a negated offset, another sigma)
does not pass, so that they cannot be satisfied by accident.
"""
from __future__ import annotations

import functools
import io
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy import ndimage
from skimage import color, data

import distortions
from distortions import apply_chain, get_family, parse_chain_spec, sample_chain

FAMILIES = distortions.all_families()
FAMILY_NAMES = [f.name for f in FAMILIES]

# The table of families (docs/distort.md), in its order.
SPEC_TABLE = [
    ("lightness_shift", "photometric"), ("color_shift", "photometric"),
    ("contrast", "photometric"), ("saturation", "photometric"),
    ("uniform_noise", "noise"), ("gaussian_noise", "noise"), ("pink_noise", "noise"),
    ("blue_noise", "noise"), ("colored_noise", "noise"), ("checkerboard", "noise"),
    ("gaussian_blur", "blur"), ("bilateral_filter", "blur"),
    ("shift", "spatial"), ("affine_warp", "spatial"), ("homography", "spatial"),
    ("linear_warp", "spatial"), ("cubic_warp", "spatial"), ("ghosting", "spatial"),
    ("chromatic_aberration", "spatial"),
    ("jpeg", "compression"),
]


# ----------------------------------------------------------------------------- helpers


@functools.lru_cache(maxsize=None)
def _photos():
    return tuple(np.ascontiguousarray(img, dtype=np.float32) / np.float32(255.0)
                 for img in (data.astronaut(), data.chelsea(), data.coffee()))


@functools.lru_cache(maxsize=None)
def photo_patches(n=30, size=64, seed=0):
    """Real photo crops (astronaut, chelsea, coffee), float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    photos = _photos()
    out = []
    for i in range(n):
        src = photos[i % len(photos)]
        y = int(rng.integers(0, src.shape[0] - size))
        x = int(rng.integers(0, src.shape[1] - size))
        out.append(np.ascontiguousarray(src[y:y + size, x:x + size]))
    return tuple(out)


def photo_crop(h, w, seed=0):
    rng = np.random.default_rng(seed)
    src = _photos()[seed % 3]
    y = int(rng.integers(0, src.shape[0] - h))
    x = int(rng.integers(0, src.shape[1] - w))
    return np.ascontiguousarray(src[y:y + h, x:x + w])


def make_image(kind, h, w, seed):
    rng = np.random.default_rng(seed)
    if kind == "black":
        return np.zeros((h, w, 3), np.float32)
    if kind == "white":
        return np.ones((h, w, 3), np.float32)
    if kind == "gray":
        return np.full((h, w, 3), rng.uniform(0.0, 1.0), np.float32)
    if kind == "uniform":
        return rng.random((h, w, 3), dtype=np.float32)
    if kind == "binary":
        return (rng.random((h, w, 3)) < 0.5).astype(np.float32)
    if kind == "smooth":
        yy, xx = np.mgrid[0:h, 0:w]
        ph = rng.uniform(0, 2 * np.pi, 3)
        img = 0.5 + 0.5 * np.sin(xx[..., None] / (w / 3.0) + yy[..., None] / (h / 2.0) + ph)
        return img.astype(np.float32)
    if kind == "photo":
        return photo_crop(h, w, seed)
    raise AssertionError(kind)


def params_of(name, severity, seed):
    return get_family(name).sample(np.random.default_rng(seed), severity)


def json_round_trip(obj):
    return json.loads(json.dumps(obj, allow_nan=False))


def radial_psd_slope(field):
    """Slope of log(radially averaged power) against log(radial frequency).

    ``field`` is (H, W) or (H, W, C); the power of the C planes is averaged. Power is
    averaged in log-spaced annuli from the lowest frequency up to 0.5 cycles/px (beyond 0.5
    the annuli are cut by the square's corners), and the fit weights each annulus by the
    square root of its number of bins, so that a random (e.g. Gaussian white) spectrum, whose
    few lowest bins scatter most, does not tilt the line.
    """
    field = np.asarray(field, np.float64)
    if field.ndim == 2:
        field = field[..., None]
    h, w = field.shape[:2]
    field = field - field.mean(axis=(0, 1))
    power = (np.abs(np.fft.fft2(field, axes=(0, 1))) ** 2).mean(axis=-1)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    radius = np.hypot(fy, fx)
    edges = np.geomspace(1.0 / min(h, w), 0.5, 16)
    log_r, log_p, weight = [], [], []
    for a, b in zip(edges[:-1], edges[1:]):
        sel = (radius >= a) & (radius < b)
        if sel.any():
            log_r.append(np.log(radius[sel]).mean())
            log_p.append(np.log(power[sel].mean()))
            weight.append(math.sqrt(sel.sum()))
    slope, _ = np.polyfit(log_r, log_p, 1, w=weight)
    return float(slope)


def centroid(plane):
    yy, xx = np.mgrid[0:plane.shape[0], 0:plane.shape[1]]
    m = plane.sum()
    return float((xx * plane).sum() / m), float((yy * plane).sum() / m)


def to_u8_ref(image):
    """The family's quantiser, written out independently: float32 x 255, round half to even."""
    return np.clip(np.rint(np.asarray(image, np.float32) * np.float32(255.0)), 0, 255).astype(np.uint8)


def pil_jpeg_round_trip(u8, quality):
    buf = io.BytesIO()
    Image.fromarray(u8, "RGB").save(buf, "JPEG", quality=int(quality), subsampling=2)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


# ------------------------------------------------- 9. registry and sampling determinism


def test_registry_lists_exactly_the_spec_table():
    builtins = [(f.name, f.group) for f in FAMILIES if f.source == "built-in"]
    assert sorted(builtins) == sorted(SPEC_TABLE)
    assert len(builtins) == 20
    # the spec's table order, which `bapps-build families` shows
    assert builtins == SPEC_TABLE
    for name, group in SPEC_TABLE:
        fam = get_family(name)
        assert fam.name == name and fam.group == group
        assert fam.params, f"{name} documents no params"
        assert fam.severity, f"{name} documents no severity map"


def test_unknown_family_error_names_the_known_ones():
    with pytest.raises(KeyError, match=r"unknown distortion family 'gausian_blur'.*gaussian_blur"):
        get_family("gausian_blur")


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_sampling_is_a_function_of_the_seed(name):
    fam = get_family(name)
    for seed in (0, 1, 12345):
        for sev in (0.0, 0.3, 1.0):
            a = fam.sample(np.random.default_rng(seed), sev)
            b = fam.sample(np.random.default_rng(seed), sev)
            assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    # and sampling never consults numpy's global generator
    np.random.seed(1)
    a = fam.sample(np.random.default_rng(7), 0.5)
    np.random.seed(2)
    b = fam.sample(np.random.default_rng(7), 0.5)
    assert a == b


# ------------------------------- 1. contract: shape, dtype, range, purity, JSON replay

IMAGE_KINDS = ["black", "white", "gray", "uniform", "binary", "smooth", "photo"]


@pytest.mark.parametrize("name", FAMILY_NAMES)
# no "explain" phase: when a family breaks the contract for every input it would re-run the
# test hundreds of times to say so
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink])
@given(h=st.integers(16, 80), w=st.integers(16, 80), kind=st.sampled_from(IMAGE_KINDS),
       image_seed=st.integers(0, 2**31 - 1), sample_seed=st.integers(0, 2**32 - 1),
       severity=st.floats(0.0, 1.0, allow_nan=False))
def test_family_contract(name, h, w, kind, image_seed, sample_seed, severity):
    fam = get_family(name)
    image = make_image(kind, h, w, image_seed)
    before = image.copy()
    params = fam.sample(np.random.default_rng(sample_seed), severity)

    # params are plain JSON (no numpy scalars, no NaN) and survive a round trip unchanged
    text = json.dumps(params, allow_nan=False)
    replayed_params = json.loads(text)

    np.random.seed(0)  # apply must not depend on numpy's global generator
    out = fam.apply(image, params)
    assert isinstance(out, np.ndarray)
    assert out.shape == image.shape and out.dtype == np.float32
    assert np.all(np.isfinite(out))
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.array_equal(image, before), f"{name} modified its input"
    assert not np.shares_memory(out, image), f"{name} returned (a view of) its input"

    np.random.seed(12345)
    again = fam.apply(image, params)
    assert np.array_equal(out, again), f"{name} is not a pure function of (image, params)"

    replay = fam.apply(image.copy(), replayed_params)
    assert np.array_equal(out, replay), f"{name} does not replay from JSON params {text}"
    assert np.array_equal(image, before)


# ----------------------------------------------------------- 2. severity is monotone

LEVELS = (0.0, 0.25, 0.5, 0.75, 1.0)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_severity_is_monotone_on_photo_patches(name):
    fam = get_family(name)
    patches = photo_patches()
    means = []
    for sev in LEVELS:
        dists = []
        for i, patch in enumerate(patches):
            # common random numbers: the same sampling seed at every severity level
            params = fam.sample(np.random.default_rng(1000 + i), sev)
            dists.append(np.abs(fam.apply(patch, params) - patch).mean())
        means.append(float(np.mean(dists)))
    assert means[0] > 0.0, f"{name} at severity 0 does nothing"
    assert np.all(np.diff(means) > 0), f"{name}: mean |out - in| by severity {LEVELS}: {means}"
    # severity 1 is "strong": at least some visible change on average (>= 1/255 per pixel)
    assert means[-1] > 1.0 / 255.0, f"{name} at severity 1 is barely visible: {means[-1]}"


# ------------------------------------------------------------- 3. colored noise spectrum


@pytest.mark.parametrize("alpha", [-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0])
@pytest.mark.parametrize("shape", [(64, 64), (96, 128), (57, 80)])
def test_colored_noise_field(alpha, shape):
    h, w = shape
    field = distortions.colored_noise(h, w, 3, alpha, np.random.default_rng(3))
    assert field.shape == (h, w, 3) and field.dtype == np.float32
    assert np.all(np.isfinite(field))
    assert np.abs(field.mean(axis=(0, 1))).max() < 1e-5  # zero mean, every channel
    assert abs(float(field.std()) - 1.0) < 1e-4  # unit std
    assert np.all(np.abs(field.std(axis=(0, 1)) - 1.0) < 0.15)
    again = distortions.colored_noise(h, w, 3, alpha, np.random.default_rng(3))
    assert np.array_equal(field, again)
    assert not np.array_equal(field, distortions.colored_noise(h, w, 3, alpha, np.random.default_rng(4)))
    # channels are independent fields (brown noise has few degrees of freedom: pool seeds)
    # (alpha > 1 puts nearly all the power in a few lowest frequencies: too few degrees of
    # freedom in a small field for a correlation test)
    corrs = [np.corrcoef(distortions.colored_noise(h, w, 3, alpha, np.random.default_rng(s))
                         .reshape(-1, 3).T)[np.triu_indices(3, 1)] for s in range(5)]
    assert alpha > 1.0 or np.abs(corrs).mean() < 0.2
    for c in range(3):
        slope = radial_psd_slope(field[..., c].astype(np.float64))
        # amplitude ~ |f|^-alpha, so power ~ |f|^-2 alpha
        assert slope == pytest.approx(-2 * alpha, abs=0.2), f"channel {c}: slope {slope}, alpha {alpha}"


@pytest.mark.parametrize("alpha", [-1.0, 0.5, 1.0])
@pytest.mark.parametrize("shape", [(64, 64), (80, 57)])
def test_colored_noise_is_isotropic(alpha, shape):
    # power on the vertical-frequency axis (fx = 0) equals that on the horizontal one
    # (fy = 0) at the same radius; a generator that ignores the Hermitian pairing of the
    # fx = 0 column in irfft2 loses half the power there on average
    h, w = shape
    n = min(h, w) // 4
    ratios = []
    for seed in range(20):
        field = distortions.colored_noise(h, w, 3, alpha, np.random.default_rng(seed))
        power = np.abs(np.fft.fft2(field.astype(np.float64), axes=(0, 1))) ** 2
        for c in range(3):
            ky = np.arange(1, n + 1)
            on_fy_axis = power[(ky * h) // min(h, w), 0, c]  # fy = ky/min(h, w)-ish, fx = 0
            on_fx_axis = power[0, (ky * w) // min(h, w), c]
            fy = ((ky * h) // min(h, w)) / h
            fx = ((ky * w) // min(h, w)) / w
            ratios.append((on_fy_axis * fy ** (2 * alpha)).sum() / (on_fx_axis * fx ** (2 * alpha)).sum())
    assert np.mean(ratios) == pytest.approx(1.0, abs=0.2)


def _added_noise(name, params, shape=(128, 128)):
    gray = np.full(shape + (3,), 0.5, np.float32)
    out = get_family(name).apply(gray, params)
    # no pixel touched the clip, so the clip did not reshape the spectrum
    assert 0.0 < out.min() and out.max() < 1.0
    return out.astype(np.float64) - 0.5


@pytest.mark.parametrize("name,alpha", [("pink_noise", 1.0), ("blue_noise", -1.0)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pink_and_blue_noise_spectral_slope(name, alpha, seed):
    params = params_of(name, 0.3, seed)
    assert params["amplitude_exponent"] == alpha and "beta" not in params
    noise = _added_noise(name, params)
    for c in range(3):
        slope = radial_psd_slope(noise[..., c])
        assert slope == pytest.approx(-2 * alpha, abs=0.2), f"{name} channel {c}: slope {slope}"
    # scaled to the recorded sigma
    assert float(noise.std()) == pytest.approx(params["sigma"], rel=0.02)


def test_colored_noise_family_slope_matches_recorded_exponent():
    alphas = []
    for seed in range(10):
        params = params_of("colored_noise", 0.3, seed)
        alpha = params["amplitude_exponent"]
        assert -2.0 <= alpha <= 2.0
        alphas.append(alpha)
        noise = _added_noise("colored_noise", params, (128, 96))
        for c in range(3):
            slope = radial_psd_slope(noise[..., c])
            assert slope == pytest.approx(-2 * alpha, abs=0.2), f"seed {seed} alpha {alpha}: slope {slope}"
        assert float(noise.std()) == pytest.approx(params["sigma"], rel=0.02)
    # the sampled exponents span the range rather than sitting at one value
    assert max(alphas) - min(alphas) > 1.5
    # and the recorded exponent is what apply uses: extremes, set in the params
    for alpha in (-2.0, 0.0, 2.0):
        params = {**params_of("colored_noise", 0.3, 0), "amplitude_exponent": alpha}
        noise = _added_noise("colored_noise", params)
        assert radial_psd_slope(noise[..., 1]) == pytest.approx(-2 * alpha, abs=0.2)


def test_legacy_beta_records_replay_as_power_exponents():
    # manifests written before the convention was fixed carry "beta", a PSD exponent: they
    # must replay exactly as made (PSD ~ |f|^-beta), never be reread as an amplitude exponent
    for beta in (-2.0, 1.0, 2.0):
        params = {"sigma": 0.05, "beta": beta, "seed": 7}
        noise = _added_noise("colored_noise", params)
        assert radial_psd_slope(noise[..., 0]) == pytest.approx(-beta, abs=0.2)
        same = {"sigma": 0.05, "amplitude_exponent": beta / 2, "seed": 7}
        assert np.array_equal(get_family("colored_noise").apply(np.full((64, 64, 3), .5, np.float32), params),
                              get_family("colored_noise").apply(np.full((64, 64, 3), .5, np.float32), same))


@pytest.mark.parametrize("name", ["gaussian_noise", "uniform_noise"])
def test_white_noise_is_flat_and_scaled(name):
    params = params_of(name, 0.4, 5)
    noise = _added_noise(name, params, (128, 128))
    assert radial_psd_slope(noise) == pytest.approx(0.0, abs=0.15)
    assert abs(noise.mean()) < 0.01 * noise.std() + 1e-3
    if name == "gaussian_noise":
        assert float(noise.std()) == pytest.approx(params["sigma"], rel=0.03)
    else:
        a = params["amplitude"]
        assert np.abs(noise).max() <= a + 1e-6
        assert np.abs(noise).max() > 0.98 * a
        assert float(noise.std()) == pytest.approx(a / math.sqrt(3.0), rel=0.03)
    corr = np.corrcoef(noise.reshape(-1, 3).T)
    assert np.abs(corr[np.triu_indices(3, 1)]).max() < 0.05  # independent per channel


# ------------------------------------------------------------------------- 4. JPEG


@pytest.mark.parametrize("shape", [(64, 64), (37, 53), (80, 17)])
@pytest.mark.parametrize("severity", [0.0, 0.2, 0.5, 0.8, 1.0])
def test_jpeg_equals_independent_libjpeg_round_trip(shape, severity):
    fam = get_family("jpeg")
    params = params_of("jpeg", severity, 0)
    q = params["quality"]
    assert isinstance(q, int) and 1 <= q <= 100
    h, w = shape
    rng = np.random.default_rng(int(severity * 10) + h)
    # a photo crop, off the 8-bit grid, with some values exactly half a step between codes
    image = photo_crop(h, w, seed=h)
    image = np.clip(image + rng.uniform(-0.5, 0.5, image.shape).astype(np.float32) / 255, 0, 1)
    halves = ((rng.integers(0, 255, image.shape) + 0.5) / 255.0).astype(np.float32)
    mask = rng.random(image.shape[:2]) < 0.3
    image[mask] = halves[mask]
    image = image.astype(np.float32)

    out = fam.apply(image, params)
    expected = pil_jpeg_round_trip(to_u8_ref(image), q)
    got = to_u8_ref(out)
    assert np.array_equal(got, expected), (
        f"quality {q}: {np.count_nonzero(got != expected)} values differ from PIL's libjpeg")
    # the float output is exactly the decoded bytes / 255
    assert np.array_equal(out, expected.astype(np.float32) / np.float32(255.0))
    # and the quality does matter (so the comparison above is not vacuous)
    other = pil_jpeg_round_trip(to_u8_ref(image), 50 if q != 50 else 20)
    assert not np.array_equal(got, other)


def test_jpeg_quality_range_and_direction():
    qs = [params_of("jpeg", s, 0)["quality"] for s in np.linspace(0, 1, 11)]
    assert all(a >= b for a, b in zip(qs, qs[1:])), qs
    assert qs[0] > qs[-1]
    assert qs[-1] <= 25  # at least ImageNet-C's strongest level (spec: calibration references)


# --------------------------------------------------------------------- 5. ghosting


@pytest.mark.parametrize("seed", range(8))
def test_ghosting_echo_at_recorded_offset(seed):
    fam = get_family("ghosting")
    params = params_of("ghosting", float(seed + 1) / 8.0, seed)
    alpha, dx, dy = params["alpha"], params["dx"], params["dy"]
    assert isinstance(dx, int) and isinstance(dy, int) and (dx, dy) != (0, 0)
    assert 0.0 < alpha <= 0.7
    h, w = 48, 61
    x = np.random.default_rng(seed).random((h, w, 3), dtype=np.float32)
    out = fam.apply(x, params).astype(np.float64)
    m = 9  # offsets are at most 8 px
    inner = (slice(m, h - m), slice(m, w - m))

    def expected(ddx, ddy):
        # content moved by (+ddx, +ddy): shifted[y, x] = x[y - ddy, x - ddx]
        shifted = np.roll(x.astype(np.float64), (ddy, ddx), axis=(0, 1))
        return (1.0 - alpha) * x + alpha * shifted

    np.testing.assert_allclose(out[inner], expected(dx, dy)[inner], atol=1e-5, rtol=0)
    # a sign error (echo at the negated offset) or swapped axes must fail
    assert np.abs(out[inner] - expected(-dx, -dy)[inner]).max() > 0.05
    if dx != dy:
        assert np.abs(out[inner] - expected(dy, dx)[inner]).max() > 0.05


# ---------------------------------------------------------- 6. chromatic aberration


def _ca_case(shift_px, center, dot_xy, shape=(64, 96)):
    h, w = shape
    img = np.zeros((h, w, 3), np.float32)
    x0, y0 = dot_xy
    img[y0 - 1:y0 + 2, x0 - 1:x0 + 2] = 1.0  # a 3x3 white square
    params = {"shift_px": float(shift_px), "center": [float(c) for c in center]}
    out = get_family("chromatic_aberration").apply(img, params)
    # optical center as documented: image center + center * (width, height)
    cx = (w - 1) / 2.0 + center[0] * w
    cy = (h - 1) / 2.0 + center[1] * h
    far = max(math.hypot(x - cx, y - cy) for x in (0, w - 1) for y in (0, h - 1))
    return img, out, (cx, cy), far


@pytest.mark.parametrize("shift_px", [3.0, 1.0, -1.0, -3.0])
@pytest.mark.parametrize("center", [(0.0, 0.0), (0.08, -0.06)])
@pytest.mark.parametrize("dot_xy", [(14, 12), (80, 50), (20, 52)])
def test_chromatic_aberration_red_and_blue_move_radially_opposite(shift_px, center, dot_xy):
    img, out, (cx, cy), far = _ca_case(shift_px, center, dot_xy)
    assert np.array_equal(out[..., 1], img[..., 1]), "green must be untouched"
    r0 = math.hypot(dot_xy[0] - cx, dot_xy[1] - cy)
    red = centroid(out[..., 0])
    blue = centroid(out[..., 2])
    r_red = math.hypot(red[0] - cx, red[1] - cy)
    r_blue = math.hypot(blue[0] - cx, blue[1] - cy)
    expected = shift_px * r0 / far  # radial displacement, linear in the distance to the center
    sign = 1.0 if shift_px > 0 else -1.0
    assert sign * (r_red - r0) > 0.2 * abs(expected), "red must move outward for shift_px > 0"
    assert sign * (r_blue - r0) < -0.2 * abs(expected), "blue must move inward for shift_px > 0"
    assert r_red - r0 == pytest.approx(expected, abs=0.15)
    assert r_blue - r0 == pytest.approx(-expected, abs=0.15)
    # the movement is radial: the centroids stay on the ray from the optical center
    for px, py in (red, blue):
        ang = math.atan2(py - cy, px - cx) - math.atan2(dot_xy[1] - cy, dot_xy[0] - cx)
        assert abs(math.sin(ang)) * r0 < 0.15


def test_chromatic_aberration_farthest_corner_moves_by_shift_px():
    # a dot at the farthest point from the optical center moves by (about) shift_px
    h, w = 64, 96
    img, out, (cx, cy), far = _ca_case(2.0, (0.0, 0.0), (6, 6), (h, w))
    r0 = math.hypot(6 - cx, 6 - cy)
    red = centroid(out[..., 0])
    assert math.hypot(red[0] - cx, red[1] - cy) - r0 == pytest.approx(2.0 * r0 / far, abs=0.15)
    assert 2.0 * r0 / far > 1.7


def test_chromatic_aberration_sampled_sign_is_recorded():
    signs = set()
    for seed in range(20):
        p = params_of("chromatic_aberration", 0.7, seed)
        signs.add(p["shift_px"] > 0)
        assert 0.05 <= abs(p["shift_px"]) <= 9.5
        assert all(abs(c) <= 0.1 for c in p["center"])
    assert signs == {True, False}


# ------------------------------------------------------- 7. shift, blur, checkerboard,
#                                                           lightness, saturation, contrast


@pytest.mark.parametrize("dx,dy", [(3, -2), (-5, 4), (0, 6), (1, 0)])
def test_shift_moves_content_by_plus_offset(dx, dy):
    fam = get_family("shift")
    h, w = 40, 52
    x = np.random.default_rng(abs(dx * 7 + dy)).random((h, w, 3), dtype=np.float32)
    out = fam.apply(x, {"dx": float(dx), "dy": float(dy)})
    m = 8
    inner = (slice(m, h - m), slice(m, w - m))
    expected = np.roll(x, (dy, dx), axis=(0, 1))  # out[y, x] = in[y - dy, x - dx]
    np.testing.assert_allclose(out[inner], expected[inner], atol=1e-5, rtol=0)
    wrong = np.roll(x, (-dy, -dx), axis=(0, 1))
    assert np.abs(out[inner] - wrong[inner]).max() > 0.1


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("severity", [0.1, 0.3])
def test_shift_sub_pixel_on_a_ramp(seed, severity):
    # bicubic interpolation reproduces a linear ramp: moving content by +dx lowers a ramp
    # that rises to the right; read the shift back from a coordinate image
    params = params_of("shift", severity, seed)
    dx, dy = params["dx"], params["dy"]
    assert math.hypot(dx, dy) == pytest.approx(0.05 + (6 - 0.05) * severity)  # raw strength
    n = 48
    out = get_family("shift").apply(_coordinate_image(n, n), params)
    xs, ys = _source_coordinates(out)
    yy, xx = np.mgrid[0:n, 0:n]
    inner = (slice(8, n - 8), slice(8, n - 8))
    # out[y, x] = in[y - dy, x - dx]; OpenCV's bicubic (a = -0.75, on a 1/32-px grid) is not
    # exact on a ramp, so allow 0.06 px; a sign error is off by 2 |dx| >= 0.5 px
    np.testing.assert_allclose(xs[inner], (xx - dx)[inner], atol=0.06)
    np.testing.assert_allclose(ys[inner], (yy - dy)[inner], atol=0.06)


@pytest.mark.parametrize("severity", [0.05, 0.3, 0.6, 1.0])
def test_gaussian_blur_matches_scipy_at_recorded_sigma(severity):
    params = params_of("gaussian_blur", severity, 0)
    sigma = params["sigma"]
    h, w = 72, 60
    x = np.random.default_rng(1).random((h, w, 3), dtype=np.float32)
    out = get_family("gaussian_blur").apply(x, params)
    radius = int(math.ceil(3.0 * sigma))
    inner = (slice(radius, h - radius), slice(radius, w - radius))

    def ref(s):
        # the same support (+- ceil(3 sigma)) as the family's kernel
        trunc = (radius + 0.25) / s
        return np.stack([ndimage.gaussian_filter(x[..., c].astype(np.float64), s, truncate=trunc,
                                                 mode="mirror") for c in range(3)], axis=-1)

    np.testing.assert_allclose(out[inner], ref(sigma)[inner], atol=2e-5, rtol=0)
    # another sigma must not pass
    assert np.abs(out[inner] - ref(sigma * 1.15)[inner]).max() > 1e-3
    # borders reflected (BORDER_REFLECT_101 == scipy 'mirror'): the whole image matches
    np.testing.assert_allclose(out, ref(sigma), atol=2e-5, rtol=0)


def _minimal_period(diff, axis, max_period):
    n = diff.shape[axis]
    for p in range(1, max_period + 1):
        a = np.take(diff, range(p, n), axis=axis)
        b = np.take(diff, range(0, n - p), axis=axis)
        if np.allclose(a, b, atol=1e-6, rtol=0):
            return p
    return None


@pytest.mark.parametrize("seed", range(12))
def test_checkerboard_is_periodic_with_the_recorded_stride(seed):
    fam = get_family("checkerboard")
    params = params_of("checkerboard", 0.5, seed)
    s = params["stride"]
    assert s in (2, 4)
    assert params["kernel_size"] % s != 0  # otherwise a transposed conv prints no pattern
    h, w = 40, 52  # multiples of 2 and 4, and non-square
    gray = np.full((h, w, 3), 0.5, np.float32)
    out = fam.apply(gray, params)
    diff = out.astype(np.float64) - 0.5
    assert np.abs(diff).max() > 1e-3
    for axis in (0, 1):
        assert _minimal_period(diff, axis, 8) == s, f"axis {axis}, stride {s}"
    # strength: a unit-std pattern times amplitude times (0.25 + 0.75 x) at x = 0.5
    assert diff.std() == pytest.approx(params["amplitude"] * (0.25 + 0.75 * 0.5), rel=1e-3)
    # zero mean over a full period
    assert abs(diff.mean()) < 1e-6
    # phase [dy, dx] rolls the pattern
    p0 = fam.apply(gray, {**params, "phase": [0, 0]}).astype(np.float64) - 0.5
    py, px = params["phase"]
    np.testing.assert_allclose(diff, np.roll(p0, (py, px), axis=(0, 1)), atol=1e-7)


def test_checkerboard_samples_both_strides():
    strides = {params_of("checkerboard", 0.5, seed)["stride"] for seed in range(30)}
    assert strides == {2, 4}


def _lab(img):
    return color.rgb2lab(np.asarray(img, np.float64))  # skimage: independent of cv2


@pytest.mark.parametrize("seed", range(6))
def test_lightness_shift_changes_l_star_by_delta(seed):
    params = params_of("lightness_shift", 0.6 * seed / 5.0, seed)
    delta = params["delta_l"]
    assert 0.5 <= abs(delta) <= 40.0
    # mid-gray with a mild color texture, far from the gamut boundary
    rng = np.random.default_rng(seed)
    img = (0.5 + 0.08 * (rng.random((32, 40, 3)) - 0.5)).astype(np.float32)
    out = get_family("lightness_shift").apply(img, params)
    assert 0.0 < out.min() and out.max() < 1.0
    lab_in, lab_out = _lab(img), _lab(out)
    np.testing.assert_allclose(lab_out[..., 0] - lab_in[..., 0], delta, atol=0.3)
    np.testing.assert_allclose(lab_out[..., 1:], lab_in[..., 1:], atol=0.5)


def test_lightness_shift_sign_is_drawn_and_recorded():
    deltas = [params_of("lightness_shift", 0.5, seed)["delta_l"] for seed in range(20)]
    assert any(d > 0 for d in deltas) and any(d < 0 for d in deltas)
    assert all(abs(abs(d) - (0.5 + 39.5 * 0.5)) < 1e-9 for d in deltas)


@pytest.mark.parametrize("i", range(4))
def test_saturation_zero_gives_gray(i):
    patch = photo_patches()[i]
    out = get_family("saturation").apply(patch, {"factor": 0.0})
    lab = _lab(out)
    assert np.abs(lab[..., 1:]).max() < 0.5
    assert np.abs(out - out.mean(axis=-1, keepdims=True)).max() < 2e-3
    # lightness is kept
    np.testing.assert_allclose(lab[..., 0], _lab(patch)[..., 0], atol=0.5)
    # the sampler reaches factor 0 at severity 1 when it desaturates
    factors = {round(params_of("saturation", 1.0, s)["factor"], 9) for s in range(20)}
    assert 0.0 in factors


def test_saturation_scales_chroma():
    rng = np.random.default_rng(0)
    img = (0.5 + 0.1 * (rng.random((24, 24, 3)) - 0.5)).astype(np.float32)
    lab_in = _lab(img)
    chroma_in = np.hypot(lab_in[..., 1], lab_in[..., 2])
    for factor in (0.5, 2.0):
        out = get_family("saturation").apply(img, {"factor": factor})
        assert 0.0 < out.min() and out.max() < 1.0  # inside the gamut: no clipping
        lab_out = _lab(out)
        # cv2's float RGB->Lab is off by up to ~0.3 a*/b* units, which the factor scales
        np.testing.assert_allclose(lab_out[..., 1:], factor * lab_in[..., 1:], atol=0.3 * (1 + factor))
        np.testing.assert_allclose(lab_out[..., 0], lab_in[..., 0], atol=0.3)
        # hue is kept where there is chroma to have a hue
        sel = chroma_in > 5.0
        dh = np.angle(np.exp(1j * (np.arctan2(lab_out[..., 2], lab_out[..., 1])
                                   - np.arctan2(lab_in[..., 2], lab_in[..., 1]))))
        assert np.abs(dh[sel]).max() < 0.06
        ratio = np.hypot(lab_out[..., 1], lab_out[..., 2])[sel] / chroma_in[sel]
        assert np.median(ratio) == pytest.approx(factor, rel=0.02)


@pytest.mark.parametrize("factor", [0.05, 0.4, 0.9, 1.1, 1.5])
def test_contrast_scales_deviations_from_per_channel_mean(factor):
    rng = np.random.default_rng(int(factor * 100))
    # channel means differ (0.35, 0.5, 0.65), so a global mean would give a different answer
    means = np.array([0.35, 0.5, 0.65], np.float32)
    img = (means + 0.2 * (rng.random((30, 44, 3)) - 0.5)).astype(np.float32)
    out = get_family("contrast").apply(img, {"factor": factor})
    mu = img.astype(np.float64).mean(axis=(0, 1), keepdims=True)
    np.testing.assert_allclose(out - mu, factor * (img - mu), atol=1e-5)
    wrong = img.mean() + factor * (img - img.mean())
    assert np.abs(out - wrong).max() > 0.01


def test_contrast_sampled_factors():
    for seed in range(20):
        lo, hi = (params_of("contrast", s, seed)["factor"] for s in (0.0, 1.0))
        if lo < 1.0:
            assert lo > hi and hi == pytest.approx(math.exp(-2.0))
        else:
            assert hi > lo and hi == pytest.approx(math.exp(1.2))


# ------------------------------------------ more geometry: neutral params and warps


NEUTRAL = {
    "lightness_shift": ({"delta_l": 0.0}, 2e-3),
    "color_shift": ({"delta_a": 0.0, "delta_b": 0.0}, 2e-3),
    "contrast": ({"factor": 1.0}, 1e-6),
    "saturation": ({"factor": 1.0}, 2e-3),
    "uniform_noise": ({"amplitude": 0.0, "seed": 1}, 0.0),
    "gaussian_noise": ({"sigma": 0.0, "seed": 1}, 0.0),
    "pink_noise": ({"sigma": 0.0, "amplitude_exponent": 1.0, "seed": 1}, 0.0),
    "blue_noise": ({"sigma": 0.0, "amplitude_exponent": -1.0, "seed": 1}, 0.0),
    "colored_noise": ({"sigma": 0.0, "amplitude_exponent": 0.3, "seed": 1}, 0.0),
    "checkerboard": ({"stride": 2, "kernel_size": 3, "phase": [0, 0], "amplitude": 0.0, "seed": 1}, 0.0),
    "shift": ({"dx": 0.0, "dy": 0.0}, 1e-6),
    "affine_warp": ({"angle_deg": 0.0, "shear": 0.0, "scale_x": 1.0, "scale_y": 1.0}, 1e-6),
    "homography": ({"corners": [[0, 0], [0, 0], [0, 0], [0, 0]]}, 1e-5),
    "linear_warp": ({"grid": 4, "amplitude": 0.0, "seed": 1, "max_displacement": 8.0, "min_jacobian": 0.3}, 1e-6),
    "cubic_warp": ({"grid": 5, "amplitude": 0.0, "seed": 1, "max_displacement": 8.0, "min_jacobian": 0.3}, 1e-6),
    "ghosting": ({"alpha": 0.0, "dx": 3, "dy": 2}, 1e-6),
    "chromatic_aberration": ({"shift_px": 0.0, "center": [0.05, 0.0]}, 1e-6),
}


@pytest.mark.parametrize("name", sorted(NEUTRAL))
def test_neutral_params_are_the_identity(name):
    params, tol = NEUTRAL[name]
    assert set(params) == set(params_of(name, 0.5, 0)), "params names changed"
    patch = photo_patches()[5][:40, :56]
    out = get_family(name).apply(patch, params)
    assert np.abs(out - patch).max() <= tol


def test_homography_with_equal_corner_offsets_is_a_translation():
    h, w = 40, 50
    x = np.random.default_rng(2).random((h, w, 3), dtype=np.float32)
    out = get_family("homography").apply(x, {"corners": [[3, -2]] * 4})
    inner = (slice(6, h - 6), slice(6, w - 6))
    np.testing.assert_allclose(out[inner], np.roll(x, (-2, 3), axis=(0, 1))[inner], atol=1e-4)


def _homography_from_corners(src, dst):
    """The 3x3 projective map taking the four src points to the four dst points (DLT)."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y]); rhs.append(u)
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y]); rhs.append(v)
    return np.append(np.linalg.solve(np.array(rows, float), np.array(rhs, float)), 1.0).reshape(3, 3)


@pytest.mark.parametrize("seed", range(4))
def test_homography_moves_corners_by_recorded_offsets(seed):
    # the image corners (TL, TR, BR, BL) go to corner + offset: at every interior pixel the
    # content is the source point that the independent 4-point homography sends there
    h, w = 56, 72
    params = params_of("homography", 0.8, seed)
    corners = np.array(params["corners"], float)
    assert corners.shape == (4, 2) and np.abs(corners).max() <= 8.0
    out = get_family("homography").apply(_coordinate_image(h, w), params)
    xs, ys = _source_coordinates(out)
    src = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], float)
    inverse = np.linalg.inv(_homography_from_corners(src, src + corners))
    yy, xx = np.mgrid[0:h, 0:w]
    pts = inverse @ np.stack([xx.ravel(), yy.ravel(), np.ones(xx.size)])
    ex, ey = (pts[:2] / pts[2]).reshape(2, h, w)
    inner = (slice(10, h - 10), slice(10, w - 10))
    np.testing.assert_allclose(xs[inner], ex[inner], atol=0.06)
    np.testing.assert_allclose(ys[inner], ey[inner], atol=0.06)
    # the map from offsets to the inverse direction would be a different picture
    wrong = np.linalg.inv(_homography_from_corners(src, src - corners))
    pts = wrong @ np.stack([xx.ravel(), yy.ravel(), np.ones(xx.size)])
    assert np.abs((pts[0] / pts[2]).reshape(h, w)[inner] - xs[inner]).max() > 0.5


def test_affine_scale_magnifies_about_the_center():
    h, w = 64, 64
    img = np.zeros((h, w, 3), np.float32)
    img[30:33, 50:53] = 1.0  # a dot 20 px right of the center (31.5)
    out = get_family("affine_warp").apply(img, {"angle_deg": 0.0, "shear": 0.0,
                                                  "scale_x": 1.1, "scale_y": 1.0})
    cx, cy = centroid(out[..., 0])
    assert cx == pytest.approx(31.5 + 1.1 * (51 - 31.5), abs=0.1)
    assert cy == pytest.approx(31.0, abs=0.05)


def _coordinate_image(h, w):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.stack([0.1 + 0.8 * xx / (w - 1), 0.1 + 0.8 * yy / (h - 1),
                     np.full_like(xx, 0.5)], axis=-1).astype(np.float32)


def _source_coordinates(img):
    """Read a warped coordinate image back: the source (x, y) each pixel came from."""
    h, w = img.shape[:2]
    img = img.astype(np.float64)
    return (img[..., 0] - 0.1) / 0.8 * (w - 1), (img[..., 1] - 0.1) / 0.8 * (h - 1)


def _flow(name, params, n=61):
    xs, ys = _source_coordinates(get_family(name).apply(_coordinate_image(n, n), params))
    yy, xx = np.mgrid[0:n, 0:n]
    return xs - xx, ys - yy


def test_linear_and_cubic_warps_pass_through_the_same_control_points():
    # 61 px and a 5-point grid put control points on pixels 0, 15, 30, 45, 60; both
    # interpolants pass through the control displacements, and differ between them
    amplitude, n, knots = 1.2, 61, [15, 30, 45]
    at_knots, differ = [], []
    for seed in range(8):
        params = {"grid": 5, "amplitude": amplitude, "seed": seed}
        lin = _flow("linear_warp", params, n)
        cub = _flow("cubic_warp", params, n)
        for c in range(2):
            kl = lin[c][np.ix_(knots, knots)]
            kc = cub[c][np.ix_(knots, knots)]
            np.testing.assert_allclose(kl, kc, atol=0.08)  # remap quantises to 1/32 px
            at_knots.extend(kl.ravel())
            mid = (slice(20, 41), slice(20, 41))
            differ.append(np.abs(lin[c][mid] - cub[c][mid]).max())
    # the control displacements have the recorded std, in pixels
    assert np.std(at_knots) == pytest.approx(amplitude, rel=0.2)
    assert max(differ) > 0.1


def test_warps_scale_with_amplitude():
    for name in ("linear_warp", "cubic_warp"):
        a = _flow(name, {"grid": 5, "amplitude": 0.8, "seed": 3})
        b = _flow(name, {"grid": 5, "amplitude": 1.6, "seed": 3})
        inner = (slice(12, 49), slice(12, 49))
        for c in range(2):
            np.testing.assert_allclose(b[c][inner], 2.0 * a[c][inner], atol=0.1)


# -------------------------------------------------------- 8. chains: replay and specs


@pytest.mark.parametrize("seed", range(10))
def test_sampled_chain_replays_bit_exactly_from_json(seed):
    rng = np.random.default_rng(seed)
    chain = sample_chain(rng, FAMILY_NAMES, max_chain=3)
    assert 1 <= len(chain) <= 3
    assert len({s["family"] for s in chain}) == len(chain)
    image = photo_crop(48, 56, seed)
    out = apply_chain(image, chain)
    text = json.dumps(chain, allow_nan=False)
    replayed = json.loads(text)
    assert replayed == chain
    assert np.array_equal(apply_chain(image.copy(), replayed), out)
    # the same seed draws the same chain; the output is the family applications in order
    assert json.dumps(sample_chain(np.random.default_rng(seed), FAMILY_NAMES, max_chain=3)) == text
    by_hand = image
    for step in chain:
        assert 0.0 <= step["severity"] <= 1.0
        by_hand = get_family(step["family"]).apply(by_hand, step["params"])
    assert np.array_equal(by_hand, out)


def test_sample_chain_reaches_length_three_and_uint8_input():
    lengths = {len(sample_chain(np.random.default_rng(s), FAMILY_NAMES, max_chain=3)) for s in range(40)}
    assert lengths == {1, 2, 3}
    img = photo_crop(32, 32, 1)
    u8 = to_u8_ref(img)
    chain = sample_chain(np.random.default_rng(0), FAMILY_NAMES, max_chain=3)
    assert np.array_equal(apply_chain(u8, chain), apply_chain(u8.astype(np.float32) / 255.0, chain))


def test_parse_chain_spec_severities():
    chain = parse_chain_spec("gaussian_blur:0.5+jpeg:0.8", np.random.default_rng(0))
    assert [s["family"] for s in chain] == ["gaussian_blur", "jpeg"]
    assert [s["severity"] for s in chain] == [0.5, 0.8]
    from distortions.calibration import severity_to_strength
    assert chain[0]["params"]["sigma"] == pytest.approx(0.2 + 7.8 * severity_to_strength("gaussian_blur", 0.5))
    assert chain[1]["params"]["quality"] == params_of("jpeg", severity_to_strength("jpeg", 0.8), 0)["quality"]
    assert json_round_trip(chain) == chain
    img = photo_crop(40, 40, 2)
    expected = get_family("jpeg").apply(get_family("gaussian_blur").apply(img, chain[0]["params"]),
                                        chain[1]["params"])
    assert np.array_equal(apply_chain(img, chain), expected)


def test_parse_chain_spec_explicit_params():
    chain = parse_chain_spec("jpeg:quality=10", np.random.default_rng(0))
    assert len(chain) == 1 and chain[0]["params"] == {"quality": 10}
    assert chain[0]["severity"] is None  # given params, not a drawn severity
    assert parse_chain_spec("jpeg:0.4:quality=10", np.random.default_rng(0))[0]["severity"] == 0.4
    img = photo_crop(40, 48, 3)
    assert np.array_equal(to_u8_ref(apply_chain(img, chain)), pil_jpeg_round_trip(to_u8_ref(img), 10))

    corners = [[1, 2], [3, 4], [5, 6], [7, 8]]
    chain = parse_chain_spec("homography:corners=[[1,2],[3,4],[5,6],[7,8]]", np.random.default_rng(0))
    assert chain[0]["family"] == "homography" and chain[0]["params"]["corners"] == corners
    assert np.array_equal(apply_chain(img, chain), get_family("homography").apply(img, {"corners": corners}))

    # severity and params together, several params, and a chain of three
    chain = parse_chain_spec("shift:0.2:dx=3,dy=-2+ghosting:alpha=0.3+jpeg:1", np.random.default_rng(0))
    assert [s["family"] for s in chain] == ["shift", "ghosting", "jpeg"]
    assert chain[0]["severity"] == 0.2 and chain[0]["params"] == {"dx": 3, "dy": -2}
    assert chain[1]["params"]["alpha"] == 0.3
    assert chain[2]["severity"] == 1.0
    assert json_round_trip(chain) == chain
    # and the same spec with the same seed gives the same chain
    again = parse_chain_spec("shift:0.2:dx=3,dy=-2+ghosting:alpha=0.3+jpeg:1", np.random.default_rng(0))
    assert again == chain


@pytest.mark.parametrize("spec,error,match", [
    ("gausian_blur:0.5", KeyError, r"unknown distortion family 'gausian_blur'"),
    ("jpeg:0.5+nosuch", KeyError, r"unknown distortion family 'nosuch'"),
    ("jpeg:qualty=10", ValueError, r"jpeg has no parameter qualty; its parameters: quality"),
    ("gaussian_blur:size=3", ValueError, r"gaussian_blur has no parameter size"),
    ("jpeg:1.5", ValueError, r"severity 1\.5 of jpeg is not in \[0, 1\]"),
    ("gaussian_blur:-0.1", ValueError, r"severity -0\.1 of gaussian_blur is not in \[0, 1\]"),
    ("jpeg:nan", ValueError, r"not in \[0, 1\]"),
    ("jpeg:strong", ValueError, r"'strong' is neither a severity in \[0, 1\] nor key=value"),
    ("", ValueError, r"empty chain spec"),
    ("jpeg+", ValueError, r"empty family name"),
])
def test_parse_chain_spec_rejects_bad_specs(spec, error, match):
    with pytest.raises(error, match=match):
        parse_chain_spec(spec, np.random.default_rng(0))


def test_sample_step_rejects_severity_outside_unit_interval():
    with pytest.raises(ValueError, match=r"severity of jpeg must be in \[0, 1\]"):
        distortions.sample_step("jpeg", np.random.default_rng(0), 1.01)
