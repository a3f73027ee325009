"""A trained bank as the distortion family ``cnn``, and the hooks of the cnn and mix subsets.

The family (registered by :func:`register_bank`):

- ``sample(rng, severity)``: picks one of the bank's trained networks uniformly and draws
  its input corruption; severity drives the corruption's strength where it has one
  (the noise sigma, sigma_min..sigma_max of the network's config) and is only recorded
  otherwise (null, color removal, downsampling: the factor is the network's). A larger
  severity is therefore not promised to give a larger distortion: the network decides.
- params: ``{"network": "net-017", "checkpoint_sha256": "...", "corruption": {"kind":
  "pink_noise", "sigma": 0.11, "seed": 123}}``; the checksum ties a recipe to one
  trained checkpoint, so a retrained network is never silently swapped in.
- ``apply(image, params)``: the corruption, then the network, clipped to [0, 1] float32.

Subsets (``bapps-build distort --subset cnn|mix --bank BANK``):

- ``cnn``: every distorted patch is one cnn step (severity drawn in --severity-range;
  --max-chain does not apply).
- ``mix``: p0 and p1 are each, independently, a single cnn step with probability
  ``CNN_SHARE`` = 0.5, else a traditional chain drawn as the traditional subset draws it
  (--families, --max-chain, --severity-range).

The batch renderer makes the same bytes as ``bapps_build.recipes.render`` (which calls the
family one image at a time) while running each network once per chunk on all its patches;
see :mod:`generators.inference` for why batching does not change a single bit on the CPU.
"""
from __future__ import annotations

import functools
import hashlib
import io
import multiprocessing
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

import distortions
from bapps_build.errors import ConfigError
from bapps_build.recipes import apply_in_context, center, images_by_folder
from distortions import Family, finish, sample_chain, sample_step

from ._torch import require_torch, resolve_device
from .bank import Bank, BankError, CheckpointError, bank_digest
from .corruptions import apply_corruption, sample_corruption

CNN_SHARE = 0.5  # mix: the chance that a distorted patch is a cnn step rather than a traditional chain


class LoadedBank:
    """The trained networks of a bank, loaded on first use, on one device."""

    def __init__(self, path, device: str = "cpu"):
        require_torch()
        self.bank = Bank(path)
        self.path = self.bank.path
        self.device = resolve_device(device)
        self.sha: Dict[str, str] = {}
        self.calibration: Dict[str, dict] = {}  # the gate's blend calibration (gate.py), when gated
        for name in self.bank.done_networks():  # rejected networks are not "done": never used
            status = self.bank.status(name)
            sha = status.get("checkpoint_sha256")
            if sha:
                self.sha[name] = sha
                if status.get("calibration"):
                    self.calibration[name] = status["calibration"]
        self.names: List[str] = sorted(self.sha)
        if not self.names:
            states = [s.get("state", "pending") for s in self.bank.statuses()]
            counts = ", ".join(f"{states.count(k)} {k}" for k in ("pending", "training", "failed", "rejected")
                               if states.count(k))
            hint = (" (rejected ones were refused by the quality gate: see their reason with `bapps-build generators "
                    f"list {self.path}`; retrain them with other configs or more steps)" if "rejected" in states else "")
            raise BankError(f"{self.path} has no trained network it can use ({counts}){hint}; train it with "
                            f"`bapps-build generators train {self.path}`")
        self.digest = bank_digest(self.sha.items())
        self._models = {}

    def config(self, name: str) -> dict:
        return self.bank.config(name)

    def check(self, params) -> str:
        """The network a step names, after checking it is this bank's trained checkpoint."""
        name = params.get("network")
        if name not in self.sha:
            raise BankError(f"the cnn step names network {name!r}, which is not a trained network of {self.path} "
                            f"(trained: {len(self.names)}; `bapps-build generators list {self.path}`)")
        want = params.get("checkpoint_sha256")
        if want != self.sha[name]:
            raise BankError(f"the cnn step was made with another checkpoint of {name} (sha256 {str(want)[:12]}..., "
                            f"the bank at {self.path} has {self.sha[name][:12]}...): the network was retrained or "
                            "the bank is not the one the recipe came from (to pick a network in --chain, give its "
                            "checkpoint_sha256 too: `bapps-build generators list BANK --json`)")
        return name

    def model(self, name: str):
        if name not in self._models:
            from .bank import load_generator
            from .inference import prepare_model

            path = self.bank.checkpoint_path(name)
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != self.sha[name]:
                raise CheckpointError(f"{path} has changed since {name} was trained (its SHA-256 differs from "
                                      f"{self.bank.status_path(name).name}); retrain it or restore the file")
            model = load_generator(io.BytesIO(data), self.config(name), label=path)
            self._models[name] = prepare_model(model, self.device)
        return self._models[name]

    # the family ``cnn`` of this bank: register_bank registers Family("cnn", sample, apply, ...)
    def sample(self, rng: np.random.Generator, severity: float) -> dict:
        return cnn_sample(self, rng, severity)

    def apply(self, image: np.ndarray, params) -> np.ndarray:
        return cnn_apply(self, image, params)

    def run(self, name: str, images: Sequence[np.ndarray]) -> List[np.ndarray]:
        """The network's outputs for already-corrupted images, clipped to [0, 1] float32."""
        from .inference import run_generator

        return [finish(y) for y in run_generator(self.model(name), images, self.device)]


