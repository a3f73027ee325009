"""Source images: decoding, skipping bad files, discovery, and leak-free train/val splits.

Each test checks a property a wrong implementation would fail: exact 16-bit values in RGB
order (not BGR, not reduced to 8 bits), the corner an EXIF-rotated square ends up in, that a
file under two names counts once, that the split of a file does not depend on which other
files a scan was given. Every image is written here, into tmp_path; reference answers come
from independent code (numpy rotations, PIL's ImageOps.exif_transpose, tifffile, cv2).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image, ImageOps

import bapps_build
from bapps_build import BuildConfig
from bapps_build.sources import (BUILTIN_PREFIX, DEFAULT_MAX_PIXELS, Skipped, Source, SourceError,
                                 UnusableSource, decode_bytes, discover_sources, inspect_source,
                                 read_source, select_sources, split_of)

ORIENTATION = 0x0112
SCAN = dict(min_size=64, max_pixels=1_000_000, flat_threshold=0.015, val_fraction=0.2)


# ------------------------------------------------------------------ helpers


def encode(image, fmt, **kw) -> bytes:
    """PIL-encoded bytes of an Image or a uint8 array."""
    im = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def noise_rgb(h, w, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    top = 256 if dtype == np.uint8 else 65536
    return rng.integers(0, top, (h, w, 3), dtype=dtype)


def blocks_rgb(h=48, w=64):
    """Large flat blocks (survive JPEG) with a red square in the top-left corner only."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:] = (40, 40, 200)  # blue background
    a[: h // 3, : w // 4] = (230, 20, 20)  # red square, top-left
    a[h - h // 4:, :] = (20, 200, 20)  # green band along the bottom: breaks every symmetry
    return a


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def with_exif_chunk(png: bytes, orientation: int) -> bytes:
    """A PNG with an eXIf chunk (TIFF header first, no 'Exif\\0\\0', as the PNG spec says) before IDAT."""
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    raw = exif.tobytes()
    if raw.startswith(b"Exif\x00\x00"):
        raw = raw[6:]
    at = png.index(b"IDAT") - 4
    return png[:at] + png_chunk(b"eXIf", raw) + png[at:]


def exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return exif.tobytes()


def upright(stored: np.ndarray, orientation: int) -> np.ndarray:
    """What a viewer shows for stored pixels with this EXIF orientation (EXIF 2.3, table of 0x0112).

    Written out by hand, not shared with the code under test.
    """
    a = stored
    if orientation == 1:
        return a
    if orientation == 2:
        return a[:, ::-1]
    if orientation == 3:
        return a[::-1, ::-1]
    if orientation == 4:
        return a[::-1, :]
    if orientation == 5:  # transpose over the main diagonal
        return np.swapaxes(a, 0, 1)
    if orientation == 6:  # rotate 90 degrees clockwise
        return np.rot90(a, k=-1)
    if orientation == 7:  # transpose over the anti-diagonal
        return np.swapaxes(a[::-1, ::-1], 0, 1)
    if orientation == 8:  # rotate 90 degrees counter-clockwise
        return np.rot90(a, k=1)
    raise ValueError(orientation)


def red_corner(image: np.ndarray) -> str:
    """Which corner of a decoded blocks_rgb image holds the red square."""
    h, w = image.shape[:2]
    corners = {"top-left": image[1, 1], "top-right": image[1, w - 2],
               "bottom-left": image[h - 2, 1], "bottom-right": image[h - 2, w - 2]}
    red = [name for name, px in corners.items() if px[0] > 150 and px[1] < 90 and px[2] < 90]
    assert len(red) == 1, corners
    return red[0]


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def good_png(seed: int, size=(96, 80)) -> bytes:
    """A distinct, textured (never flat) 8-bit RGB PNG."""
    h, w = size
    rng = np.random.default_rng(seed)
    # smooth gradients plus noise: passes the patch flatness QC, distinct per seed
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], axis=2)
    a = np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
    return encode(a, "PNG")


def assert_skipped(result, *words):
    assert isinstance(result, Skipped), result
    for word in words:
        assert word.lower() in result.reason.lower(), (word, result.reason)
    return result


