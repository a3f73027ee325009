"""Regenerate one example from its manifest record alone and compare it with the disk."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import distortions

from .errors import UserError
from .hooks import replay_preparers
from .files import decode_png, encode_png, sha256_bytes
from .layout import MANIFEST
from .manifest import find_record as find_in_manifest, upgrade_record
from .shards import find_sample, is_shard_set
from .recipes import reference_patch, render
from .sources import UnusableSource, read_source


class ReplayError(UserError, RuntimeError):
    """The example cannot be replayed as asked (no such id, a missing manifest or source)."""


def read_example_files(subset_path: Path, stem: str, folders) -> dict:
    """The stored PNG bytes of one example by folder, from a tree or from shards."""
    subset_path = Path(subset_path)
    if is_shard_set(subset_path) and not (subset_path / folders[0]).is_dir():
        fields = find_sample(subset_path, stem)
        return {f: fields[f"{f}.png"] for f in folders if f"{f}.png" in fields}
    out = {}
    for f in folders:
        p = subset_path / f / f"{stem}.png"
        if p.exists():
            out[f] = p.read_bytes()
    return out


def prepare_families(subset_path: Path) -> None:
    """Register what the build's settings say it used beyond the built-ins (a generator bank):
    each package that provides such families registered a preparer (bapps_build.hooks)."""
    build_file = Path(subset_path) / "build.json"
    if not build_file.exists():
        return
    settings = json.loads(build_file.read_text()).get("settings", {})
    for prepare in replay_preparers():
        prepare(settings)


def find_record(subset_path: Path, example_id: int) -> dict:
    manifest = Path(subset_path) / MANIFEST
    if not manifest.exists():
        raise ReplayError(f"{manifest} is missing: is the build finished? (run distort with --resume)")
    record = find_in_manifest(manifest, example_id)
    if record is None:
        raise ReplayError(f"no example with id {example_id} in {manifest}")
    return record


def replay_record(record: dict, max_pixels: int = 0) -> dict:
    """The example's images (uint8 by folder) regenerated from the record alone (of any
    schema version: it is upgraded first)."""
    record = upgrade_record(record)
    if record.get("kind") == "real":
        from .real import render_real

        try:
            return render_real(record, max_pixels)
        except UnusableSource as exc:
            raise ReplayError(f"example {record['id']}: {exc}") from None
    src = record["source"]
    try:
        data, image = read_source(src["path"], max_pixels)
    except UnusableSource as exc:
        raise ReplayError(f"source {src['path']} of example {record['id']}: {exc}") from None
    if sha256_bytes(data) != src["sha256"]:
        raise ReplayError(f"source {src['path']} has changed since example {record['id']} was made "
                          "(its SHA-256 differs from the manifest)")
    return render(record, reference_patch(record, image))


def replay_example(subset_path, example_id: int, plugins=()) -> dict:
    """Compare a regenerated example with the files on disk, folder by folder."""
    for p in plugins:
        distortions.load_plugin_file(p)
    subset_path = Path(subset_path)
    prepare_families(subset_path)
    record = find_record(subset_path, example_id)
    try:
        images = replay_record(record)
    except distortions.UnknownFamilyError as exc:
        raise ReplayError(f"example {example_id}: {exc}. A family from a package (cnn: generators) is there once "
                          "that package is imported (the command line imports it)") from None
    result = {"id": example_id, "stem": record["stem"], "folders": {}, "ok": True}
    stored = read_example_files(subset_path, record["stem"], list(images))
    stored_size = record.get("stored_size")
    for folder, pixels in images.items():
        expected = encode_png(pixels)
        if stored_size:  # exported with --stored-size: compare at that size, resized (and encoded) the same way
            from .export import _resize

            expected = _resize(expected, stored_size)
            pixels = decode_png(expected)
        path = subset_path / folder / f"{record['stem']}.png"
        entry = {"path": str(path) if (subset_path / folder).is_dir() else f"shard sample {record['stem']}.{folder}.png"}
        on_disk = stored.get(folder)
        if on_disk is None:
            entry.update(exists=False, pixels_equal=False, bytes_equal=False)
        else:
            disk_pixels = decode_png(on_disk)
            entry.update(exists=True,
                         pixels_equal=bool(disk_pixels.shape == pixels.shape and np.array_equal(disk_pixels, pixels)),
                         bytes_equal=expected == on_disk,
                         checksum_matches_manifest=sha256_bytes(on_disk) == record.get("files", {}).get(folder),
                         max_abs_difference=int(np.abs(disk_pixels.astype(int) - pixels).max())
                         if disk_pixels.shape == pixels.shape else None)
        result["folders"][folder] = entry
        result["ok"] &= entry["pixels_equal"]
    result["record"] = record
    return result
