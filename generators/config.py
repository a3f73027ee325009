"""The configuration space of the random-architecture generators, and sampling from it.

The LPIPS paper drew each of its 96 networks' settings at random from a space it names
but does not quantify. The ranges chosen here (``DEFAULT_RANGES``, recorded in every
bank.json so that a bank never changes meaning when the defaults do):

| group | field | range | drawn |
|---|---|---|---|
| corruption | ``kind`` | null, pink_noise, white_noise, color_removal, downsample | uniform |
| corruption | ``sigma_min``, ``sigma_max`` | 0.02, 0.20 (noise kinds only) | fixed |
| corruption | ``factor`` | 2 or 4 (downsample only) | uniform |
| generator | ``first_stride`` | 1 or 2 | uniform |
| generator | ``layers`` | 2..5, and layers + (first_stride == 2) <= 5 | uniform |
| generator | ``skips`` | 0..layers | uniform |
| generator | ``force_skip_top`` | true / false | p = 0.5 |
| generator | ``dropout_layers`` | 0..min(2, layers) | uniform |
| generator | ``upsampling`` | transposed, nearest_conv, bilinear_conv, pixel_shuffle | uniform |
| generator | ``norm`` | batch, instance, group, none | uniform |
| generator | ``first_channels`` | 16, 32, 48, 64 | uniform |
| generator | ``max_channels`` | 64, 128, 256, 512 | uniform |
| discriminator | ``layers`` | 0..3 (0: no adversarial loss) | uniform |
| loss | ``l1_weight`` | 1..100 | log-uniform |
| loss | ``vgg_weight`` | 0 (p = 0.5) or 0.1..10 | log-uniform |
| loss | ``adversarial_weight`` | 0 when discriminator layers = 0, else 0.01..1 | log-uniform |
| loss | ``learning_rate`` | 1e-4..2e-3 | log-uniform |

Why the depth limit: a 64x64 training patch halves once per layer (and once more with a
first stride of 2); five halvings leave a 2x2 bottleneck, the smallest on which instance
normalization still has statistics. Larger images are fine; smaller ones are padded
(see :mod:`generators.networks`).

Determinism: network ``i`` of a bank with seed ``S`` is drawn from
``SeedSequence([S, i, 0])`` alone, and its training seed is drawn from
``SeedSequence([S, i, 1])``: the first 10 networks of a 96-network bank are the 10
networks of a 10-network bank with the same seed.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
from typing import List, Mapping, Optional

import numpy as np

from bapps_build.errors import UserError
from distortions import generator

CONFIG_FORMAT = "bapps-build-generator-config/1"

CORRUPTIONS = ("null", "pink_noise", "white_noise", "color_removal", "downsample")
UPSAMPLING = ("transposed", "nearest_conv", "bilinear_conv", "pixel_shuffle")
NORMS = ("batch", "instance", "group", "none")

DEFAULT_RANGES = {
    "corruption": {"kind": list(CORRUPTIONS), "noise_sigma": [0.02, 0.20], "downsample_factor": [2, 4]},
    "generator": {
        "layers": [2, 5],  # inclusive
        "max_halvings": 5,  # layers + (first_stride == 2) <= 5
        "skips": "0..layers",
        "force_skip_top": [False, True],
        "dropout_layers": [0, 2],  # inclusive, and at most layers
        "upsampling": list(UPSAMPLING),
        "norm": list(NORMS),
        "first_stride": [1, 2],
        "first_channels": [16, 32, 48, 64],
        "max_channels": [64, 128, 256, 512],
    },
    "discriminator": {"layers": [0, 3]},
    "loss": {
        "l1_weight": [1.0, 100.0],  # log-uniform
        "vgg_weight_zero_probability": 0.5,
        "vgg_weight": [0.1, 10.0],  # log-uniform when non-zero
        "adversarial_weight": [0.01, 1.0],  # log-uniform when the discriminator exists
        "learning_rate": [1e-4, 2e-3],  # log-uniform
    },
}


class ConfigError(UserError, ValueError):
    """A generator config that the networks cannot honour; the message names the field."""


def network_name(index: int) -> str:
    return f"net-{index:03d}"


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _choice(rng: np.random.Generator, values):
    return values[int(rng.integers(len(values)))]


def sample_config(bank_seed: int, index: int, ranges: Optional[Mapping] = None) -> dict:
    """The config of network ``index`` of the bank with seed ``bank_seed`` (JSON-able)."""
    r = copy.deepcopy(dict(ranges or DEFAULT_RANGES))
    rng = generator(np.random.SeedSequence([int(bank_seed), int(index), 0]))
    train_seed = int(np.random.SeedSequence([int(bank_seed), int(index), 1]).generate_state(1)[0] & 0x7FFFFFFF)

    c = r["corruption"]
    kind = _choice(rng, c["kind"])
    corruption = {"kind": kind}
    if kind in ("pink_noise", "white_noise"):
        corruption.update(sigma_min=float(c["noise_sigma"][0]), sigma_max=float(c["noise_sigma"][1]))
    elif kind == "downsample":
        corruption["factor"] = int(_choice(rng, c["downsample_factor"]))

    g = r["generator"]
    first_stride = int(_choice(rng, g["first_stride"]))
    max_layers = min(g["layers"][1], g["max_halvings"] - (first_stride == 2))
    layers = int(rng.integers(g["layers"][0], max_layers + 1))
    gen = {
        "layers": layers,
        "skips": int(rng.integers(0, layers + 1)),
        "force_skip_top": bool(_choice(rng, g["force_skip_top"])),
        "dropout_layers": int(rng.integers(g["dropout_layers"][0], min(g["dropout_layers"][1], layers) + 1)),
        "upsampling": _choice(rng, g["upsampling"]),
        "norm": _choice(rng, g["norm"]),
        "first_stride": first_stride,
        "first_channels": int(_choice(rng, g["first_channels"])),
        "max_channels": int(_choice(rng, g["max_channels"])),
    }
    gen["max_channels"] = max(gen["max_channels"], gen["first_channels"])

    d_layers = int(rng.integers(r["discriminator"]["layers"][0], r["discriminator"]["layers"][1] + 1))
    lo = r["loss"]
    vgg = 0.0 if rng.random() < lo["vgg_weight_zero_probability"] else _log_uniform(rng, *lo["vgg_weight"])
    adv = _log_uniform(rng, *lo["adversarial_weight"]) if d_layers > 0 else 0.0
    loss = {"l1_weight": _log_uniform(rng, *lo["l1_weight"]), "vgg_weight": vgg, "adversarial_weight": adv,
            "learning_rate": _log_uniform(rng, *lo["learning_rate"])}
    config = {"format": CONFIG_FORMAT, "name": network_name(index), "index": int(index), "seed": train_seed,
              "corruption": corruption, "generator": gen, "discriminator": {"layers": d_layers}, "loss": loss}
    validate_config(config)
    return config


def sample_bank_configs(bank_seed: int, count: int, ranges: Optional[Mapping] = None) -> List[dict]:
    return [sample_config(bank_seed, i, ranges) for i in range(count)]


def validate_config(config: Mapping) -> None:
    """Raise ConfigError naming the first field the networks cannot honour."""
    name = config.get("name", "?")

    def need(cond, msg):
        if not cond:
            raise ConfigError(f"generator config {name}: {msg}")

    for key in ("corruption", "generator", "discriminator", "loss"):
        need(isinstance(config.get(key), Mapping), f"missing section {key!r}")
    c = config["corruption"]
    need(c.get("kind") in CORRUPTIONS, f"corruption.kind must be one of {', '.join(CORRUPTIONS)}, got {c.get('kind')!r}")
    if c["kind"] in ("pink_noise", "white_noise"):
        need(0 <= c.get("sigma_min", -1) <= c.get("sigma_max", -1) <= 1, "corruption needs 0 <= sigma_min <= sigma_max <= 1")
    if c["kind"] == "downsample":
        need(c.get("factor") in (2, 3, 4, 8), f"corruption.factor must be 2, 3, 4 or 8, got {c.get('factor')!r}")
    g = config["generator"]
    need(isinstance(g.get("layers"), int) and 1 <= g["layers"] <= 8, f"generator.layers must be 1..8, got {g.get('layers')!r}")
    need(isinstance(g.get("skips"), int) and 0 <= g["skips"] <= g["layers"],
         f"generator.skips must be 0..layers ({g['layers']}), got {g.get('skips')!r}")
    need(isinstance(g.get("force_skip_top"), bool), "generator.force_skip_top must be true or false")
    need(isinstance(g.get("dropout_layers"), int) and 0 <= g["dropout_layers"] <= g["layers"],
         f"generator.dropout_layers must be 0..layers, got {g.get('dropout_layers')!r}")
    need(g.get("upsampling") in UPSAMPLING, f"generator.upsampling must be one of {', '.join(UPSAMPLING)}")
    need(g.get("norm") in NORMS, f"generator.norm must be one of {', '.join(NORMS)}")
    need(g.get("first_stride") in (1, 2), "generator.first_stride must be 1 or 2")
    need(isinstance(g.get("first_channels"), int) and 4 <= g["first_channels"] <= 1024,
         "generator.first_channels must be an integer in 4..1024")
    need(isinstance(g.get("max_channels"), int) and g["max_channels"] >= g["first_channels"],
         "generator.max_channels must be at least first_channels")
    d = config["discriminator"]
    need(isinstance(d.get("layers"), int) and 0 <= d["layers"] <= 6, "discriminator.layers must be 0..6")
    lo = config["loss"]
    for key in ("l1_weight", "vgg_weight", "adversarial_weight"):
        need(isinstance(lo.get(key), (int, float)) and lo[key] >= 0 and math.isfinite(lo[key]),
             f"loss.{key} must be a finite number >= 0")
    need(isinstance(lo.get("learning_rate"), (int, float)) and 0 < lo["learning_rate"] < 1,
         "loss.learning_rate must be in (0, 1)")
    need(lo["l1_weight"] + lo["vgg_weight"] > 0, "loss: l1_weight and vgg_weight cannot both be 0")


def channels_at(config: Mapping, level: int) -> int:
    """Channels of the encoder at a level: first_channels doubling per level, capped."""
    g = config["generator"]
    return int(min(g["first_channels"] * 2 ** level, g["max_channels"]))


def skip_levels(config: Mapping) -> List[int]:
    """Encoder levels whose output is concatenated into the decoder, top (0) first.

    Level 0 is the first layer's output (the highest resolution), level layers-1 the one
    just above the bottleneck. ``skips`` links the deepest levels first (the U-Net rung
    nearest the bottleneck carries the least detail); ``force_skip_top`` adds level 0,
    the rung that carries the fine detail, whatever ``skips`` says.
    """
    g = config["generator"]
    levels = set(range(g["layers"] - g["skips"], g["layers"]))
    if g["force_skip_top"]:
        levels.add(0)
    return sorted(levels)


def dropout_stages(config: Mapping) -> List[int]:
    """Decoder stages (numbered by the level they produce) that use dropout: the deepest
    ones, as pix2pix puts its dropout next to the bottleneck."""
    g = config["generator"]
    return list(range(g["layers"] - 1, g["layers"] - 1 - g["dropout_layers"], -1))


def halvings(config: Mapping) -> int:
    """How many times the generator halves the resolution (the padding multiple is 2**this)."""
    g = config["generator"]
    return g["layers"] + (g["first_stride"] == 2)


def config_sha256(config: Mapping) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def summarize_config(config: Mapping) -> str:
    """A short label: ``net-003 pink L4 s2+top up:bil norm:inst c32/256 d2``."""
    g, c = config["generator"], config["corruption"]
    kind = {"null": "ae", "pink_noise": "pink", "white_noise": "white", "color_removal": "gray",
            "downsample": f"sr{c.get('factor', '')}"}[c["kind"]]
    up = {"transposed": "tconv", "nearest_conv": "near", "bilinear_conv": "bilin", "pixel_shuffle": "pshuf"}
    skips = f"s{len(skip_levels(config))}" + ("T" if g["force_skip_top"] else "")
    return (f"{config['name']} {kind} L{g['layers']} {skips} {up[g['upsampling']]} {g['norm'][:4]} "
            f"c{g['first_channels']}/{g['max_channels']}" + (" st2" if g["first_stride"] == 2 else "")
            + (f" do{g['dropout_layers']}" if g["dropout_layers"] else "")
            + (f" D{config['discriminator']['layers']}" if config["discriminator"]["layers"] else "")
            + (" vgg" if config["loss"]["vgg_weight"] > 0 else ""))
