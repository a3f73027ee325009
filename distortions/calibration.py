"""Severity -> strength: the fitted maps that put every family on one severity scale.

A family's ``sample(rng, t)`` is written over its own raw strength t in [0, 1]; the
severity s a user or a recipe asks for is mapped to t by a monotone, piecewise-linear map
fitted by ``bapps-build calibrate`` (see bapps_build/calibration.py for the measure and the
target curve). The built-in maps live in calibration.json beside this file; a plugin's
map is registered from the ``<plugin>.calibration.json`` file that ``calibrate --plugin``
writes beside it. A family without a map uses t = s (uncalibrated: its own scale).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from .errors import CalibrationError

CALIBRATION_FILE = Path(__file__).with_name("calibration.json")
SEVERITY_KNOTS = tuple(float(s) for s in np.linspace(0.0, 1.0, 9))

_MAPS: Dict[str, Tuple[Tuple[float, ...], Tuple[float, ...]]] = {}
_builtin_loaded = False


def _check_knots(name: str, severity: Sequence[float], strength: Sequence[float]):
    s = [float(v) for v in severity]
    t = [float(v) for v in strength]
    if len(s) != len(t) or len(s) < 2:
        raise CalibrationError(f"calibration of {name!r}: severity and strength knots must be two lists of equal length >= 2")
    if s[0] != 0.0 or s[-1] != 1.0 or any(b <= a for a, b in zip(s, s[1:])):
        raise CalibrationError(f"calibration of {name!r}: severity knots must rise strictly from 0 to 1")
    if any(not 0.0 <= v <= 1.0 for v in t) or any(b < a for a, b in zip(t, t[1:])):
        raise CalibrationError(f"calibration of {name!r}: strength knots must be non-decreasing in [0, 1]")
    return tuple(s), tuple(t)


def register_calibration(name: str, severity: Sequence[float], strength: Sequence[float]) -> None:
    """Use this severity -> strength map for family `name` from now on."""
    _MAPS[name] = _check_knots(name, severity, strength)


def load_calibration_file(path) -> Dict[str, dict]:
    """Register every family map in a calibration file; returns the maps read."""
    doc = json.loads(Path(path).read_text())
    families = doc.get("families")
    if not isinstance(families, dict):
        raise CalibrationError(f"{path}: not a calibration file (no 'families' object); "
                         "`bapps-build calibrate` writes them")
    for name, knots in families.items():
        register_calibration(name, knots["severity"], knots["strength"])
    return families


def _ensure_builtin() -> None:
    global _builtin_loaded
    if not _builtin_loaded:
        _builtin_loaded = True
        if CALIBRATION_FILE.exists():
            for name, knots in json.loads(CALIBRATION_FILE.read_text())["families"].items():
                _MAPS.setdefault(name, _check_knots(name, knots["severity"], knots["strength"]))


def calibration_of(name: str) -> Optional[Tuple[Tuple[float, ...], Tuple[float, ...]]]:
    _ensure_builtin()
    return _MAPS.get(name)


def severity_to_strength(name: str, severity: float) -> float:
    """The raw strength that family `name` is sampled at for this severity."""
    knots = calibration_of(name)
    s = min(max(float(severity), 0.0), 1.0)
    if knots is None:
        return s
    return float(np.interp(s, knots[0], knots[1]))
