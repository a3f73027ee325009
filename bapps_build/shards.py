"""WebDataset shards: plain POSIX tar files, one sample per example, written byte-reproducibly.

Convention (webdataset): a sample is the run of members sharing a key, the part of the
member name before the first dot; the rest is the field. Here the key is the example's
stem (no dots) and the fields are ref.png, p0.png, p1.png, judge.npy / same.npy and json.

Headers come from `tarfile` (POSIX ustar): a fixed mode, uid/gid 0, empty owner names and
one fixed mtime make the same samples give the same bytes anywhere. Members are streamed
through `TarInfo.tobuf` rather than a `TarFile`, which would pad the end of the archive to a
10 KiB record and hide the bytes from the running checksum; the end is the two zero blocks
POSIX asks for.
"""
from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Tuple

from .errors import UserError
from .layout import STEM_PATTERN

BLOCK = 512
FIXED_MTIME = 946684800  # 2000-01-01T00:00:00Z: a constant, and not one tools call implausible
FIELD_ORDER = ("ref.png", "p0.png", "p1.png", "judge.npy", "same.npy", "json")
INDEX = "index.json"


def tar_header(name: str, size: int, mtime: int = FIXED_MTIME) -> bytes:
    """The 512-byte ustar header of a regular file, the same bytes on any machine."""
    if len(name.encode("utf-8")) > 100:  # ustar could split at a "/", but a member name has none
        raise ValueError(f"tar member name too long for ustar: {name}")
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")


def tar_member(name: str, data: bytes) -> bytes:
    pad = (-len(data)) % BLOCK
    return tar_header(name, len(data)) + data + b"\0" * pad


TAR_END = b"\0" * (2 * BLOCK)