# ------------------------------------------------------------------ 1. decoding


def test_png_8bit_rgb_exact(tmp_path):
    a = noise_rgb(30, 41, seed=1)
    p = write(tmp_path / "a.png", encode(a, "PNG"))
    data, image = read_source(str(p))
    assert data == p.read_bytes()
    assert image.dtype == np.uint8 and image.shape == (30, 41, 3)
    np.testing.assert_array_equal(image, a)


def test_png_16bit_rgb_keeps_precision_and_channel_order():
    a = noise_rgb(23, 37, seed=2, dtype=np.uint16)
    png = cv2.imencode(".png", a[..., ::-1])[1].tobytes()  # cv2 writes BGR
    assert Image.open(io.BytesIO(png)).mode == "RGB"  # PIL alone would give 8 bits
    image = decode_bytes(png)
    assert image.dtype == np.uint16 and image.shape == (23, 37, 3)
    np.testing.assert_array_equal(image, a)  # RGB order, every bit kept


def test_png_16bit_rgb_distinguishes_low_byte():
    # values that differ only in the low byte must stay distinct (an 8-bit detour merges them)
    a = np.zeros((8, 8, 3), np.uint16)
    a[..., 0] = 0x1234
    a[..., 1] = 0x12FF
    a[..., 2] = np.arange(64, dtype=np.uint16).reshape(8, 8) + 0xAB00
    image = decode_bytes(cv2.imencode(".png", a[..., ::-1])[1].tobytes())
    np.testing.assert_array_equal(image, a)


def test_png_16bit_rgba_over_white():
    a = np.zeros((4, 6, 4), np.uint16)
    a[..., 0], a[..., 1], a[..., 2] = 1000, 20000, 50000
    a[:2, :, 3] = 65535  # opaque top half
    a[2:, :, 3] = 0  # transparent bottom half
    image = decode_bytes(cv2.imencode(".png", a[..., [2, 1, 0, 3]])[1].tobytes())
    assert image.dtype == np.uint16 and image.shape == (4, 6, 3)
    np.testing.assert_array_equal(image[:2], np.broadcast_to([1000, 20000, 50000], (2, 6, 3)))
    np.testing.assert_array_equal(image[2:], np.full((2, 6, 3), 65535))


def test_png_16bit_gray():
    g = np.random.default_rng(3).integers(0, 65536, (19, 27), dtype=np.uint16)
    g[0, 0], g[0, 1] = 0, 65535
    image = decode_bytes(cv2.imencode(".png", g)[1].tobytes())
    assert image.dtype == np.uint16 and image.shape == (19, 27, 3)
    for c in range(3):
        np.testing.assert_array_equal(image[..., c], g)


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_tiff_16bit_rgb(compression):
    a = noise_rgb(21, 33, seed=4, dtype=np.uint16)
    buf = io.BytesIO()
    tifffile.imwrite(buf, a, photometric="rgb", compression=compression)
    image = decode_bytes(buf.getvalue())
    assert image.dtype == np.uint16 and image.shape == (21, 33, 3)
    np.testing.assert_array_equal(image, a)


def test_jpeg_close_to_original():
    a = blocks_rgb(64, 80)
    image = decode_bytes(encode(a, "JPEG", quality=95))
    assert image.dtype == np.uint8 and image.shape == (64, 80, 3)
    assert np.abs(image.astype(int) - a).mean() < 3


def test_webp_lossless_and_lossy():
    a = noise_rgb(20, 24, seed=5)
    np.testing.assert_array_equal(decode_bytes(encode(a, "WEBP", lossless=True)), a)
    b = blocks_rgb(64, 64)
    image = decode_bytes(encode(b, "WEBP", quality=95))
    assert image.dtype == np.uint8 and image.shape == (64, 64, 3)
    assert np.abs(image.astype(int) - b).mean() < 4


def test_bmp_exact():
    a = noise_rgb(17, 29, seed=6)
    np.testing.assert_array_equal(decode_bytes(encode(a, "BMP")), a)


