"""The settings of one build, validated once, recorded in build.json, compared on --resume."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Optional, Tuple

from .errors import ConfigError  # noqa: F401  (raised here; bapps_build.config.ConfigError for callers)
from .limits import DEFAULT_MAX_PIXELS
from .patch_spec import FLAT_THRESHOLD, MAX_FLAT_ATTEMPTS, PatchSpec

TASK_CHOICES = ("2afc", "jnd")
SPLIT_CHOICES = ("train", "val")


@dataclass(frozen=True)
class BuildConfig:
    n: int
    task: str = "2afc"
    split: str = "train"
    subset: str = "traditional"
    seed: int = 0
    patch_size: int = 64
    scale_range: Tuple[float, float] = (0.5, 1.0)
    flat_threshold: float = FLAT_THRESHOLD
    max_flat_attempts: int = MAX_FLAT_ATTEMPTS
    min_chain: int = 1
    max_chain: Optional[int] = None  # None: 2 for 2afc (single and composed), 1 for jnd
    families: Optional[Tuple[str, ...]] = None  # None: every registered traditional family
    severity_range: Optional[Tuple[float, float]] = None  # None: the task's default (see recipes)
    val_fraction: float = 0.2
    sources: Tuple[str, ...] = ()  # --sources specs; empty: the built-in photos
    max_pixels: int = DEFAULT_MAX_PIXELS
    plugins: Tuple[str, ...] = ()
    format: str = "bapps"  # bapps: a tree of PNG files; webdataset: tar shards
    maxcount: int = 2000  # examples per shard (webdataset)
    extra: dict = field(default_factory=dict)  # settings of subsystems (a generator bank, ...)
    context_margin: int = 8  # pixels of real context around each patch (patches.CONTEXT_MARGIN)

    def __post_init__(self):
        def need(cond, msg):
            if not cond:
                raise ConfigError(msg)

        need(isinstance(self.n, int) and self.n >= 1, f"--n must be a positive integer, got {self.n}")
        need(self.task in TASK_CHOICES, f"--task must be one of {', '.join(TASK_CHOICES)}, got {self.task!r}")
        need(self.split in SPLIT_CHOICES, f"--split must be train or val, got {self.split!r}")
        need(self.subset and self.subset.replace("_", "").replace("-", "").isalnum(),
             f"--subset must be a plain folder name, got {self.subset!r}")
        need(0 <= self.seed < 2**63, f"--seed must be a non-negative integer, got {self.seed}")
        need(16 <= self.patch_size <= 4096, f"--patch-size must be in 16..4096, got {self.patch_size}")
        lo, hi = self.scale_range
        need(0 < lo <= hi and math.isfinite(hi), f"--scale-range needs 0 < MIN <= MAX, got {lo} {hi}")
        need(0 <= self.flat_threshold < 0.5, f"--flat-threshold must be in [0, 0.5), got {self.flat_threshold}")
        need(1 <= self.min_chain <= self.longest_chain <= 20,
             f"--max-chain must be in 1..20 and at least min_chain (a Python setting), got "
             f"{self.min_chain}..{self.max_chain}")
        if self.severity_range is not None:
            s_lo, s_hi = self.severity_range
            need(0 <= s_lo <= s_hi <= 1, f"--severity-range needs 0 <= MIN <= MAX <= 1, got {s_lo} {s_hi}")
        need(0 <= self.context_margin <= 64, f"context margin must be in 0..64, got {self.context_margin}")
        need(0 <= self.val_fraction <= 1, f"--val-fraction must be in [0, 1], got {self.val_fraction}")
        need(self.max_pixels >= self.patch_size**2, f"--max-pixels is below one patch: {self.max_pixels}")
        need(self.format in ("bapps", "webdataset"), f"--format must be bapps or webdataset, got {self.format!r}")
        need(self.maxcount >= 1, f"--maxcount must be a positive integer, got {self.maxcount}")

    @property
    def longest_chain(self) -> int:
        """--max-chain, or the task's default: JND pairs ask whether one distortion near the
        threshold is visible (a composed pair at the threshold severity is not: see recipes)."""
        if self.max_chain is not None:
            return self.max_chain
        return 1 if self.task == "jnd" else 2

    @property
    def patch_spec(self) -> PatchSpec:
        """What each example's patch draw needs (recipes.sample_patch)."""
        return PatchSpec(self.patch_size, tuple(self.scale_range), self.flat_threshold, self.max_flat_attempts,
                         self.context_margin)

    @property
    def image_folders(self):
        from .layout import IMAGE_FOLDERS

        return IMAGE_FOLDERS[self.task]

    def settings(self, families, sources_digest: str) -> dict:
        """What decides the output bytes; --resume refuses when any of it differs."""
        d = asdict(self)
        d.pop("plugins")  # where a plugin lives does not matter; which families exist does
        d.pop("sources")  # the specs do not matter; the sources they resolved to do
        d["families"] = list(families)
        d["scale_range"] = list(self.scale_range)
        d["severity_range"] = list(self.severity_range) if self.severity_range is not None else None
        d["max_chain"] = self.longest_chain  # the task's default, spelled out
        d["seed_scheme"] = 2  # streams carry task/split/subset; calibrated severities
        d["sources_digest"] = sources_digest
        return d
