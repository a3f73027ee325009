"""The one registry of distortion families.

A family is the pair (sample, apply) plus a name and a group:

- ``sample(rng, severity) -> params``: draws JSON-able params from a numpy Generator;
  severity is a float in [0, 1] (0 barely visible, 1 strong).
- ``apply(image, params) -> image``: a pure function of a float32 (H, W, 3) image in
  [0, 1] and the params; anything random inside it comes from an integer seed in params.

Families from other packages arrive through the entry-point group
``bapps_build.distortions``; a local file arrives through :func:`load_plugin_file`.
"""
from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from .family import GROUPS, Applier, Family, Sampler  # noqa: F401  (Family is part of this module's API)

from .errors import FamilyError, PluginError, UnknownFamilyError

ENTRY_POINT_GROUP = "bapps_build.distortions"


_FAMILIES: Dict[str, Family] = {}
_entry_points_loaded = False
_builtins_loaded = False
_loaded_plugin_files: Dict[str, str] = {}  # resolved path -> sha256 of its text


def register(family: Family, *, replace: bool = False) -> Family:
    """Add a family to the registry; a second family of the same name is an error."""
    old = _FAMILIES.get(family.name)
    if old is not None and not replace and old is not family:
        raise FamilyError(
            f"a distortion family named {family.name!r} is already registered "
            f"(from {old.source}); choose another name")
    _FAMILIES[family.name] = family
    return family


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken third-party package must not hide the built-ins
            print(f"warning: could not load distortion plugin {ep.name!r} ({ep.value}): {exc}",
                  file=sys.stderr)
            continue
        for fam in _families_in(obj):
            register(Family(**{**fam.__dict__, "source": f"entry point {ep.value}"}))


def _families_in(obj) -> List[Family]:
    """A plugin object may be a Family, a list of them, or a module that registered itself."""
    if isinstance(obj, Family):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [f for f in obj if isinstance(f, Family)]
    found = getattr(obj, "FAMILIES", None)
    return list(found) if found else []


def load_plugin_file(path) -> List[str]:
    """Import a Python file that defines families; returns the names it added.

    The file either calls :func:`register` itself or defines ``FAMILIES = [Family(...)]``.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"plugin file {path} does not exist")
    resolved = str(p.resolve())
    if resolved in _loaded_plugin_files:
        _load_sidecar_calibration(p)  # written since (calibrate --plugin): use it from now on
        return []
    text = p.read_bytes()
    before = set(_FAMILIES)
    digest = hashlib.sha256(text).hexdigest()
    spec = importlib.util.spec_from_file_location(f"bapps_plugin_{digest[:12]}", resolved)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # so that pickling of its functions works in workers
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise PluginError(f"plugin file {path} failed to import: {type(exc).__name__}: {exc}") from exc
    for fam in _families_in(module):
        if fam.name not in _FAMILIES or _FAMILIES[fam.name] is not fam:
            register(Family(**{**fam.__dict__, "source": f"file {resolved}"}))
    _loaded_plugin_files[resolved] = digest
    added = sorted(set(_FAMILIES) - before)
    _load_sidecar_calibration(p)
    if not added:
        raise PluginError(
            f"plugin file {path} defined no distortion family: call distortions.register(Family(...)) "
            "in it or define FAMILIES = [Family(...)]")
    return added


def _load_sidecar_calibration(plugin: Path) -> None:
    """A plugin's fitted severity maps, written beside it by `bapps-build calibrate --plugin`."""
    maps = plugin.with_suffix(".calibration.json")
    if maps.exists():
        from .calibration import load_calibration_file

        load_calibration_file(maps)


def loaded_plugin_files() -> Dict[str, str]:
    return dict(_loaded_plugin_files)


def _ensure_builtins() -> None:
    """Register the built-in families (once, on first use: each module lists its FAMILIES)."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    from . import blur, compression, noise, photometric, spatial

    for module in (blur, compression, noise, photometric, spatial):
        for family in module.FAMILIES:
            register(family)
    _builtins_loaded = True


def get_family(name: str) -> Family:
    _ensure_builtins()
    _load_entry_points()
    try:
        return _FAMILIES[name]
    except KeyError:
        raise UnknownFamilyError(
            f"unknown distortion family {name!r}; known: {', '.join(sorted(_FAMILIES))} "
            "(`bapps-build families` lists them; a family from a file needs --plugin FILE)") from None


def all_families(group: Optional[str] = None) -> List[Family]:
    _ensure_builtins()
    _load_entry_points()
    # stable sort: registration order within a group (the spec's table order for built-ins)
    fams = sorted(_FAMILIES.values(), key=lambda f: GROUPS.index(f.group) if f.group in GROUPS else 99)
    return [f for f in fams if group is None or f.group == group]


def family_names(names: Optional[Iterable[str]] = None) -> List[str]:
    """Validate a user's --families list (or all registered traditional ones)."""
    if names is None:
        return [f.name for f in all_families() if f.group != "cnn"]
    out = []
    for n in names:
        get_family(n)
        if n not in out:
            out.append(n)
    return out
