"""`bapps-build preview`: a contact sheet of examples with each patch's chain written under it.

PNG for a quick look; HTML (self-contained, images inline) to zoom and read every param.
"""
from __future__ import annotations

import base64
import html
import io
import json
import textwrap
from pathlib import Path
from typing import List, Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from distortions import describe_chain

from .errors import UserError
from .layout import IMAGE_FOLDERS, MANIFEST
from .manifest import is_real_side, read_manifest, real_output
from .replay import read_example_files


class PreviewError(UserError, ValueError):
    """The sheet cannot be drawn as asked (ids not in the manifest, an output name without a known type)."""


def select_records(subset_path: Path, count: int, seed: Optional[int] = None, ids=None) -> List[dict]:
    """The first `count` examples, or `count` drawn at random with `seed`, or the given ids."""
    manifest = Path(subset_path) / MANIFEST
    if not manifest.exists():
        raise FileNotFoundError(f"{manifest} is missing: is the build finished?")
    if ids:
        wanted = set(ids)
        found = [r for r in read_manifest(manifest) if r["id"] in wanted]
        missing = wanted - {r["id"] for r in found}
        if missing:
            raise PreviewError(f"no example with id {sorted(missing)[:5]} in {manifest}")
        return found
    if seed is None:
        out = []
        for r in read_manifest(manifest):
            out.append(r)
            if len(out) == count:
                break
        return out
    # reservoir sampling: one pass, memory bounded by count
    rng = np.random.default_rng(seed)
    out = []
    for n, r in enumerate(read_manifest(manifest)):
        if len(out) < count:
            out.append(r)
        else:
            j = int(rng.integers(0, n + 1))
            if j < count:
                out[j] = r
    return sorted(out, key=lambda r: r["id"])


def _task_of(record: dict) -> str:
    return record.get("task", "2afc")


def _label(record: dict, folder: str) -> str:
    if folder == "ref" or (folder == "p0" and _task_of(record) == "jnd"):
        return "reference"
    side = record.get(folder) or []
    if is_real_side(side):
        return real_output(side)["algorithm"]
    return describe_chain(side)


def _images(subset_path: Path, record: dict) -> dict:
    """PIL images of one example by folder, from a tree or from shards."""
    folders = IMAGE_FOLDERS[_task_of(record)]
    stored = read_example_files(subset_path, record["stem"], folders)
    missing = [f for f in folders if f not in stored]
    if missing:
        raise FileNotFoundError(f"example {record['id']} has no {', '.join(missing)} image in {subset_path}")
    return {f: Image.open(io.BytesIO(data)).convert("RGB") for f, data in stored.items()}


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def contact_sheet(subset_path, records: List[dict], zoom: int = 3, columns: int = 2) -> Image.Image:
    subset_path = Path(subset_path)
    if not records:
        raise PreviewError("no examples to preview")
    font = _font(11)
    folders = IMAGE_FOLDERS[_task_of(records[0])]
    patch = _images(subset_path, records[0])[folders[0]].size[0] * zoom
    chars = max(12, patch // 6)
    text_h = 4 * 13 + 6
    gap = 10
    cell_w, cell_h = patch + 4, patch + text_h
    group_w = len(folders) * cell_w + gap
    rows = -(-len(records) // columns)
    sheet = Image.new("RGB", (columns * group_w + gap, rows * (cell_h + 16) + gap), "white")
    draw = ImageDraw.Draw(sheet)
    for n, record in enumerate(records):
        gx = gap + (n % columns) * group_w
        gy = gap + (n // columns) * (cell_h + 16)
        draw.text((gx, gy), f"#{record['id']}", fill="black", font=font)
        images = _images(subset_path, record)
        for c, folder in enumerate(folders):
            x, y = gx + c * cell_w, gy + 14
            im = images[folder]
            sheet.paste(im.resize((patch, patch), Image.NEAREST), (x, y))
            text = textwrap.wrap(f"{folder}: {_label(record, folder)}", chars, break_on_hyphens=False)
            for line_no, line in enumerate(text[:4]):
                draw.text((x, y + patch + 2 + 13 * line_no), line, fill="black", font=font)
    return sheet


def html_sheet(subset_path, records: List[dict], zoom: int = 3) -> str:
    subset_path = Path(subset_path)
    rows = []
    for record in records:
        folders = IMAGE_FOLDERS[_task_of(record)]
        stored = read_example_files(subset_path, record["stem"], folders)
        cells = []
        for folder in folders:
            data = stored[folder]
            uri = "data:image/png;base64," + base64.b64encode(data).decode()
            chain = record.get(folder) if folder != "ref" else None  # its steps (a real side: one step)
            params = html.escape(json.dumps(chain, indent=1)) if chain else ""
            cells.append(
                f'<td><img src="{uri}" title="{params}"><div class="label">{html.escape(folder)}: '
                f'{html.escape(_label(record, folder))}</div>'
                + (f"<details><summary>params</summary><pre>{params}</pre></details>" if params else "")
                + "</td>")
        src = html.escape(Path(record["source"]["path"]).name)
        rows.append(f'<tr><th>#{record["id"]}<br><small>{src}<br>box {record["crop"]["box"]}</small></th>'
                    + "".join(cells) + "</tr>")
    size = None
    if records:
        first = IMAGE_FOLDERS[_task_of(records[0])][0]
        size = _images(subset_path, records[0])[first].size[0] * zoom
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>bapps-build preview: {html.escape(str(subset_path))}</title>
<style>
body {{ font-family: sans-serif; font-size: 13px; }}
img {{ width: {size}px; height: {size}px; image-rendering: pixelated; display: block; }}
td, th {{ vertical-align: top; padding: 6px; text-align: left; }}
.label {{ max-width: {size}px; word-wrap: break-word; }}
pre {{ font-size: 11px; max-width: {size}px; overflow-x: auto; }}
</style></head><body>
<h1>{html.escape(str(subset_path))}</h1>
<table>
{chr(10).join(rows)}
</table></body></html>
"""


def write_preview(subset_path, out, count=24, seed=None, ids=None, zoom=3, columns=2) -> int:
    records = select_records(Path(subset_path), count, seed, ids)
    out = Path(out)
    if out.suffix.lower() in (".html", ".htm"):
        out.write_text(html_sheet(subset_path, records, zoom), encoding="utf-8")
    elif out.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"):
        contact_sheet(subset_path, records, zoom, columns).save(out)
    else:
        raise PreviewError(f"--out {out}: use a .png or .html file name")
    return len(records)