def test_grayscale_L():
    g = np.random.default_rng(7).integers(0, 256, (15, 22), dtype=np.uint8)
    image = decode_bytes(encode(Image.fromarray(g, "L"), "PNG"))
    assert image.dtype == np.uint8 and image.shape == (15, 22, 3)
    for c in range(3):
        np.testing.assert_array_equal(image[..., c], g)


def _palette_image(transparent_index=None):
    idx = np.zeros((10, 12), np.uint8)
    idx[:, 4:8] = 1
    idx[:, 8:] = 2
    im = Image.fromarray(idx, "P")
    im.putpalette([200, 10, 10, 10, 200, 10, 10, 10, 200] + [0, 0, 0] * 253)
    kw = {} if transparent_index is None else {"transparency": transparent_index}
    return encode(im, "PNG", **kw)


def test_palette_without_transparency():
    image = decode_bytes(_palette_image())
    assert image.dtype == np.uint8 and image.shape == (10, 12, 3)
    assert (image[:, :4] == (200, 10, 10)).all()
    assert (image[:, 4:8] == (10, 200, 10)).all()
    assert (image[:, 8:] == (10, 10, 200)).all()


def test_palette_with_transparency_over_white():
    png = _palette_image(transparent_index=1)
    assert "transparency" in Image.open(io.BytesIO(png)).info
    image = decode_bytes(png)
    assert (image[:, :4] == (200, 10, 10)).all()
    assert (image[:, 4:8] == 255).all()  # the transparent entry is white, not its palette green
    assert (image[:, 8:] == (10, 10, 200)).all()


def test_rgba_transparent_is_white_opaque_keeps_color():
    a = np.zeros((6, 9, 4), np.uint8)
    a[..., :3] = (30, 60, 90)
    a[:2, :, 3] = 255  # opaque
    a[2:4, :, 3] = 0  # fully transparent: color underneath must not show
    a[4:, :, 3] = 128  # half
    image = decode_bytes(encode(Image.fromarray(a, "RGBA"), "PNG"))
    assert image.shape == (6, 9, 3)
    assert (image[:2] == (30, 60, 90)).all()
    assert (image[2:4] == 255).all()
    expected_half = np.array([30, 60, 90]) * 128 / 255 + 255 * 127 / 255
    assert np.abs(image[4:].astype(float) - expected_half).max() <= 1.5


def test_la_over_white():
    a = np.zeros((4, 5, 2), np.uint8)
    a[..., 0] = 70
    a[:2, :, 1] = 255
    a[2:, :, 1] = 0
    image = decode_bytes(encode(Image.fromarray(a, "LA"), "PNG"))
    assert image.shape == (4, 5, 3)
    assert (image[:2] == 70).all()
    assert (image[2:] == 255).all()


@pytest.mark.parametrize("cmyk, rgb", [((255, 0, 0, 0), (0, 255, 255)),
                                       ((0, 255, 0, 0), (255, 0, 255)),
                                       ((0, 0, 255, 0), (255, 255, 0)),
                                       ((0, 0, 0, 255), (0, 0, 0))])
def test_cmyk_jpeg_colors(cmyk, rgb):
    data = encode(Image.new("CMYK", (64, 48), cmyk), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    image = decode_bytes(data)
    assert image.dtype == np.uint8 and image.shape == (48, 64, 3)
    assert np.abs(image.reshape(-1, 3).mean(axis=0) - rgb).max() < 12, image[0, 0]


@pytest.mark.parametrize("orientation, corner", [(1, "top-left"), (3, "bottom-right"),
                                                 (6, "top-right"), (8, "bottom-left")])
def test_exif_orientation_jpeg(orientation, corner):
    a = blocks_rgb(48, 64)
    data = encode(a, "JPEG", quality=95, exif=exif_bytes(orientation))
    image = decode_bytes(data)
    swapped = orientation in (5, 6, 7, 8)
    assert image.shape == ((64, 48, 3) if swapped else (48, 64, 3))
    assert red_corner(image) == corner
    want = upright(a, orientation)
    assert np.abs(image.astype(int) - want).mean() < 3
    # and PIL's own reading of the tag agrees
    ref = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    np.testing.assert_array_equal(image, ref)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_png_8bit(orientation):
    a = noise_rgb(5, 7, seed=orientation)
    data = encode(a, "PNG", exif=exif_bytes(orientation))
    image = decode_bytes(data)
    np.testing.assert_array_equal(image, upright(a, orientation))
    np.testing.assert_array_equal(image, np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data)))))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_png_16bit_rgb(orientation):
    # PIL cannot write 48-bit PNG: cv2 writes the pixels, the eXIf chunk is spliced in by hand
    a = noise_rgb(5, 7, seed=10 + orientation, dtype=np.uint16)
    data = with_exif_chunk(cv2.imencode(".png", a[..., ::-1])[1].tobytes(), orientation)
    assert Image.open(io.BytesIO(data)).getexif().get(ORIENTATION) == orientation
    image = decode_bytes(data)
    assert image.dtype == np.uint16
    np.testing.assert_array_equal(image, upright(a, orientation))
    # same layout as PIL's exif_transpose gives the 8-bit view of the same file
    ref8 = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    np.testing.assert_array_equal((image >> 8).astype(np.uint8), ref8)


