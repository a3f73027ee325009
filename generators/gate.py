"""The quality gate of a trained bank, and the cnn family's severity calibration.

After training, each done network is scored on held-out patches: GATE_PATCHES patches of
the built-in natural photos cut by ``bapps_build.calibration.calibration_patches`` with
GATE_SEED (not the calibration set's seed, and never the network's training batches),
corrupted as the network expects (noise at severity GATE_SEVERITY, i.e. the middle of its
sigma range), run through the network, compared with the reference visibility measure.

The rule (all on the raw network output):

- **destroys content**: the share of patches with SSIM < DESTROYED_SSIM (0.3) or
  visibility > DESTROYED_FACTOR x target_visibility(1) (2 x 6 = 12) exceeds
  MAX_DESTROYED_SHARE (0.25) -> rejected;
- **too strong**: median visibility > 2 x target_visibility(1) (12) -> rejected;
- **invisible**: median visibility < THRESHOLD (1.5) -> rejected (no severity could reach
  the common curve above the threshold);
- otherwise accepted.

A rejected network gets ``state: "rejected"`` with the reason and its scores in its status
file; `generators list` shows it; ``Bank.done_networks`` leaves it out, so the cnn family,
the cnn and mix subsets never draw it (a bank with no accepted network is an error).

**Severity calibration.** An accepted network also gets ``calibration``: its output is
blended with the reference, ``out = ref + t (net(corrupt(ref)) - ref)``, with the
corruption drawn at GATE_SEVERITY whatever the severity, and t in [0, 1] fitted per network
by ``bapps_build.calibration.fit_strength_map`` on the median visibility of the blends at
t = 0, 0.05, ..., 1 over the held-out patches, so that its median visibility follows
``target_visibility(s)`` as closely as the network allows (t = 1 where even the raw output
is weaker than the target). The sampler records ``blend`` (t) and ``calibrated: true`` in
the step's params; a step without them (older manifests, ungated banks) replays with the
old code path (corruption strength from severity, no blend).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

import numpy as np

GATE_SEED = 4242
GATE_PATCHES = 48
GATE_SEVERITY = 0.5
DESTROYED_SSIM = 0.3
DESTROYED_FACTOR = 2.0
MAX_DESTROYED_SHARE = 0.25
TOO_STRONG_FACTOR = 2.0
BLEND_GRID = tuple(float(t) for t in np.linspace(0.0, 1.0, 21))


def gate_patches(n: int = GATE_PATCHES, seed: int = GATE_SEED) -> List[np.ndarray]:
    """Held-out float32 (64, 64, 3) patches (fixed: the same on every machine)."""
    from bapps_build.calibration import calibration_patches

    return [p.astype(np.float32) / np.float32(255.0) for p in calibration_patches(n, seed=seed, margin=0)]


def blend(ref: np.ndarray, out: np.ndarray, t: float) -> np.ndarray:
    """ref + t (out - ref), float32, clipped to [0, 1] (what the calibrated family applies)."""
    from distortions import finish

    ref = np.asarray(ref, dtype=np.float32)
    return finish(ref + np.float32(t) * (np.asarray(out, dtype=np.float32) - ref))


def score_outputs(refs, outs) -> Dict[str, object]:
    """The gate's scores and decision for a network's outputs on the held-out patches,
    and its fitted blend calibration."""
    from bapps_build.calibration import fit_strength_map, target_visibility
    from bapps_build.visibility import THRESHOLD, visibility_parts

    strong = target_visibility(1.0)
    curve = np.zeros((len(BLEND_GRID), len(refs)))
    ssims = np.zeros(len(refs))
    for j, (r, y) in enumerate(zip(refs, outs)):
        for i, t in enumerate(BLEND_GRID):
            if t == 0.0:
                continue
            parts = visibility_parts(r, blend(r, y, t))
            curve[i, j] = parts["visibility"]
            if i == len(BLEND_GRID) - 1:
                ssims[j] = parts["ssim"]
    raw = curve[-1]
    median = float(np.median(raw))
    destroyed = float(np.mean((ssims < DESTROYED_SSIM) | (raw > DESTROYED_FACTOR * strong)))
    reasons = []
    if destroyed > MAX_DESTROYED_SHARE:
        reasons.append(f"destroys content on {100 * destroyed:.0f}% of the held-out patches (SSIM < "
                       f"{DESTROYED_SSIM} or visibility > {DESTROYED_FACTOR * strong:g}; at most "
                       f"{100 * MAX_DESTROYED_SHARE:.0f}% allowed)")
    if median > TOO_STRONG_FACTOR * strong:
        reasons.append(f"median visibility {median:.2f} is above {TOO_STRONG_FACTOR:g} x the traditional families' "
                       f"maximum ({TOO_STRONG_FACTOR * strong:g})")
    if median < THRESHOLD:
        reasons.append(f"median visibility {median:.2f} is below the visibility threshold {THRESHOLD}: "
                       "its output is indistinguishable from its input")
    fitted = fit_strength_map(BLEND_GRID, np.median(curve, axis=1))
    return {"median_visibility": round(median, 4), "median_ssim": round(float(np.median(ssims)), 4),
            "destroyed_share": round(destroyed, 4), "patches": len(refs), "seed": GATE_SEED,
            "corruption_severity": GATE_SEVERITY, "accepted": not reasons, "reasons": reasons,
            "calibration": {"severity": fitted["severity"], "blend": fitted["strength"],
                            "out_of_range": fitted["out_of_range"]}}


def gate_network(bank, name: str, device: str = "cpu", patches=None) -> dict:
    """Score one done network; write the decision into its status file; return the status."""
    from .bank import BankError
    from .corruptions import apply_corruption, sample_corruption

    status = bank.status(name)
    if status.get("state") not in ("done", "rejected") or not bank.checkpoint_path(name).exists():
        raise BankError(f"{name} is {status.get('state')}, not trained: nothing to gate")
    refs = patches if patches is not None else gate_patches()
    rng = np.random.default_rng(GATE_SEED)
    config = bank.config(name)
    inputs = [apply_corruption(r, sample_corruption(config["corruption"], rng, GATE_SEVERITY)) for r in refs]
    from distortions import finish

    from ._torch import resolve_device
    from .bank import load_generator
    from .inference import prepare_model, run_generator

    device = resolve_device(device)
    model = prepare_model(load_generator(bank.checkpoint_path(name), config, label=bank.checkpoint_path(name)), device)
    outs = [finish(y) for y in run_generator(model, inputs, device)]
    scores = score_outputs(refs, outs)
    new = {k: v for k, v in status.items() if k not in ("reason", "gate", "calibration")}
    new["gate"] = {k: scores[k] for k in ("median_visibility", "median_ssim", "destroyed_share", "patches", "seed",
                                          "corruption_severity")}
    if scores["accepted"]:
        new.update(state="done", calibration=scores["calibration"])
    else:
        new.update(state="rejected", reason="rejected by the quality gate: " + "; ".join(scores["reasons"]))
    bank.write_status(name, new)
    return new


def gate_bank(bank_path, device: str = "cpu", log: Callable[[str], None] = print,
              only: Optional[List[str]] = None) -> Dict[str, dict]:
    """Gate every trained (done or rejected) network of a bank; returns their new statuses."""
    from .bank import Bank

    bank = Bank(bank_path)
    refs = gate_patches()
    results = {}
    for name in bank.names:
        if only and name not in only:
            continue
        st = bank.status(name)
        if st.get("state") in ("done", "rejected") and bank.checkpoint_path(name).exists():
            results[name] = gate_network(bank, name, device, refs)
            g = results[name]["gate"]
            log(f"{name}: {results[name]['state']} (median visibility {g['median_visibility']}, "
                f"destroyed {100 * g['destroyed_share']:.0f}%)"
                + (f": {results[name]['reason']}" if results[name]["state"] == "rejected" else ""))
    return results