def registered_bank() -> LoadedBank:
    """The bank that this process's family ``cnn`` is bound to (by :func:`register_bank`)."""
    try:
        family = distortions.get_family("cnn")
    except distortions.UnknownFamilyError:
        family = None
    bank = getattr(getattr(family, "apply", None), "__self__", None)  # the family's apply is bank.apply
    if not isinstance(bank, LoadedBank):
        raise BankError("the cnn family has no generator bank: pass --bank BANK "
                        "(a bank trained with `bapps-build generators train`)")
    return bank


# ------------------------------------------------------------------ the family


def cnn_sample(bank: LoadedBank, rng: np.random.Generator, severity: float) -> dict:
    name = bank.names[int(rng.integers(len(bank.names)))]
    knots = bank.calibration.get(name)
    if knots is None:  # an ungated network: severity drives the corruption (the old path)
        return {"network": name, "checkpoint_sha256": bank.sha[name],
                "corruption": sample_corruption(bank.config(name)["corruption"], rng, severity)}
    # a gated network: the corruption at the gate's severity, severity -> blend t (gate.py)
    from .gate import GATE_SEVERITY

    return {"network": name, "checkpoint_sha256": bank.sha[name],
            "corruption": sample_corruption(bank.config(name)["corruption"], rng, GATE_SEVERITY),
            "blend": float(np.interp(severity, knots["severity"], knots["blend"]))}


def _finish_step(ref: np.ndarray, out: np.ndarray, params) -> np.ndarray:
    """The network's output, blended with ref when the step records a blend (calibrated)."""
    if "blend" not in params:
        return out  # old manifests and ungated banks: exactly as before
    from .gate import blend

    return blend(ref, out, float(params["blend"]))


def cnn_apply(bank: LoadedBank, image: np.ndarray, params) -> np.ndarray:
    name = bank.check(params)
    return _finish_step(image, bank.run(name, [apply_corruption(image, params["corruption"])])[0], params)


CNN_PARAMS = {
    "network": "name of a trained network of the bank (net-000 ...)",
    "checkpoint_sha256": "SHA-256 of that network's checkpoint file (a retrained network is refused)",
    "corruption": "the input corruption: {kind: null | pink_noise | white_noise | color_removal | downsample, "
                  "sigma and seed for the noise kinds, factor for downsample}",
    "blend": "(gated networks) t in [0, 1]: output = ref + t (net(corrupted ref) - ref); absent in older recipes",
}
CNN_SEVERITY = ("gated networks (generators gate): the blend t of the output with the reference, fitted per network "
                "so the median visibility follows the common calibration curve; ungated: the corruption's strength "
                "where it has one (noise sigma over sigma_min..sigma_max); the network is drawn uniformly")


def register_bank(bank_path, device: str = "cpu") -> LoadedBank:
    """Load a trained bank (its done networks) and register it as the family ``cnn``, bound to it.

    The family of this process keeps its bank: registering the same bank again (same path, device
    and trained networks) keeps the networks already loaded."""
    path = Path(bank_path).expanduser().resolve()
    device = resolve_device(device)
    loaded = LoadedBank(path, device)
    try:
        current = registered_bank()
    except BankError:
        current = None
    if current is not None and (current.path, current.device, current.digest) == (path, device, loaded.digest):
        loaded = current
    distortions.register(Family("cnn", "cnn", loaded.sample, loaded.apply, CNN_PARAMS, CNN_SEVERITY,
                                source=f"generator bank {path}"), replace=True)
    return loaded


# ------------------------------------------------------------------ the build's hooks


def cnn_chain_sampler(rng, families, cfg) -> list:
    lo, hi = cfg.severity_range or (0.0, 1.0)
    return [sample_step("cnn", rng, float(rng.uniform(lo, hi)))]