@pytest.mark.parametrize("orientation", [3, 6, 7, 8])
def test_exif_orientation_png_16bit_gray(orientation):
    g = np.random.default_rng(orientation).integers(0, 65536, (5, 7), dtype=np.uint16)
    data = with_exif_chunk(cv2.imencode(".png", g)[1].tobytes(), orientation)
    image = decode_bytes(data)
    assert image.dtype == np.uint16
    np.testing.assert_array_equal(image[..., 1], upright(g, orientation))


@pytest.mark.parametrize("orientation", [6, 7])
def test_exif_orientation_tiff_16bit_rgb(orientation):
    a = noise_rgb(5, 7, seed=20, dtype=np.uint16)
    buf = io.BytesIO()
    tifffile.imwrite(buf, a, photometric="rgb", extratags=[(274, "H", 1, orientation, True)])
    image = decode_bytes(buf.getvalue())
    assert image.dtype == np.uint16
    np.testing.assert_array_equal(image, upright(a, orientation))


def test_inspect_reports_size_after_orientation(tmp_path):
    p = write(tmp_path / "r.jpg", encode(noise_rgb(70, 100, seed=8), "JPEG", exif=exif_bytes(6)))
    s = inspect_source(str(p), **SCAN)
    assert isinstance(s, Source)
    assert (s.width, s.height) == (70, 100)
    assert s.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()
    assert s.split == split_of(s.sha256, SCAN["val_fraction"])


# ------------------------------------------------------------------ 2. bad files are skipped


