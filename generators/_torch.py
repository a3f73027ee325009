"""torch is optional: the traditional build never imports it; the cnn family needs it."""
from __future__ import annotations

from bapps_build.errors import ConfigError, MissingExtra

TORCH_MISSING = ("the cnn family and `bapps-build generators` need PyTorch: install the cnn extra: "
                 "pip install 'bapps-build[cnn]' (torch>=2.1)")


class TorchMissing(MissingExtra):
    """PyTorch is not installed (a RuntimeError, as before)."""


def require_torch():
    """Import torch, or stop with a message that says what to install."""
    try:
        import torch
    except ImportError:
        raise TorchMissing(TORCH_MISSING) from None
    return torch


def resolve_device(device: str = "cpu") -> str:
    """auto -> cuda when one is there, else cpu; cuda without one is an error."""
    torch = require_torch()
    device = (device or "cpu").lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: this machine has no CUDA GPU that torch can use "
                           "(use --device cpu or auto)")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {device!r}")
    return device
