"""Source photographs: finding them, decoding them, and assigning each to a split.

A source is identified by the SHA-256 of its file bytes. The split (train or val) is a
function of that hash alone, so the two splits never share an image whatever order or
subset of files a build is given.
"""
from __future__ import annotations

import glob
import hashlib
import io
import os
import warnings
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .errors import UserError
from .files import NotARegularFile, read_regular_file
from .limits import DEFAULT_MAX_PIXELS

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp"}
LIST_EXTENSIONS = {".txt", ".lst", ".list"}
BUILTIN_PREFIX = "skimage:"
# The natural-scene color photographs that ship inside scikit-image (no download): no
# astronomy, microscopy or fundus images, whose near-black and stained patches are nothing
# like the photos BAPPS was cut from. motorcycle_right is left out: it is the other half of
# a stereo pair and would leak across splits.
BUILTIN_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")
# Five photos cannot be split by hash with two in each split (only motorcycle_left hashes
# into val at 0.2), so the built-ins have a fixed split: 3 train, 2 val, whenever
# 0 < --val-fraction < 1 (0 and 1 still put everything in one split).
BUILTIN_SPLITS = {"astronaut.png": "train", "chelsea.png": "train", "coffee.png": "train",
                  "rocket.jpg": "val", "motorcycle_left.png": "val"}

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, never half an image


class SourceError(UserError):
    """A source set the build cannot use at all (raised before any work starts)."""


class UnusableSource(UserError):
    """One file that is skipped, with the reason a person reads in the report."""


@dataclass(frozen=True)
class Source:
    path: str  # absolute path, or skimage:<file> for the built-in photos
    sha256: str
    width: int  # after EXIF orientation
    height: int
    split: str

    def to_json(self):
        return asdict(self)


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


# ---------------------------------------------------------------- finding files


def builtin_sources() -> List[str]:
    return [BUILTIN_PREFIX + name for name in BUILTIN_PHOTOS]


def resolve_path(path: str) -> str:
    """The file behind a recorded source path (built-ins live in skimage's data folder)."""
    if path.startswith(BUILTIN_PREFIX):
        from skimage import data

        return os.path.join(data.data_dir, path[len(BUILTIN_PREFIX):])
    return path


def _is_image_name(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def _read_list_file(path: Path) -> List[str]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line).expanduser()
        out.append(str(p if p.is_absolute() else path.parent / p))
    return out


def discover_sources(specs: Optional[Sequence[str]]) -> Tuple[List[str], int]:
    """Expand --sources (folders, recursive; glob patterns; text files of paths).

    Returns the absolute paths, deduplicated and sorted, and how many files in the
    folders were ignored for not having an image extension. Without specs: the
    built-in scikit-image photographs.
    """
    if not specs:
        return builtin_sources(), 0
    found, ignored = [], 0
    for spec in specs:
        p = Path(spec).expanduser()
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if name.startswith("."):
                        continue
                    if _is_image_name(name):
                        found.append(os.path.join(root, name))
                    else:
                        ignored += 1
        elif p.is_file():
            if p.suffix.lower() in LIST_EXTENSIONS:
                listed = _read_list_file(p)
                if not listed:
                    raise SourceError(f"--sources {spec}: the list file names no paths")
                found.extend(listed)  # each listed file is used, or skipped with its reason
            else:
                found.append(str(p))
        elif any(ch in spec for ch in "*?["):
            matches = [m for m in glob.glob(os.path.expanduser(spec), recursive=True) if os.path.isfile(m)]
            if not matches:
                raise SourceError(f"--sources {spec!r}: the pattern matches no files")
            found.extend(matches)
        else:
            raise SourceError(f"--sources {spec}: no such file or folder")
    unique = sorted({os.path.abspath(f) for f in found})
    return unique, ignored


# ---------------------------------------------------------------- decoding


