"""`bapps-build generators preview`: every trained network on the same few patches.

Row 0 shows the clean patches; each following row is one network: its label (name, task,
a short config summary: see ``generators.config.summarize_config``), then for each patch
the corrupted input (small) and the network's output (large). The patches are cut from
the sources by the same machinery as `distort`, from ``seed``; the corruptions are drawn
at the middle severity 0.5.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bapps_build.sources import SourceError
from distortions import generator, to_uint8

from .bank import BankError
from .config import summarize_config
from .corruptions import apply_corruption, sample_corruption


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def preview_patches(count: int, seed: int, sources: Sequence[str] = (), patch_size: int = 64) -> List[np.ndarray]:
    """count uint8 patches, from the sources of both splits, cut as `distort` cuts them."""
    from bapps_build.patch_spec import PatchSpec
    from bapps_build.split import load_split

    spec = PatchSpec(patch_size=patch_size)
    split = load_split(tuple(sources), "train", spec, val_fraction=0.0)  # 0: every image is in train
    if not split.sources:
        raise SourceError("no usable source image for the preview patches; give --sources")
    return [split.patch(generator(np.random.SeedSequence([seed, k])), spec) for k in range(count)]


def preview_sheet(bank_path, count: int = 4, seed: int = 0, sources: Sequence[str] = (), zoom: int = 2,
                  networks: Optional[Sequence[str]] = None) -> Image.Image:
    from .integration import LoadedBank

    loaded = LoadedBank(bank_path, "cpu")
    names = list(networks or loaded.names)
    unknown = [n for n in names if n not in loaded.names]
    if unknown:
        raise BankError(f"not trained networks of {loaded.path}: {', '.join(unknown)}")
    patches = preview_patches(count, seed, sources)
    size = patches[0].shape[0]
    big, small = size * zoom, max(16, size * zoom // 2)
    label_w, gap, row_h = 230, 6, big + 8
    cell_w = small + big + 2 * gap
    width = label_w + count * cell_w
    sheet = Image.new("RGB", (width, (len(names) + 1) * row_h + gap), "white")
    draw = ImageDraw.Draw(sheet)
    font = _font(11)
    draw.text((gap, gap), "clean patches", fill="black", font=font)
    for k, p in enumerate(patches):
        sheet.paste(Image.fromarray(p).resize((big, big), Image.NEAREST), (label_w + k * cell_w + small + gap, gap))
    for r, name in enumerate(names, start=1):
        config = loaded.config(name)
        y = r * row_h + gap
        words = summarize_config(config).split(" ")
        lines = [" ".join(words[:3]), " ".join(words[3:6]), " ".join(words[6:])]
        for i, line in enumerate(lines):
            draw.text((gap, y + 13 * i), line, fill="black", font=font)
        inputs = []
        for k, p in enumerate(patches):
            params = sample_corruption(config["corruption"], generator(np.random.SeedSequence([seed, k, 1])), 0.5)
            inputs.append(apply_corruption(p.astype(np.float32) / np.float32(255.0), params))
        outputs = loaded.run(name, inputs)
        for k, (x, out) in enumerate(zip(inputs, outputs)):
            cx = label_w + k * cell_w
            sheet.paste(Image.fromarray(to_uint8(x)).resize((small, small), Image.NEAREST), (cx, y))
            sheet.paste(Image.fromarray(to_uint8(out)).resize((big, big), Image.NEAREST), (cx + small + gap, y))
    return sheet


def write_preview(bank_path, out, count: int = 4, seed: int = 0, sources: Sequence[str] = (), zoom: int = 2,
                  networks: Optional[Sequence[str]] = None) -> Image.Image:
    sheet = preview_sheet(bank_path, count=count, seed=seed, sources=sources, zoom=zoom, networks=networks)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return sheet
