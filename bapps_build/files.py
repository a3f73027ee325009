"""Small file helpers: atomic writes, PNG encode/decode, JSON Lines.

A file appears under its final name only when complete (write to a hidden temp name that
carries no image extension, then rename), so a killed build never leaves half an image
that the LPIPS loader would pick up.
"""
from __future__ import annotations

import errno
import hashlib
import stat
import json
import os
import struct
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from .errors import InputFileError

TEMP_SUFFIX = ".partial"


def temp_name(path: Path, with_pid: bool = True) -> Path:
    """`.<name>.<pid>.partial` beside path: hidden, no image extension, one per process."""
    if not with_pid:
        return path.with_name(f".{path.name}{TEMP_SUFFIX}")
    return path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")


def write_all(fd: int, data) -> None:
    """os.write until every byte is written; a write that makes no progress raises (ENOSPC).

    os.write may write less than asked (a full disk, a signal, a pipe); ignoring that is how a
    truncated file gets renamed into place as if complete.
    """
    view = memoryview(data).cast("B")
    total, done = len(view), 0
    while done < total:
        n = os.write(fd, view[done:])
        if n <= 0:
            raise OSError(errno.ENOSPC, f"no space left: wrote {done} of {total} bytes")
        done += n


def fsync_dir(folder) -> None:
    """Make a rename or a new file in folder durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path, durable: bool = False, pid_in_name: bool = True) -> Iterator[Path]:
    """The one temp-then-rename of this tool: yields a hidden temp name beside `path` to write
    (by any writer: os.write, torch.save, ...); when the block ends without an error the temp
    file replaces `path` whole, and on any error it is removed and `path` is left as it was.

    durable: also fsync the file and its folder, for what a resume trusts after a crash (build
    records, part files); images are not fsynced but checked against their checksums instead.
    pid_in_name=False: the temp name is `.<name>.partial`, for writers whose bytes depend on
    the file's name (torch.save names the folder inside its zip after it).
    """
    path = Path(path)
    tmp = temp_name(path, pid_in_name)
    try:
        yield tmp
        if durable:
            _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def _fsync_file(path) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path, data: bytes, durable: bool = False) -> None:
    """Write a file under its final name only when all of it is written, or raise (atomic_path)."""
    with AtomicFile(path, durable) as f:
        f.write(data)


class AtomicFile:
    """A file written in pieces (a shard, a manifest) that appears under its name only when closed
    without an error: `with AtomicFile(path) as f: f.write(...)`. Every write is checked whole."""

    def __init__(self, path, durable: bool = False):
        self.path = Path(path)
        self.durable = durable
        self.fd = None
        self.size = 0
        self._target = None

    def __enter__(self):
        self._target = atomic_path(self.path, self.durable)
        tmp = self._target.__enter__()
        try:
            self.fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except BaseException as exc:
            self._target.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def write(self, data) -> int:
        write_all(self.fd, data)
        self.size += len(data)
        return len(data)

    def __exit__(self, exc_type, exc, tb):
        fd, self.fd = self.fd, None
        try:
            os.close(fd)
        except OSError as close_error:
            if exc_type is None:  # a close that fails (NFS, quota) fails the file
                self._target.__exit__(OSError, close_error, close_error.__traceback__)
                raise
        return self._target.__exit__(exc_type, exc, tb)


def _unlink_quietly(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def write_json_atomic(path, obj, indent=2, durable: bool = False) -> None:
    write_atomic(path, (json.dumps(obj, indent=indent, sort_keys=False) + "\n").encode("utf-8"), durable)


def is_own_temp_name(name: str) -> bool:
    """`.<name>.<pid>.partial`: a temp file this tool writes (temp_name); nothing else matches."""
    if not (name.startswith(".") and name.endswith(TEMP_SUFFIX)):
        return False
    inner = name[1:-len(TEMP_SUFFIX)]
    base, dot, pid = inner.rpartition(".")
    return bool(dot and base and pid.isdigit())


def remove_partials(folders, writer_gone=None) -> int:
    """Delete the temp files a killed run of this tool left in folders (not below them); returns
    how many. Only names temp_name makes are touched: never a file this tool did not create.
    Call it only while holding the folder's lock (locks.py), or it could take a live writer's;
    writer_gone(pid), when given, must also agree (the pid is the one in the temp's name)."""
    if isinstance(folders, (str, os.PathLike)):
        folders = [folders]
    n = 0
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for e in entries:
            if not (is_own_temp_name(e.name) and e.is_file(follow_symlinks=False)):
                continue
            if writer_gone is None or writer_gone(int(e.name[:-len(TEMP_SUFFIX)].rpartition(".")[2])):
                try:
                    os.unlink(e.path)
                    n += 1
                except OSError:
                    pass
    return n


class NotARegularFile(OSError):
    """A path that is a FIFO, a device, a socket or a folder, or that is too big to read."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def read_regular_file(path, max_bytes: int) -> bytes:
    """The bytes of a regular file (links to one are fine), at most max_bytes, never blocking.

    Opened with O_NONBLOCK so a FIFO cannot hang the open, then checked on the open descriptor
    (no window for a swap between check and read); a device or a file over the limit raises
    NotARegularFile, whose message says what the path is.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotARegularFile(errno.EINVAL, f"{_kind(st.st_mode)}, not a regular file; only files are read",
                                  os.fspath(path))
        if st.st_size > max_bytes:
            raise NotARegularFile(errno.EFBIG, f"{st.st_size:,} bytes, over the limit of {max_bytes:,}", os.fspath(path))
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(1 << 22, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:  # grew while being read
                raise NotARegularFile(errno.EFBIG, f"more than {max_bytes:,} bytes, over the limit", os.fspath(path))
        return b"".join(chunks)
    finally:
        os.close(fd)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(tag)))


def encode_png(rgb_u8: np.ndarray) -> bytes:
    """8-bit RGB PNG bytes; the same pixels always give the same bytes (for one zlib).

    Written here rather than by libpng: the Sub filter for every row (photo patches are
    smooth along rows) and Huffman-only deflate (LZ77 finds few repeats in 64x64 pixels)
    encode a patch in about half libpng's time, for files a few percent larger. Full photos
    and patches stored larger go through encode_photo_png (libpng).
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


# zlib level 1 and the default strategy, said explicitly: OpenCV's own default strategy (RLE)
# has changed between releases. At 256 px this writes files a sixth smaller than encode_png.
_LIBPNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_DEFAULT]


def encode_photo_png(rgb_u8: np.ndarray) -> bytes:
    """8-bit RGB PNG bytes of a full photo (`apply --out`, `--stored-size` exports), by libpng
    through OpenCV; Pillow's PNG writer is its own code on zlib, not libpng."""
    img = np.asarray(rgb_u8)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"encode_photo_png expects an (H, W, 3) uint8 image, got {img.dtype} {img.shape}")
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(img[..., ::-1]), _LIBPNG_PARAMS)  # OpenCV wants BGR
    if not ok:
        raise ValueError(f"libpng could not encode an image of shape {img.shape}")
    return buf.tobytes()

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
                raise InputFileError(f"{path}, line {n}: not valid JSON ({exc.msg})") from None


def jsonl_line(record: dict) -> str:
    return json.dumps(record, separators=(",", ":")) + "\n"
