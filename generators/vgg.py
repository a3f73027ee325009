"""VGG16 features for the perceptual loss, in plain torch.nn, loading torchvision's checkpoint.

The layers are torchvision's ``vgg16().features`` with the same indices, so the state-dict
keys are the same (``features.0.weight`` ... ``features.28.bias``); ``classifier.*`` and
the layers below the deepest one used are ignored. Only the layers the loss uses are
built (up to relu3_3 by default): a checkpoint must hold those, with the right shapes
(strict), and the full torchvision checkpoint does.

Where the weights come from, in order: ``--vgg-weights PATH``; else torchvision's cache,
``$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth`` (``torch.hub.get_dir()``), read
through ``torch.hub.load_state_dict_from_url``, which returns the cached file without any
network access. The file is never downloaded here and never replaced by random weights:
when it is missing, :class:`VGGWeightsMissing` says which file and where to put it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence

from bapps_build.errors import UserError

from ._torch import require_torch

torch = require_torch()
nn = torch.nn
F = torch.nn.functional

VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
VGG16_FILE = "vgg16-397923af.pth"
# torchvision's cfg "D": numbers are 3x3 conv + ReLU, "M" a 2x2 max pool
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
# index in `features` of the ReLU after which each tap is read
TAPS = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22, "relu5_3": 29}
DEFAULT_TAPS = ("relu1_2", "relu2_2", "relu3_3")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGGWeightsMissing(UserError, RuntimeError):
    pass


class VGGWeightsInvalid(UserError, RuntimeError):
    pass


def vgg16_layers(last_index: int) -> "nn.Sequential":
    """torchvision's vgg16().features up to and including index last_index."""
    layers, in_ch = [], 3
    for item in VGG16_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(in_ch, item, 3, padding=1), nn.ReLU(inplace=False)]
            in_ch = item
        if len(layers) > last_index:
            break
    return nn.Sequential(*layers[:last_index + 1])


class VGG16Features(nn.Module):
    """Frozen VGG16 features at the given taps, for images N x 3 x H x W in [0, 1]."""

    def __init__(self, taps: Sequence[str] = DEFAULT_TAPS):
        super().__init__()
        unknown = [t for t in taps if t not in TAPS]
        if unknown:
            raise ValueError(f"unknown VGG16 taps {unknown}; known: {', '.join(TAPS)}")
        self.taps = tuple(sorted(taps, key=TAPS.get))
        self.features = vgg16_layers(max(TAPS[t] for t in self.taps))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def load_torchvision_state(self, state: Mapping, origin: str = "the checkpoint") -> None:
        """Copy the conv weights from a torchvision-format state dict (strict for the layers used)."""
        if not isinstance(state, Mapping):
            raise VGGWeightsInvalid(f"{origin} is not a state dict (a mapping of names to tensors)")
        if "state_dict" in state and isinstance(state["state_dict"], Mapping) and "features.0.weight" not in state:
            state = state["state_dict"]
        wanted = {f"features.{k}": v for k, v in self.features.state_dict().items()}
        missing = [k for k in wanted if k not in state]
        if missing:
            raise VGGWeightsInvalid(
                f"{origin} is not torchvision's VGG16 (or is cut short): it lacks {', '.join(missing[:4])}"
                + (f" and {len(missing) - 4} more" if len(missing) > 4 else ""))
        bad = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})" for k, v in wanted.items()
               if not hasattr(state[k], "shape") or tuple(state[k].shape) != tuple(v.shape)]
        if bad:
            raise VGGWeightsInvalid(f"{origin} has VGG16 keys of the wrong shape: {', '.join(bad[:3])}")
        self.features.load_state_dict({k[len("features."):]: state[k].float() for k in wanted}, strict=True)

    def forward(self, images) -> Dict[str, "torch.Tensor"]:
        x = (images - self.mean) / self.std
        out, wanted = {}, {TAPS[t]: t for t in self.taps}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in wanted:
                out[wanted[i]] = x
        return out


def cached_checkpoint_path() -> Path:
    """Where torch.hub keeps (and load_state_dict_from_url looks for) torchvision's VGG16."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE


def missing_message(needed_by: str = "") -> str:
    path = cached_checkpoint_path()
    return (f"{needed_by + ' ' if needed_by else ''}needs torchvision's ImageNet VGG16 checkpoint for the VGG "
            f"(perceptual) loss, and {path} does not exist. Download {VGG16_URL} on a machine with internet "
            f"access and put it at {path} (the folder is $TORCH_HOME/hub/checkpoints; TORCH_HOME defaults "
            "to ~/.cache/torch), or give its path with --vgg-weights PATH; or pass --no-vgg to train "
            "without the VGG term (each network's status records that it was dropped).")


def load_vgg16_state(path: Optional[str] = None) -> dict:
    """torchvision's VGG16 state dict from PATH or from the torch.hub cache (never downloaded)."""
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise VGGWeightsMissing(f"--vgg-weights {path}: no such file")
        return _load_weights_only(p)
    cached = cached_checkpoint_path()
    if not cached.is_file():
        raise VGGWeightsMissing(missing_message())
    try:
        return torch.hub.load_state_dict_from_url(VGG16_URL, map_location="cpu", progress=False,
                                                  weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a bad cache file is a person's problem to fix
        raise VGGWeightsInvalid(f"{cached} could not be read as a checkpoint ({type(exc).__name__}: {exc}); "
                                f"replace it with a fresh copy of {VGG16_URL}") from None


def _load_weights_only(path: Path) -> dict:
    try:
        return torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise VGGWeightsInvalid(f"{path} could not be loaded as a plain state dict "
                                f"(torch.load weights_only=True: {type(exc).__name__}: {str(exc)[:300]})") from None


def load_vgg16_features(path: Optional[str] = None, taps: Sequence[str] = DEFAULT_TAPS) -> VGG16Features:
    origin = str(path) if path else str(cached_checkpoint_path())
    model = VGG16Features(taps)
    model.load_torchvision_state(load_vgg16_state(path), origin)
    return model


def vgg_available(path: Optional[str] = None) -> bool:
    return Path(path).expanduser().is_file() if path else cached_checkpoint_path().is_file()


def perceptual_loss(vgg: VGG16Features, output, target):
    """Mean L1 distance between VGG features, summed over the taps."""
    fo, ft = vgg(output), vgg(target)
    return sum(F.l1_loss(fo[t], ft[t]) for t in vgg.taps)