def _orientation_fix(im: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # a broken EXIF block must not cost the image
        return im


def _to_rgb_array(im: Image.Image) -> np.ndarray:
    """uint8 or uint16 (H, W, 3) RGB from any PIL mode; transparency over white."""
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        gray = np.asarray(im).astype(np.int64)
        gray = np.clip(gray, 0, 65535).astype(np.uint16)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        gray = np.asarray(im, dtype=np.float64)
        top = 1.0 if gray.max(initial=0.0) <= 1.0 else (255.0 if gray.max() <= 255.0 else 65535.0)
        gray = np.clip(np.nan_to_num(gray) / top, 0.0, 1.0)
        return np.repeat(np.rint(gray * 65535.0).astype(np.uint16)[..., None], 3, axis=2)
    if mode == "CMYK":
        im = _cmyk_to_rgb(im)
    elif mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode in ("LA", "PA", "La", "RGBa"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.uint8)


def _cmyk_to_rgb(im: Image.Image) -> Image.Image:
    """Through the embedded ICC profile when there is one (print CMYK is not 1 - RGB)."""
    icc = im.info.get("icc_profile")
    if icc:
        try:
            from PIL import ImageCms

            return ImageCms.profileToProfile(im, io.BytesIO(icc), ImageCms.createProfile("sRGB"),
                                             outputMode="RGB")
        except Exception:
            pass
    return im.convert("RGB")


def _is_sixteen_bit_rgb(im: Image.Image) -> bool:
    """Whether PIL will reduce this 48/64-bit RGB(A) file to 8 bits (ask before load(): it clears tile)."""
    rawmodes = [t[3] if isinstance(t[3], str) else t[3][0] for t in getattr(im, "tile", []) if len(t) > 3 and t[3]]
    return im.mode in ("RGB", "RGBA") and any(";16" in r for r in rawmodes)


def _sixteen_bit_rgb(data: bytes, im: Image.Image) -> Optional[np.ndarray]:
    """PIL reduces 48-bit RGB to 8 bits; decode those with OpenCV to keep the precision."""
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3:
        return None
    if arr.shape[2] == 4:  # BGRA: over white, as for 8-bit images
        alpha = arr[..., 3:4].astype(np.float64) / 65535.0
        arr = np.rint(arr[..., :3] * alpha + 65535.0 * (1.0 - alpha)).astype(np.uint16)
    rgb = np.ascontiguousarray(arr[..., 2::-1])
    return _apply_exif_orientation(rgb, im)


def _apply_exif_orientation(arr: np.ndarray, im: Image.Image) -> np.ndarray:
    try:
        orientation = im.getexif().get(0x0112, 1)
    except Exception:
        orientation = 1
    ops = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: np.swapaxes(a, 0, 1), 6: lambda a: np.rot90(a, -1),
           7: lambda a: np.rot90(a, -1)[::-1], 8: lambda a: np.rot90(a, 1)}
    return np.ascontiguousarray(ops[orientation](arr)) if orientation in ops else arr


