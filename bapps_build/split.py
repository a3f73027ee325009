"""The sources of one split, found, inspected and selected once, with the cache to cut from.

Every caller that cuts patches from --sources (`distort`, generator training, the preview
sheets) goes through load_split: discover the files, inspect each (decode, size, flatness,
split by content hash), keep the ones of the split. `real` matches references with their
algorithms' outputs instead (real.match_outputs).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import numpy as np

from .executors import run_units
from .jobs import progress_bar
from .patch_spec import PatchSpec
from .recipes import sample_patch
from .sources import (DEFAULT_MAX_PIXELS, Skipped, Source, SourceCache, SourceError, discover_sources,
                      inspect_source, select_sources)

PARALLEL_FROM = 20  # files to inspect from which a process pool is worth its start


@dataclass
class SplitSources:
    split: str
    sources: List[Source]  # sorted by content hash
    skipped: List[Skipped]
    other_split: int  # usable files that belong to the other split
    files_found: int
    ignored_non_image: int
    val_fraction: float
    cache: SourceCache = field(repr=False, default_factory=SourceCache)

    def require(self) -> "SplitSources":
        """Itself, or a SourceError that says why no file is usable and what to change."""
        if not self.sources:
            raise SourceError(self.no_usable_message())
        return self

    def no_usable_message(self) -> str:
        usable = self.files_found - len(self.skipped)
        reasons = Counter(s.reason.split(":")[0] for s in self.skipped)
        detail = ", ".join(f"{n} {r}" for r, n in reasons.most_common())
        return (f"no usable source image for the {self.split} split: {self.files_found} file(s) found, "
                f"{len(self.skipped)} skipped ({detail or 'none'}), {self.other_split} of {usable} usable belong "
                f"to the other split (--val-fraction {self.val_fraction}). Add images with --sources, or change "
                "--val-fraction (0 puts every image in train, 1 every image in val).")

    def patch(self, rng: np.random.Generator, spec: PatchSpec, among: Optional[Sequence[Source]] = None) -> np.ndarray:
        """One patch (uint8, with its context when spec has a margin) drawn by rng from `among`
        (default: every source of the split), cut as `distort` cuts it."""
        return sample_patch(rng, spec, self.sources if among is None else among, self.cache.get)[2]


def load_split(specs: Sequence[str], split: str, spec: PatchSpec, *, val_fraction: float,
               max_pixels: int = DEFAULT_MAX_PIXELS, workers: int = 1, progress: bool = False) -> SplitSources:
    """The usable sources of `split` among the --sources specs (empty: the built-in photos).

    A file is usable when it decodes, is at least one patch on its shorter side and is not
    near-flat as a whole (spec's threshold); nothing is raised when none is (see require)."""
    paths, ignored = discover_sources(specs)
    kwargs = dict(min_size=spec.patch_size, max_pixels=max_pixels, flat_threshold=spec.flat_threshold,
                  val_fraction=val_fraction)
    scan = _inspect_all(paths, kwargs, workers, progress)
    sources, skipped, other_split = select_sources(scan, split)
    return SplitSources(split, sources, skipped, other_split, len(paths), ignored, val_fraction,
                        SourceCache(max_pixels=max_pixels))


def _inspect_all(paths: Sequence[str], kwargs: dict, workers: int, progress: bool) -> list:
    results = []
    many = len(paths) > PARALLEL_FROM
    bar = progress_bar(len(paths), "scanning sources", "img", progress and many)
    if workers > 1 and many:
        run_units(_inspect_unit, (list(paths), kwargs), range(len(paths)), workers=workers,
                  on_result=lambda r: (results.append(r), bar.update(1)))
    else:
        for p in paths:
            results.append(inspect_source(p, **kwargs))
            bar.update(1)
    bar.close()
    return results


def _inspect_unit(context, i, progress):
    paths, kwargs = context
    return inspect_source(paths[i], **kwargs)