def mix_chain_sampler(rng, families, cfg) -> list:
    traditional = [f for f in families if f != "cnn"]
    if not traditional or rng.random() < CNN_SHARE:
        return cnn_chain_sampler(rng, families, cfg)
    return sample_chain(rng, traditional, max_chain=cfg.longest_chain, min_chain=cfg.min_chain,
                        severity_range=cfg.severity_range or (0.0, 1.0))


def render_batch(ctx, recipes: Sequence[dict], refs: Sequence[np.ndarray]) -> List[dict]:
    """What ``render(recipe, ref)`` gives for each recipe, with each network run once on all
    its patches. Chains that are not a single cnn step go through apply_chain as usual."""
    bank = registered_bank()
    distorted: List[dict] = [{} for _ in recipes]
    jobs = defaultdict(list)  # network -> [(example, folder, corrupted input)]
    patches = []
    for i, (recipe, context_u8) in enumerate(zip(recipes, refs)):
        margin = int(recipe.get("crop", {}).get("margin", 0))
        context = context_u8.astype(np.float32) / np.float32(255.0)
        patches.append(np.ascontiguousarray(center(context_u8, margin)))
        for key in ("p0", "p1"):
            chain = recipe.get(key)
            if not chain:
                continue
            if len(chain) == 1 and chain[0]["family"] == "cnn":
                # the networks see the patch itself, as they were trained
                params = chain[0]["params"]
                ref = np.ascontiguousarray(center(context, margin))
                jobs[bank.check(params)].append((i, key, ref, params, apply_corruption(ref, params["corruption"])))
            else:
                distorted[i][key] = apply_in_context(context, chain, margin)
    for name in sorted(jobs):
        items = jobs[name]
        for (i, key, ref, params, _), out in zip(items, bank.run(name, [x for *_, x in items])):
            distorted[i][key] = _finish_step(ref, out, params)
    return [images_by_folder(recipe, patches[i], distorted[i]) for i, recipe in enumerate(recipes)]


def setup_worker(bank_path: str, device: str, digest: str, ctx=None) -> None:
    """Per build process: register the bank (spawned workers start empty) and check it is
    the one the build started with. A spawned worker uses one thread: the pool already
    has a process per core."""
    if multiprocessing.current_process().name != "MainProcess":
        import torch

        torch.set_num_threads(1)
    loaded = register_bank(bank_path, device)
    if loaded.digest != digest:
        raise BankError(f"the generator bank {bank_path} changed while the build ran (its trained networks differ); "
                        "rerun with --resume once it is stable")


def distort_hooks(bank_path, subset: str, families: Optional[Sequence[str]] = None, device: str = "cpu"):
    """(hooks for run_build, extra build.json settings, the families list) of a cnn or mix build."""
    loaded = register_bank(bank_path, device)
    if subset == "cnn":
        if families and any(f != "cnn" for f in families):
            raise ConfigError("--families chooses the traditional families of --subset mix; --subset cnn uses "
                             "only the generator bank")
        fams, sampler = ["cnn"], cnn_chain_sampler
    elif subset == "mix":
        traditional = [f for f in (distortions.family_names(families) if families else distortions.family_names())
                       if f != "cnn"]
        fams, sampler = traditional + ["cnn"], mix_chain_sampler
    else:
        raise ValueError(f"generator hooks are for --subset cnn or mix, not {subset!r}")
    hooks = {"chain_sampler": sampler, "batch_renderer": render_batch,
             "worker_setup": functools.partial(setup_worker, str(loaded.path), loaded.device, loaded.digest)}
    settings = {"bank": str(loaded.path), "digest": loaded.digest, "networks": len(loaded.names),
                "device": loaded.device.split(":")[0]}
    if subset == "mix":
        settings["cnn_share"] = CNN_SHARE
    return hooks, {"generators": settings}, fams


def prepare_replay(settings: dict) -> Optional[LoadedBank]:
    """Before replaying a cnn or mix example: register the bank recorded in build.json (the replay
    preparer generators/__init__.py registers with the core; other subsets need nothing)."""
    info = settings.get("generators")
    if not info:
        return None
    path = Path(info["bank"])
    try:
        Bank(path)
    except BankError:
        raise BankError(f"this subset was built with the generator bank {path}, which is not there any more "
                        "(moved or deleted?); put it back at that path to replay its cnn examples") from None
    loaded = register_bank(path, "cpu")
    if loaded.digest != info.get("digest"):
        raise BankError(f"the generator bank {path} has changed since this subset was built (its trained networks "
                        "or their checkpoints differ from the build's), so its cnn examples cannot be replayed; "
                        "restore the bank as it was")
    if info.get("device", "cpu") != "cpu":
        print(f"note: this subset ran its networks on {info['device']}; a CPU replay matches it only "
              "approximately", file=sys.stderr)
    return loaded