def decode_bytes(data: bytes, name: str = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image file's bytes to (H, W, 3) RGB, uint8 or uint16, EXIF-oriented.

    Raises UnusableSource with a reason a person can act on.
    """
    old_limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # Our own limit below replaces PIL's, which open() already enforces (at twice its value).
            Image.MAX_IMAGE_PIXELS = None
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if max_pixels and w * h > max_pixels:
                raise UnusableSource(
                    f"refused: {w}x{h} = {w * h:,} pixels is over the pixel limit of {max_pixels:,} "
                    "(decompression-bomb guard); raise --max-pixels if you trust it")
            deep_rgb = _is_sixteen_bit_rgb(im)
            im.load()
            deep = _sixteen_bit_rgb(data, im) if deep_rgb else None
            if deep is not None:
                return deep
            return _to_rgb_array(_orientation_fix(im))
    except UnusableSource:
        raise
    except UnidentifiedImageError:
        raise UnusableSource("not an image, or a format Pillow cannot read") from None
    except Image.DecompressionBombError as exc:
        raise UnusableSource(f"refused as a decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        text = str(exc) or type(exc).__name__
        if "truncated" in text.lower():
            raise UnusableSource(f"truncated file: {text}") from None
        raise UnusableSource(f"corrupt or unreadable image data: {text}") from None
    except MemoryError:
        raise UnusableSource("not enough memory to decode it; lower --max-pixels or use a smaller image") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit


MAX_SOURCE_BYTES = 2**30  # 1 GiB: far above any photo; a bound on what one file may make us read


def read_source(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Tuple[bytes, np.ndarray]:
    """Only regular files (or links to one) are read, at most MAX_SOURCE_BYTES, never blocking:
    a FIFO named like an image, a link to /dev/zero or a device is skipped with its reason."""
    try:
        data = read_regular_file(resolve_path(path), MAX_SOURCE_BYTES)
    except NotARegularFile as exc:
        raise UnusableSource(f"cannot read the file: {exc.strerror}") from None
    except OSError as exc:
        raise UnusableSource(f"cannot read the file: {exc.strerror or exc}") from None
    return data, decode_bytes(data, path, max_pixels)


def load_source_image(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The decoded pixels of one source (uint8 or uint16 RGB)."""
    return read_source(path, max_pixels)[1]


def to_float(image: np.ndarray) -> np.ndarray:
    top = 65535.0 if image.dtype == np.uint16 else 255.0
    return image.astype(np.float32) / np.float32(top)


# ---------------------------------------------------------------- splits and the scan


def split_of(sha256: str, val_fraction: float, path: str = "") -> str:
    """train or val from the content hash alone: val when u >= 1 - val_fraction (the built-in
    photos: their fixed split, see BUILTIN_SPLITS)."""
    if path.startswith(BUILTIN_PREFIX) and 0.0 < val_fraction < 1.0:
        fixed = BUILTIN_SPLITS.get(path[len(BUILTIN_PREFIX):])
        if fixed:
            return fixed
    u = int(sha256[:13], 16) / 2.0**52  # exact in a float, so u < 1 and 0 means all train
    return "val" if u >= 1.0 - val_fraction else "train"


LUMA = np.array([[0.299, 0.587, 0.114]])  # Rec. 601, as the gray of most image tools


def luma_std(image: np.ndarray, scale: float) -> float:
    """Standard deviation of the luma of an (H, W, 3) image, divided by scale."""
    import cv2

    luma = cv2.transform(np.ascontiguousarray(image, dtype=np.float32), LUMA)
    return float(cv2.meanStdDev(luma)[1][0, 0] / scale)


def image_flatness(image: np.ndarray) -> float:
    """Standard deviation of the gray image (luma) on the [0, 1] scale (subsampled for speed)."""
    step = max(1, int(max(image.shape[:2]) // 512))
    return luma_std(image[::step, ::step], 65535.0 if image.dtype == np.uint16 else 255.0)


def inspect_source(path: str, *, min_size: int, max_pixels: int, flat_threshold: float,
                   val_fraction: float):
    """Decode one file fully and describe it; returns a Source or a Skipped."""
    try:
        data, image = read_source(path, max_pixels)
    except UnusableSource as exc:
        return Skipped(path, str(exc))
    h, w = image.shape[:2]
    if min(h, w) < min_size:
        return Skipped(path, f"too small: {w}x{h}, needs at least {min_size} px on the shorter side")
    if image_flatness(image) < flat_threshold:
        return Skipped(path, "near-flat: the whole image is below the flatness threshold, no patch would pass")
    sha = hashlib.sha256(data).hexdigest()
    return Source(path, sha, w, h, split_of(sha, val_fraction, path))


def select_sources(results: Iterable, split: str) -> Tuple[List[Source], List[Skipped], int]:
    """Keep the sources of one split, sorted by content hash so file order never matters.

    Identical files under two names count once. Returns (sources, skipped, other_split).
    """
    by_hash, skipped, other = {}, [], 0
    for r in sorted(results, key=lambda r: r.path):
        if isinstance(r, Skipped):
            skipped.append(r)
        elif r.sha256 in by_hash:
            skipped.append(Skipped(r.path, f"duplicate of {by_hash[r.sha256].path}"))
        else:
            by_hash[r.sha256] = r
    chosen = [s for s in by_hash.values() if s.split == split]
    other = len(by_hash) - len(chosen)
    return sorted(chosen, key=lambda s: s.sha256), skipped, other


class SourceCache:
    """Decoded sources of one worker, least recently used first out, bounded in bytes."""

    def __init__(self, max_bytes: int = 768 * 2**20, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self._items: "OrderedDict[str, np.ndarray]" = OrderedDict()
        self._bytes = 0

    def get(self, source: Source) -> np.ndarray:
        image = self._items.get(source.sha256)
        if image is not None:
            self._items.move_to_end(source.sha256)
            return image
        data, image = read_source(source.path, self.max_pixels)
        if hashlib.sha256(data).hexdigest() != source.sha256:
            raise UnusableSource(f"{source.path} changed since the build started (its content hash differs)")
        self._items[source.sha256] = image
        self._bytes += image.nbytes
        while self._bytes > self.max_bytes and len(self._items) > 1:
            _, old = self._items.popitem(last=False)
            self._bytes -= old.nbytes
        return image
