"""A bank: a folder of generator configs, their training status and their checkpoints.

```
BANK/
  bank.json              seed, count, the ranges drawn from, the network names
  net-000.json           the config of network 0 (generators.config)
  net-000.status.json    pending | training | done | failed | rejected, steps done, reason, checksum,
                         the quality gate's scores and the severity calibration (generators/gate.py)
  net-000.pt             the trained generator (when done): {"state_dict", "config_sha256", "format"}
  net-000.resume.pt      periodic training state (while training; removed when done)
```

Checkpoints hold tensors, strings and numbers only and are read with
``torch.load(..., weights_only=True)``: a bank from someone else cannot run code here.
No torch import at module level: sampling and listing a bank work without it.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional

from bapps_build.errors import UserError
from bapps_build.files import atomic_path, write_json_atomic

from .config import DEFAULT_RANGES, config_sha256, network_name, sample_bank_configs, validate_config

BANK_FILE = "bank.json"
BANK_FORMAT = "bapps-build-generator-bank/1"
CHECKPOINT_FORMAT = "bapps-build-generator-checkpoint/1"
STATES = ("pending", "training", "done", "failed", "rejected")  # rejected: by the quality gate (gate.py)


class BankError(UserError, RuntimeError):
    """A bank that cannot be used as it is; the message says what to do."""


class CheckpointError(UserError, RuntimeError):
    pass


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sample_bank(out, count: int, seed: int, ranges: Optional[Mapping] = None) -> "Bank":
    """Write bank.json and one config per network. Same (count, seed): the same files.

    An existing bank with the same seed and count is left as it is (its training too);
    anything else in OUT is refused.
    """
    if count < 1:
        raise BankError(f"--n must be at least 1, got {count}")
    out = Path(out)
    ranges = dict(ranges or DEFAULT_RANGES)
    configs = sample_bank_configs(seed, count, ranges)
    meta = {"format": BANK_FORMAT, "seed": int(seed), "count": int(count), "ranges": ranges,
            "networks": [c["name"] for c in configs]}
    if (out / BANK_FILE).exists():
        old = json.loads((out / BANK_FILE).read_text())
        if old.get("seed") == meta["seed"] and old.get("count") == meta["count"] and old.get("ranges") == ranges:
            return Bank(out)
        raise BankError(f"{out} already holds a bank (seed {old.get('seed')}, {old.get('count')} networks); "
                        "choose another --out")
    if out.exists() and any(out.iterdir()):
        raise BankError(f"{out} is not empty and holds no {BANK_FILE}; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    for c in configs:
        write_json_atomic(out / f"{c['name']}.json", c)
    write_json_atomic(out / BANK_FILE, meta)
    return Bank(out)


class Bank:
    """Read access to a bank folder, and the status files training writes."""

    def __init__(self, path):
        self.path = Path(path).expanduser().resolve()
        meta_file = self.path / BANK_FILE
        if not meta_file.exists():
            raise BankError(f"{self.path} is not a generator bank (no {BANK_FILE}); make one with "
                            "`bapps-build generators sample --n 96 --seed 0 --out BANK`")
        self.meta = json.loads(meta_file.read_text())
        if self.meta.get("format") != BANK_FORMAT:
            raise BankError(f"{meta_file}: unknown format {self.meta.get('format')!r} (expected {BANK_FORMAT})")
        self.names: List[str] = list(self.meta["networks"])
        self._configs: Dict[str, dict] = {}

    # ---- configs
    def config(self, name: str) -> dict:
        if name not in self._configs:
            path = self.path / f"{name}.json"
            if name not in self.names or not path.exists():
                raise BankError(f"{self.path} has no network {name!r} (it has {', '.join(self.names[:5])}"
                                + (" ..." if len(self.names) > 5 else "") + ")")
            config = json.loads(path.read_text())
            validate_config(config)
            self._configs[name] = config
        return self._configs[name]

    def configs(self) -> List[dict]:
        return [self.config(n) for n in self.names]

    # ---- files
    def checkpoint_path(self, name: str) -> Path:
        return self.path / f"{name}.pt"

    def resume_path(self, name: str) -> Path:
        return self.path / f"{name}.resume.pt"

    def status_path(self, name: str) -> Path:
        return self.path / f"{name}.status.json"

    # ---- status
    def status(self, name: str) -> dict:
        p = self.status_path(name)
        if p.exists():
            return json.loads(p.read_text())
        return {"name": name, "state": "pending", "steps_done": 0}

    def write_status(self, name: str, status: Mapping) -> None:
        if status.get("state") not in STATES:
            raise BankError(f"unknown state {status.get('state')!r}")
        write_json_atomic(self.status_path(name), dict(status))

    def statuses(self) -> List[dict]:
        return [self.status(n) for n in self.names]

    def done_networks(self) -> List[str]:
        """Networks whose training finished and whose checkpoint is there (failed ones are left out)."""
        return [n for n in self.names if self.status(n).get("state") == "done" and self.checkpoint_path(n).exists()]


def bank_table(bank_path) -> List[dict]:
    """One row per network: its state, steps, the reason of a failure, a config summary."""
    from .config import summarize_config

    bank = Bank(bank_path)
    rows = []
    for n in bank.names:
        st = bank.status(n)
        rows.append({"name": n, "state": st.get("state", "pending"), "steps_done": st.get("steps_done", 0),
                     "steps_total": st.get("steps_total"), "reason": st.get("reason"),
                     "vgg_term": st.get("vgg_term"), "checkpoint_sha256": st.get("checkpoint_sha256"),
                     "gate": st.get("gate"), "calibrated": bool(st.get("calibration")),
                     "summary": summarize_config(bank.config(n))})
    return rows


# ------------------------------------------------------------------ checkpoints (need torch)


def save_generator_checkpoint(path, generator, config: Mapping) -> str:
    """Save a plain state dict (+ the config's checksum); returns the file's SHA-256."""
    import torch

    state = {k: v.detach().to("cpu").contiguous() for k, v in generator.state_dict().items()}
    with atomic_path(path, pid_in_name=False) as tmp:  # a fixed name: the zip's inner folder is named after it
        torch.save({"format": CHECKPOINT_FORMAT, "state_dict": state, "config_sha256": config_sha256(config)}, tmp)
    return sha256_file(path)


def load_checkpoint_file(path, label=None) -> dict:
    """torch.load with weights_only=True; a file that holds any pickled object is refused.

    path: a file name or a binary file object (label then names it in messages).
    """
    import pickle

    import torch

    source = path if hasattr(path, "read") else os.fspath(path)
    path = label or path
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = next((line.strip() for line in str(exc).splitlines() if "Unsupported" in line),
                      str(exc).splitlines()[0] if str(exc) else "")
        raise CheckpointError(
            f"refusing to load {path}: it holds pickled Python objects, not only tensors and plain "
            "containers, and loading it could run code (torch.load weights_only=True said: "
            f"{detail[:200]}). A bank's checkpoints are plain state dicts; retrain the "
            "network (delete the file and its .status.json, then `bapps-build generators train`) or get the "
            "bank from its author again.") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:  # ValueError: "negative seek value" (truncated)
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {str(exc)[:300]}; the file is "
                              "damaged or truncated: train it again or copy it again") from None


def load_generator(path, config: Mapping, device: str = "cpu", label=None):
    """The trained generator of a config from its checkpoint (a path or a file object), in eval mode."""
    from .networks import Generator

    data = load_checkpoint_file(path, label)
    path = label or path
    if not isinstance(data, dict) or not isinstance(data.get("state_dict"), dict):
        raise CheckpointError(f"{path} is not a generator checkpoint (no state_dict)")
    if data.get("config_sha256") not in (None, config_sha256(config)):
        raise CheckpointError(f"{path} was trained for another config than {config.get('name')}.json "
                              "(the config file was edited after training); retrain it")
    model = Generator(config)
    try:
        model.load_state_dict(data["state_dict"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit the network of {config.get('name')}.json: "
                              f"{str(exc).splitlines()[0][:300]}") from None
    return model.to(device).eval()


def bank_digest(entries) -> str:
    """SHA-256 over (name, checkpoint sha256) pairs, in name order."""
    h = hashlib.sha256()
    for name, sha in sorted(entries):
        h.update(f"{name}:{sha}\n".encode())
    return h.hexdigest()


__all__ = ["Bank", "bank_table", "BankError", "CheckpointError", "sample_bank", "save_generator_checkpoint",
           "load_checkpoint_file", "load_generator", "bank_digest", "sha256_file", "network_name",
           "write_json_atomic"]
