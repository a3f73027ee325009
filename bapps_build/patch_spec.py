"""What one patch draw needs: the patch's size, its scale range, the flatness rule, the context.

A plain value with no dependencies, so that a build's settings (config.BuildConfig,
real.RealConfig), generator training and the preview sheets all describe their patches the
same way and hand that description to recipes.sample_patch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

# A patch whose gray levels vary less than this (standard deviation on the [0, 1] scale) is
# near-flat: drawn again, up to MAX_FLAT_ATTEMPTS times, then the least flat one is kept.
FLAT_THRESHOLD = 0.015
MAX_FLAT_ATTEMPTS = 50


@dataclass(frozen=True)
class PatchSpec:
    patch_size: int = 64
    scale_range: Tuple[float, float] = (0.5, 1.0)
    flat_threshold: float = FLAT_THRESHOLD
    max_flat_attempts: int = MAX_FLAT_ATTEMPTS
    context_margin: int = 0  # pixels of real context cut around the patch (patches.CONTEXT_MARGIN)

    @property
    def side(self) -> int:
        """The side of what is cut: the patch and its context on every side."""
        return self.patch_size + 2 * self.context_margin
