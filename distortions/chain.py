"""Chains: families applied in sequence, sampled from a generator or parsed from a spec.

A chain is a list of steps ``{"family": name, "severity": s, "params": {...}}``; it is the
record of one distorted patch and replays bit-exactly through :func:`apply_chain`.
"""
from __future__ import annotations

import json
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ._common import as_float_rgb, draw_seed, generator
from .calibration import severity_to_strength
from .errors import ChainSpecError
from .registry import get_family


def to_jsonable(value):
    """Plain Python scalars and lists, so that a JSON round trip changes nothing."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if not math.isfinite(f):
            raise ValueError(f"a distortion parameter is not finite ({f}); params must be JSON numbers")
        return f
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"distortion params must be JSON-able scalars and lists, got {type(value).__name__}")


def sample_step(name: str, rng: np.random.Generator, severity: Optional[float] = None) -> dict:
    """One step: a severity (drawn in [0, 1] when not given) and the family's params.

    The family samples from its own generator, seeded from ``rng``, so a family that draws
    more or fewer numbers never shifts what the next step draws. The family is sampled at
    the raw strength its calibration map gives for the severity (calibration.py), so equal
    severities are equally visible across families.
    """
    family = get_family(name)
    sev = float(rng.uniform(0.0, 1.0)) if severity is None else float(severity)
    if not 0.0 <= sev <= 1.0:
        raise ChainSpecError(f"severity of {name} must be in [0, 1], got {sev}")
    params = to_jsonable(family.sample(generator(draw_seed(rng)), severity_to_strength(name, sev)))
    return {"family": name, "severity": sev, "params": params}


def sample_chain(rng: np.random.Generator, families: Sequence[str], max_chain: int = 2,
                 min_chain: int = 1, severity_range: Tuple[float, float] = (0.0, 1.0),
                 severity_sampler=None) -> List[dict]:
    """A chain of min_chain..max_chain distinct families, in a random order.

    The default (1 or 2) gives the paper's single distortions and composed pairs. Each
    step's severity is uniform in severity_range, or severity_sampler(rng) when given.
    """
    if not families:
        raise ValueError("no distortion families to sample from")
    hi = min(max_chain, len(families))
    lo = min(max(1, min_chain), hi)
    length = int(rng.integers(lo, hi + 1))
    picks = rng.choice(len(families), size=length, replace=False)
    s_lo, s_hi = severity_range
    draw = severity_sampler or (lambda r: float(r.uniform(s_lo, s_hi)))
    return [sample_step(families[int(k)], rng, float(draw(rng))) for k in picks]


def apply_chain(image: np.ndarray, chain: Sequence[dict]) -> np.ndarray:
    """Apply each step in order to a float32 (H, W, 3) image in [0, 1] (uint8 is accepted)."""
    out = as_float_rgb(image)
    for step in chain:
        name = step["family"]
        result = get_family(name).apply(out, step["params"])
        if not isinstance(result, np.ndarray) or result.shape != out.shape or result.dtype != np.float32:
            got = (getattr(result, "shape", None), getattr(result, "dtype", type(result).__name__))
            raise ValueError(f"family {name!r} broke the contract: expected float32 of shape {out.shape}, "
                             f"got {got}")
        out = result
    return out


def chain_families(chain: Sequence[dict]) -> List[str]:
    return [step["family"] for step in chain]


def describe_chain(chain: Sequence[dict]) -> str:
    """Short text for labels: ``gaussian_blur:0.50+jpeg:0.81``."""
    if not chain:
        return "reference"
    parts = []
    for step in chain:
        sev = step.get("severity")
        parts.append(step["family"] if sev is None else f"{step['family']}:{sev:.2f}")
    return "+".join(parts)


# ---- the --chain spec: name[:severity][:key=value,key=value][+...]


def _split_top_level(text: str, sep: str) -> List[str]:
    """Split on sep outside brackets, so list values such as [1,2] survive."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_chain_spec(spec: str, rng: np.random.Generator) -> List[dict]:
    """Parse ``gaussian_blur:0.5+jpeg:0.8`` or ``jpeg:quality=10`` into a chain.

    A step without severity gets a random one; explicit ``key=value`` params replace what
    was sampled (values are JSON: numbers, lists such as ``[1,2]``), and a step given params
    but no severity records severity None.
    """
    if not spec or not spec.strip():
        raise ChainSpecError("empty chain spec; example: gaussian_blur:0.5+jpeg:0.8")
    chain = []
    for part in _split_top_level(spec.strip(), "+"):
        fields = [f for f in part.split(":", 2)]
        name = fields[0].strip()
        if not name:
            raise ChainSpecError(f"chain spec {spec!r}: an empty family name before or after '+'")
        severity, overrides = None, {}
        for field in fields[1:]:
            field = field.strip()
            if "=" in field:
                for item in _split_top_level(field, ","):
                    key, eq, value = item.partition("=")
                    if not eq or not key.strip():
                        raise ChainSpecError(f"chain spec {spec!r}: {item!r} is not key=value")
                    overrides[key.strip()] = _parse_value(value.strip())
            else:
                try:
                    severity = float(field)
                except ValueError:
                    raise ChainSpecError(f"chain spec {spec!r}: {field!r} is neither a severity in [0, 1] "
                                     "nor key=value params") from None
                if not 0.0 <= severity <= 1.0:
                    raise ChainSpecError(f"chain spec {spec!r}: severity {severity} of {name} is not in [0, 1]")
        step = sample_step(name, rng, severity)
        unknown = sorted(set(overrides) - set(step["params"]))
        if unknown:
            raise ChainSpecError(f"{name} has no parameter {', '.join(unknown)}; its parameters: "
                             f"{', '.join(sorted(step['params']))}")
        step["params"].update(to_jsonable(overrides))
        if overrides and severity is None:
            step["severity"] = None  # the params were given, not drawn from a severity
        chain.append(step)
    return chain
