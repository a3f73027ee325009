"""Small file helpers: atomic writes, PNG encode/decode, JSON Lines.

A file appears under its final name only when complete (write to a hidden temp name that
carries no image extension, then rename), so a killed build never leaves half an image
that the LPIPS loader would pick up.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

TEMP_SUFFIX = ".partial"


def temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")


def write_atomic(path, data: bytes) -> None:
    path = Path(path)
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_json_atomic(path, obj, indent=2) -> None:
    write_atomic(path, (json.dumps(obj, indent=indent, sort_keys=False) + "\n").encode("utf-8"))


def remove_partials(folder) -> int:
    """Delete temp files a killed run left behind; returns how many."""
    n = 0
    for p in Path(folder).rglob(f".*{TEMP_SUFFIX}"):
        try:
            p.unlink()
            n += 1
        except OSError:
            pass
    return n


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(tag)))


def encode_png(rgb_u8: np.ndarray) -> bytes:
    """8-bit RGB PNG bytes; the same pixels always give the same bytes (for one zlib).

    Written here rather than by libpng: the Sub filter for every row (photo patches are
    smooth along rows) and Huffman-only deflate (LZ77 finds few repeats in 64x64 pixels)
    encode a patch in about half libpng's time, for files a few percent larger.
    """
    img = np.ascontiguousarray(rgb_u8, dtype=np.uint8)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"encode_png expects an (H, W, 3) uint8 image, got {img.shape}")
    h, w, c = img.shape
    rows = img.reshape(h, w * c)
    raw = np.empty((h, w * c + 1), np.uint8)
    raw[:, 0] = 1  # filter type Sub: each byte minus the byte one pixel to the left
    raw[:, 1:c + 1] = rows[:, :c]
    np.subtract(rows[:, c:], rows[:, :-c], out=raw[:, c + 1:])
    deflate = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_HUFFMAN_ONLY)
    idat = deflate.compress(raw.tobytes()) + deflate.flush()
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit, truecolor, no interlace
    return _PNG_SIGNATURE + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def decode_png(data: bytes) -> np.ndarray:
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if arr is None:
        raise ValueError("not a readable PNG")
    return np.ascontiguousarray(arr[..., ::-1])


def read_png(path) -> np.ndarray:
    return decode_png(Path(path).read_bytes())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path) -> str:
    return sha256_bytes(Path(path).read_bytes())


def read_jsonl(path) -> Iterator[dict]:
    with open(path, "r", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}, line {n}: not valid JSON ({exc.msg})") from None


def jsonl_line(record: dict) -> str:
    return json.dumps(record, separators=(",", ":")) + "\n"