def json_bytes(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")  # insertion order: a recipe round-trips


def sample_bytes(key: str, fields: Dict[str, bytes]) -> bytes:
    if "." in key:
        raise ValueError(f"a webdataset key must not contain dots: {key!r}")
    order = [f for f in FIELD_ORDER if f in fields] + sorted(set(fields) - set(FIELD_ORDER))
    return b"".join(tar_member(f"{key}.{field}", fields[field]) for field in order)


def write_shard(path, samples: Iterable[Tuple[str, Dict[str, bytes]]]) -> dict:
    """Write samples to a tar atomically (all of it, fsynced, or nothing); returns {"file", "samples",
    "bytes", "sha256"}."""
    from .files import AtomicFile

    path = Path(path)
    digest, count, size = hashlib.sha256(), 0, 0
    first = last = None
    with AtomicFile(path, durable=True) as f:
        for key, fields in samples:
            chunk = sample_bytes(key, fields)
            f.write(chunk)
            digest.update(chunk)
            size += len(chunk)
            count += 1
            first = first or key
            last = key
        f.write(TAR_END)
        digest.update(TAR_END)
        size += len(TAR_END)
    return {"file": path.name, "samples": count, "bytes": size, "sha256": digest.hexdigest(),
            "first_key": first, "last_key": last}


class ShardError(UserError, ValueError):
    """A shard a reader must not trust: a member name or size outside the format, or a damaged tar."""


KEY_PATTERN = STEM_PATTERN  # a key is a stem: no dots, separators or `..`
MAX_MEMBER_BYTES = 256 * 2**20  # far above any patch at any --stored-size


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def read_shard(path, strict: bool = False, max_member_bytes: int = MAX_MEMBER_BYTES
               ) -> Iterator[Tuple[str, Dict[str, bytes]]]:
    """Samples of a shard in order (any valid tar, not only ours).

    strict (for shards from elsewhere, whose names become paths): every member must be a
    regular file named <key>.<field> with a plain key (letters, digits, _ and -) and a field of
    this format, no folder part, no `..`, not absolute, and at most max_member_bytes; anything
    else raises ShardError naming the shard and the member.
    """
    current, fields = None, {}
    name = Path(path).name
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if strict:
                    _check_member(name, member, max_member_bytes)
                elif not member.isfile():
                    continue
                base = os.path.basename(member.name)
                key, dot, field = base.partition(".")
                if not dot:
                    continue
                prefix = os.path.dirname(member.name)
                key = f"{prefix}/{key}" if prefix else key
                if key != current:
                    if current is not None:
                        yield current, fields
                    current, fields = key, {}
                if strict and field in fields:
                    raise ShardError(f"{name}: member {_shorten(member.name)!r} appears twice")
                fields[field] = tar.extractfile(member).read()
    except tarfile.TarError as exc:
        raise ShardError(f"{name}: not a readable tar file ({exc}); download it again") from None
    if current is not None:
        yield current, fields


def _check_member(shard: str, member: tarfile.TarInfo, max_bytes: int) -> None:
    shown = _shorten(member.name)
    if not member.isfile():
        raise ShardError(f"{shard}: member {shown!r} is not a regular file (a link, folder or device); "
                         "this shard set is not one of this format and was not used")
    key, dot, field = member.name.partition(".")
    if not (dot and KEY_PATTERN.fullmatch(key) and field in FIELD_ORDER):
        raise ShardError(f"{shard}: member {shown!r} is not named <key>.<field> with a plain key (letters, digits, "
                         f"_ and -) and one of the fields {', '.join(FIELD_ORDER)}; this shard set was not used")
    if member.size > max_bytes:
        raise ShardError(f"{shard}: member {shown!r} claims {member.size:,} bytes, over the limit of "
                         f"{max_bytes:,}; this shard set was not used")


def shard_file_name(name: str, k: int) -> str:
    return f"{name}-{k:06d}.tar"


def write_index(folder, name: str, task: str, shards: List[dict], extra=None) -> dict:
    index = {"name": name, "task": task, "samples": sum(s["samples"] for s in shards),
             "shards": shards, **(extra or {})}
    from .files import write_json_atomic

    write_json_atomic(Path(folder) / INDEX, index)
    return index


def read_index(folder) -> dict:
    """A shard set's index.json; a damaged one raises ShardError (a ValueError) naming the file."""
    path = Path(folder) / INDEX
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ShardError(f"{path}: not valid JSON ({str(exc)[:200]}); export or build the shard set again") from None
    if not isinstance(index, dict) or not isinstance(index.get("shards"), list):
        raise ShardError(f"{path}: not a shard index (a JSON object with a list of shards)")
    return index


def is_shard_set(folder) -> bool:
    return (Path(folder) / INDEX).exists()


def find_sample(folder, key: str) -> Dict[str, bytes]:
    """The fields of one sample of a shard set, found through the index's key ranges."""
    index = read_index(folder)
    for shard in index["shards"]:
        if shard.get("first_key") is not None and shard["first_key"] <= key <= shard["last_key"]:
            for k, fields in read_shard(Path(folder) / shard["file"]):
                if k == key:
                    return fields
    raise ShardError(f"no sample {key} in the shards of {folder}, though its index lists it; export or build "
                     "the shard set again")


def verify_shard_set(folder, task: str, folders, label: str, manifest_records=None) -> List[str]:
    """Problems a reader would hit: missing or changed shards, wrong counts, missing fields, keys."""
    folder = Path(folder)
    problems: List[str] = []
    index = read_index(folder)
    previous, total = "", 0
    files_of = {r["stem"]: r.get("files", {}) for r in manifest_records or []}
    for shard in index["shards"]:
        path = folder / shard["file"]
        if not path.exists():
            problems.append(f"{shard['file']}: listed in {INDEX} but missing")
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != shard["sha256"]:
            problems.append(f"{shard['file']}: content differs from the checksum in {INDEX}")
        count = 0
        for key, fields in read_shard(path):
            count += 1
            if key <= previous:
                problems.append(f"{shard['file']}: key {key} is out of order or repeated")
            previous = key
            missing = [f"{f}.png" for f in folders if f"{f}.png" not in fields]
            if missing:
                problems.append(f"{shard['file']}: sample {key} lacks {', '.join(missing)}")
            for f, digest in files_of.get(key, {}).items():
                data = fields.get(f"{f}.png")
                if data is not None and hashlib.sha256(data).hexdigest() != digest:
                    problems.append(f"{shard['file']}: {key}.{f}.png differs from the manifest's checksum")
        if count != shard["samples"]:
            problems.append(f"{shard['file']}: {count} samples, {INDEX} says {shard['samples']}")
        total += count
    if manifest_records is not None and len(manifest_records) != total:
        problems.append(f"the manifest has {len(manifest_records)} example(s), the shards {total}")
    return problems