def make_bad_files(folder: Path) -> dict:
    """path -> words its skip reason must contain."""
    png = good_png(99, (120, 130))
    jpg = encode(noise_rgb(120, 130, seed=9), "JPEG", quality=90)
    bad = {
        write(folder / "trunc.png", png[: len(png) // 2]): ["truncated"],
        write(folder / "trunc.jpg", jpg[: len(jpg) // 2]): ["truncated"],
        write(folder / "random.jpg", np.random.default_rng(0).bytes(3000)): ["not an image"],
        write(folder / "empty.png", b""): ["not an image"],
        write(folder / "text.png", b"hello, I am a text file\n" * 20): ["not an image"],
        write(folder / "small.png", good_png(98, (30, 40))): ["too small", "40x30", "64"],
        write(folder / "flat.png", encode(Image.new("RGB", (100, 90), (120, 80, 40)), "PNG")): ["near-flat"],
        write(folder / "bomb.png", encode(Image.new("RGB", (2000, 2000)), "PNG")):
            ["pixel limit", "--max-pixels", "2000x2000"],
    }
    link = folder / "broken.png"
    os.symlink(folder / "does-not-exist.png", link)
    bad[link] = ["cannot read"]
    return bad


def test_bad_files_are_skipped_with_reasons(tmp_path):
    for path, words in make_bad_files(tmp_path).items():
        assert_skipped(inspect_source(str(path), **SCAN), *words)


def test_missing_path_and_directory_cannot_be_read(tmp_path):
    assert_skipped(inspect_source(str(tmp_path / "nope.png"), **SCAN), "cannot read")
    (tmp_path / "dir.png").mkdir()
    assert_skipped(inspect_source(str(tmp_path / "dir.png"), **SCAN), "cannot read")


def test_skip_thresholds_are_the_given_ones(tmp_path):
    # exactly min_size is fine; one pixel less is not
    p = write(tmp_path / "edge.png", good_png(1, (64, 200)))
    assert isinstance(inspect_source(str(p), **SCAN), Source)
    assert_skipped(inspect_source(str(p), **{**SCAN, "min_size": 65}), "too small")
    # the pixel limit: at the limit passes, above it is refused
    assert isinstance(inspect_source(str(p), **{**SCAN, "max_pixels": 64 * 200}), Source)
    assert_skipped(inspect_source(str(p), **{**SCAN, "max_pixels": 64 * 200 - 1}), "pixel limit")
    # a faint but real texture is not "near-flat" with threshold 0
    faint = np.full((80, 80, 3), 128, np.uint8)
    faint[::2] += 1
    f = write(tmp_path / "faint.png", encode(faint, "PNG"))
    assert_skipped(inspect_source(str(f), **SCAN), "near-flat")
    assert isinstance(inspect_source(str(f), **{**SCAN, "flat_threshold": 0.0}), Source)


def test_16bit_flat_check_uses_16bit_scale(tmp_path):
    # a 16-bit image with a clear texture is not flat ...
    a = np.full((80, 80, 3), 30000, np.uint16)
    a[::2] = 36000
    p = write(tmp_path / "t16.png", cv2.imencode(".png", a)[1].tobytes())
    s = inspect_source(str(p), **SCAN)
    assert isinstance(s, Source), s
    # ... and one that varies by 100 of 65535 is (a 0..255 scale would call it wild texture)
    a[::2] = 30100
    q = write(tmp_path / "f16.png", cv2.imencode(".png", a)[1].tobytes())
    assert_skipped(inspect_source(str(q), **SCAN), "near-flat")


def test_pixel_limit_refuses_before_decoding_huge_header():
    # a PNG whose header claims 100000 x 100000 pixels: refused from the header, by our limit
    # (with the --max-pixels hint), not by PIL's own bomb check with its own number
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    png = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
           + png_chunk(b"IDAT", zlib.compress(b"\0" * 10)) + png_chunk(b"IEND", b""))
    with pytest.raises(UnusableSource) as err:
        decode_bytes(png, max_pixels=DEFAULT_MAX_PIXELS)
    assert "--max-pixels" in str(err.value) and "pixel limit" in str(err.value)


def test_max_pixels_replaces_pils_own_limit(monkeypatch):
    # PIL refuses at open() beyond 2 x Image.MAX_IMAGE_PIXELS; --max-pixels must be what counts
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    a = noise_rgb(100, 100, seed=11)
    np.testing.assert_array_equal(decode_bytes(encode(a, "PNG"), max_pixels=10_000_000), a)
    assert Image.MAX_IMAGE_PIXELS == 1000  # restored afterwards


def test_pixel_limit_message_is_readable():
    with pytest.raises(UnusableSource) as err:
        decode_bytes(encode(Image.new("RGB", (1000, 1000)), "PNG"), max_pixels=300_000)
    text = str(err.value)
    assert "1000x1000" in text and "--max-pixels" in text
    assert "0 MP" not in text  # 300,000 pixels must not read as "0 MP"


@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL warns about the corrupt TIFF tags we made
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"])
def test_truncated_or_corrupted_never_raises_other_errors(fmt):
    data = encode(noise_rgb(40, 48, seed=12), fmt)
    rng = np.random.default_rng(13)
    variants = [data[: len(data) // 2], data[: len(data) - 7], data[:20]]
    for _ in range(25):
        b = bytearray(data)
        for i in rng.integers(0, len(b), 4):
            b[i] = int(rng.integers(0, 256))
        variants.append(bytes(b))
    for v in variants:
        try:
            image = decode_bytes(v, max_pixels=10_000_000)
        except UnusableSource as exc:
            assert str(exc)
        else:
            assert image.ndim == 3 and image.shape[2] == 3 and image.dtype in (np.uint8, np.uint16)


# ------------------------------------------------------------------ 3. discovery


def test_discover_folder_recursive_hidden_and_ignored(tmp_path):
    root = tmp_path / "photos"
    want = [write(root / "a.png", b"x"), write(root / "sub" / "b.jpg", b"x"),
            write(root / "sub" / "deep" / "c.TIFF", b"x"), write(root / "sub" / "E.JPEG", b"x"),
            write(root / "w.webp", b"x"), write(root / "m.bmp", b"x")]
    write(root / ".hidden.png", b"x")
    write(root / ".cache" / "d.png", b"x")
    write(root / "sub" / ".git" / "e.jpg", b"x")
    write(root / "notes.txt", b"x")
    write(root / "sub" / "data.csv", b"x")
    write(root / "sub" / "deep" / "clip.mp4", b"x")
    paths, ignored = discover_sources([str(root)])
    assert paths == sorted(str(p.resolve()) for p in want)
    assert all(os.path.isabs(p) for p in paths)
    assert ignored == 3


def test_discover_globs(tmp_path, monkeypatch):
    root = tmp_path / "g"
    top = [write(root / "a.png", b"x"), write(root / "b.png", b"x")]
    nested = [write(root / "s" / "c.png", b"x"), write(root / "s" / "t" / "d.png", b"x")]
    write(root / "e.jpg", b"x")
    write(root / ".hidden.png", b"x")
    assert discover_sources([str(root / "*.png")])[0] == sorted(str(p) for p in top)
    recursive, _ = discover_sources([str(root / "**" / "*.png")])
    assert recursive == sorted(str(p) for p in top + nested)
    # a relative pattern works from the current folder and still yields absolute paths
    monkeypatch.chdir(root)
    assert discover_sources(["s/**/*.png"])[0] == sorted(str(p) for p in nested)
    # folder + overlapping glob: each file once
    both, _ = discover_sources([str(root), str(root / "*.png")])
    assert both == sorted(set(both)) and len(both) == 5


def test_discover_list_file(tmp_path, monkeypatch):
    lists = tmp_path / "lists"
    a = write(lists / "imgs" / "a.png", b"x")
    b = write(tmp_path / "elsewhere" / "b.jpg", b"x")
    c = write(lists / "c d.png", b"x")
    lst = write(lists / "sources.txt", (
        "# my sources\n"
        "\n"
        "imgs/a.png\n"
        f"   {b}   \n"
        "   # an indented comment\n"
        "c d.png\n"
        "\n").encode())
    monkeypatch.chdir(tmp_path / "elsewhere")  # relative lines resolve against the list, not the cwd
    paths, ignored = discover_sources([str(lst)])
    assert paths == sorted(str(p) for p in (a, b, c))
    assert ignored == 0
    # listed files that turn out missing are kept, to be skipped with a reason at inspection
    lst2 = write(lists / "more.lst", b"imgs/a.png\nmissing.png\n")
    paths2, _ = discover_sources([str(lst2)])
    assert str(lists / "missing.png") in paths2
    assert_skipped(inspect_source(str(lists / "missing.png"), **SCAN), "cannot read")


def test_discover_errors_name_the_spec(tmp_path):
    missing = str(tmp_path / "no-such-folder")
    with pytest.raises(SourceError, match="no-such-folder"):
        discover_sources([missing])
    pattern = str(tmp_path / "*.nothing")
    with pytest.raises(SourceError) as err:
        discover_sources([pattern])
    assert "*.nothing" in str(err.value)
    empty_list = write(tmp_path / "empty.txt", b"# nothing here\n\n")
    with pytest.raises(SourceError, match="empty.txt"):
        discover_sources([str(empty_list)])


def test_builtin_sources_decode():
    for specs in (None, [], ()):
        paths, ignored = discover_sources(specs)
        assert paths and ignored == 0
        assert all(p.startswith(BUILTIN_PREFIX) for p in paths)
    shas = set()
    for p in paths:
        data, image = read_source(p)
        assert image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) >= 256, p
        shas.add(hashlib.sha256(data).hexdigest())
    assert len(shas) == len(paths)  # distinct photos


# ------------------------------------------------------------------ 4. splits


def test_split_of_depends_only_on_hash():
    rng = random.Random(0)
    for _ in range(200):
        sha = "%064x" % rng.getrandbits(256)
        assert split_of(sha, 0.3) == split_of(sha, 0.3) == split_of(sha.upper(), 0.3)
        # growing val_fraction only moves images from train to val, never back
        seen_val = False
        for f in (0.0, 0.1, 0.2, 0.5, 0.8, 1.0):
            s = split_of(sha, f)
            assert s in ("train", "val")
            if seen_val:
                assert s == "val"
            seen_val = seen_val or s == "val"


def test_split_rule_is_the_documented_one():
    # "val when u >= 1 - val_fraction", u from the leading hex digits: pinned, because changing the
    # rule would silently move images between the splits of existing datasets
    assert split_of("0" * 64, 0.5) == "train"
    assert split_of("7" + "f" * 63, 0.5) == "train"
    assert split_of("8" + "0" * 63, 0.5) == "val"
    assert split_of("f" * 64, 0.5) == "val"
    assert split_of("cc" + "0" * 62, 0.2) == "train"  # u = 0xcc/256 = 0.796875 < 0.8
    assert split_of("cd" + "0" * 62, 0.2) == "val"  # u = 0.80078125 >= 0.8


def test_split_shares_and_extremes():
    rng = random.Random(1)
    hashes = ["%064x" % rng.getrandbits(256) for _ in range(10_000)]
    for f in (0.05, 0.2, 0.5, 0.9):
        share = sum(split_of(h, f) == "val" for h in hashes) / len(hashes)
        assert abs(share - f) < 0.02, (f, share)
    extremes = ["0" * 64, "f" * 64, "ffffffffffffffff" + "0" * 48, "fffffffffffffc00" + "0" * 48,
                "8" + "0" * 63, "7" + "f" * 63]
    for h in hashes + extremes:
        assert split_of(h, 0.0) == "train", h
        assert split_of(h, 1.0) == "val", h


@pytest.fixture(scope="module")
def folder30(tmp_path_factory):
    root = tmp_path_factory.mktemp("thirty")
    for i in range(30):
        write(root / f"img{i:02d}.png", encode(noise_rgb(64, 64, seed=100 + i), "PNG"))
    return root


def test_split_same_for_any_subset_or_order(folder30, tmp_path):
    paths, _ = discover_sources([str(folder30)])
    assert len(paths) == 30
    kw = {**SCAN, "val_fraction": 0.4}
    full = {p: inspect_source(p, **kw) for p in paths}
    assert all(isinstance(s, Source) for s in full.values())
    splits = {p: s.split for p, s in full.items()}
    assert set(splits.values()) == {"train", "val"}
    for p, s in full.items():
        assert s.split == split_of(hashlib.sha256(Path(p).read_bytes()).hexdigest(), 0.4)
    rng = random.Random(2)
    for trial in range(4):
        subset = rng.sample(paths, rng.randint(3, 30))
        rng.shuffle(subset)
        results = [inspect_source(p, **kw) for p in subset]  # scanned afresh, in this order
        for r in results:
            assert r.split == splits[r.path]
        train, _, n_val = select_sources(results, "train")
        val, _, n_train = select_sources(list(reversed(results)), "val")
        assert {s.sha256 for s in train}.isdisjoint(s.sha256 for s in val)
        assert len(train) + len(val) == len(subset)
        assert n_val == len(val) and n_train == len(train)
        assert [s.path for s in train] == [s.path for s in select_sources(results[::-1], "train")[0]]
    # the split follows the content, not the name: renamed copies keep their split
    copies = tmp_path / "renamed"
    copies.mkdir()
    for i, p in enumerate(paths):
        shutil.copy(p, copies / f"zz{29 - i}.png")
    for q in discover_sources([str(copies)])[0]:
        s = inspect_source(q, **kw)
        original = next(p for p, o in full.items() if o.sha256 == s.sha256)
        assert s.split == splits[original]


def test_select_sources_sorts_by_hash_and_drops_duplicates(folder30, tmp_path):
    folder = tmp_path / "dups"
    folder.mkdir()
    srcs = sorted(discover_sources([str(folder30)])[0])[:6]
    for p in srcs:
        shutil.copy(p, folder / Path(p).name)
    shutil.copy(srcs[2], folder / "zz-copy.png")  # the same bytes under a second name
    shutil.copy(srcs[4], folder / "aa-copy.png")  # ... and one that sorts first
    write(folder / "bad.png", b"not a png")
    paths, _ = discover_sources([str(folder)])
    kw = {**SCAN, "val_fraction": 0.0}
    results = [inspect_source(p, **kw) for p in paths]
    for order in (results, results[::-1], random.Random(3).sample(results, len(results))):
        chosen, skipped, other = select_sources(order, "train")
        assert other == 0
        assert len(chosen) == 6
        assert [s.sha256 for s in chosen] == sorted(s.sha256 for s in chosen)
        assert len({s.sha256 for s in chosen}) == 6
        reasons = {Path(s.path).name: s.reason for s in skipped}
        assert set(reasons) == {"zz-copy.png", "bad.png", Path(srcs[4]).name}
        assert "duplicate" in reasons["zz-copy.png"] and Path(srcs[2]).name in reasons["zz-copy.png"]
        assert "duplicate" in reasons[Path(srcs[4]).name] and "aa-copy.png" in reasons[Path(srcs[4]).name]
    assert select_sources(results, "val")[0] == []


# ------------------------------------------------------------------ 5. end to end through the build API


def _build(folder, out, **kw):
    cfg = BuildConfig(**{"n": 20, "sources": (str(folder),), "val_fraction": 0.0, "max_pixels": 1_000_000,
                         **kw})
    return bapps_build.run_build(cfg, out, workers=1, progress=False, log=lambda m: None)


def test_build_skips_bad_files_and_reports_them(tmp_path):
    folder = tmp_path / "src"
    good = [write(folder / f"good{i}.png", good_png(200 + i)) for i in range(3)]
    bad = make_bad_files(folder)
    write(folder / "readme.md", b"# not an image\n")
    report = _build(folder, tmp_path / "out")
    src = report["sources"]
    assert src["usable_in_split"] == len(good)
    assert src["ignored_non_image"] == 1
    skipped = {s["path"]: s["reason"] for s in src["skipped"]}
    assert set(skipped) == {str(p) for p in bad}
    for path, words in bad.items():
        for word in words:
            assert word.lower() in skipped[str(path)].lower(), (path, skipped[str(path)])
    manifest = tmp_path / "out" / "2afc" / "train" / "traditional" / "manifest.jsonl"
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(records) == 20
    good_shas = {hashlib.sha256(p.read_bytes()).hexdigest() for p in good}
    assert {r["source"]["sha256"] for r in records} <= good_shas


def test_build_with_only_bad_files_fails_before_writing(tmp_path):
    folder = tmp_path / "src"
    make_bad_files(folder)
    out = tmp_path / "out"
    with pytest.raises(SourceError) as err:
        _build(folder, out)
    assert "no usable source" in str(err.value)
    assert not (out / "2afc").exists()


def test_train_and_val_builds_share_no_source(tmp_path):
    folder = tmp_path / "src"
    shas = {}
    for i in range(40):
        p = write(folder / f"s{i:02d}.png", good_png(300 + i, (72, 72)))
        shas[p] = hashlib.sha256(p.read_bytes()).hexdigest()
        splits = [split_of(h, 0.5) for h in shas.values()]
        if i >= 7 and min(splits.count("train"), splits.count("val")) >= 3:
            break
    out = tmp_path / "out"
    used = {}
    for split in ("train", "val"):
        report = _build(folder, out, n=30, split=split, val_fraction=0.5)
        assert report["sources"]["usable_in_split"] == sum(split_of(h, 0.5) == split for h in shas.values())
        manifest = out / "2afc" / split / "traditional" / "manifest.jsonl"
        used[split] = {json.loads(line)["source"]["sha256"] for line in manifest.read_text().splitlines()}
        assert all(split_of(h, 0.5) == split for h in used[split])
    assert used["train"] and used["val"]
    assert used["train"].isdisjoint(used["val"])
