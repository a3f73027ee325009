"""What a distortion family is: a name, a group, and the pair (sample, apply).

Kept apart from the registry so that the built-in family modules can describe their families
without importing the registry that loads them (no import cycle).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from .errors import FamilyError

GROUPS = ("photometric", "noise", "blur", "spatial", "compression", "cnn", "other")

Sampler = Callable[[np.random.Generator, float], dict]
Applier = Callable[[np.ndarray, Mapping], np.ndarray]


@dataclass(frozen=True)
class Family:
    """A distortion family: what `bapps-build families` lists and recipes name."""

    name: str
    group: str
    sample: Sampler
    apply: Applier
    params: Mapping[str, str] = field(default_factory=dict)  # param -> unit and range
    severity: str = ""  # what severity drives, in words
    source: str = "built-in"  # where it came from: built-in, an entry point or a file

    def __post_init__(self):
        if not self.name or not self.name.replace("_", "").isalnum() or self.name != self.name.lower():
            raise FamilyError(
                f"family name {self.name!r} must be short lower-case letters, digits and '_' "
                "(it is written into manifests and read back years later)")
        if not callable(self.sample) or not callable(self.apply):
            raise TypeError(f"family {self.name!r}: sample and apply must be callables")
