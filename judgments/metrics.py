"""Distance metrics for `bapps-build evaluate`: smaller means more similar, always.

Every metric is called on batches: img0, img1 float32 arrays of shape (N, H, W, 3), RGB in
[0, 1]; it returns N distances.

- l2: mean squared error over pixels and channels, on the [0, 1] scale.
- psnr: minus the PSNR in dB (peak 1.0), so that smaller is more similar; identical patches get
  -100 dB (the MSE is floored at 1e-10).
- ssim: 1 - SSIM (scikit-image's structural_similarity, 7x7 window, channel_axis=-1, data_range=1).
- lpips, lpips-alex, lpips-vgg, lpips-squeeze: the lpips package (its default is alex), inputs
  scaled to [-1, 1] as LPIPS expects. Needs `pip install lpips` and the backbone's ImageNet
  weights from torchvision (fetched at first use, or already in the torch cache).
- module:function or path/to/file.py:function: any callable f(img0, img1) -> distance, given one
  pair as float32 (H, W, 3) in [0, 1]; if the function has an attribute `batched = True` it gets
  the (N, H, W, 3) batches instead and returns N distances.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from bapps_build.errors import UserError

BUILT_IN = ("l2", "psnr", "ssim", "lpips", "lpips-alex", "lpips-vgg", "lpips-squeeze")


class MetricError(UserError, ValueError):
    """A metric cannot be set up; the message says what to install or fix."""


@dataclass
class Metric:
    name: str
    distances: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (N,H,W,3) x2 -> (N,)


def l2_distance(img0: np.ndarray, img1: np.ndarray) -> np.ndarray:
    diff = img0.astype(np.float32) - img1.astype(np.float32)
    return np.mean(diff * diff, axis=(1, 2, 3), dtype=np.float64)


def negative_psnr(img0: np.ndarray, img1: np.ndarray) -> np.ndarray:
    mse = np.maximum(l2_distance(img0, img1), 1e-10)
    return 10.0 * np.log10(mse)  # = -(10 log10(1 / mse))


def ssim_distance(img0: np.ndarray, img1: np.ndarray) -> np.ndarray:
    from skimage.metrics import structural_similarity

    return np.array([1.0 - structural_similarity(a, b, channel_axis=-1, data_range=1.0)
                     for a, b in zip(img0, img1)], dtype=np.float64)


def lpips_metric(net: str) -> Metric:
    try:
        import lpips
        import torch
    except ImportError as exc:
        raise MetricError(f"--metric lpips needs the lpips package and torch: pip install lpips ({exc})") from None
    try:
        model = lpips.LPIPS(net=net, verbose=False).eval()
    except Exception as exc:  # the backbone's weights come from torchvision's download servers
        raise MetricError(f"LPIPS ({net}) could not load its {net} backbone weights ({type(exc).__name__}: {exc}). "
                          f"They are fetched by torchvision at first use into ~/.cache/torch; on an offline "
                          f"machine copy them there, or evaluate with another metric") from None

    def distances(img0, img1):
        with torch.no_grad():
            a = torch.from_numpy(np.ascontiguousarray(img0.transpose(0, 3, 1, 2))) * 2 - 1
            b = torch.from_numpy(np.ascontiguousarray(img1.transpose(0, 3, 1, 2))) * 2 - 1
            return model(a, b).reshape(-1).double().numpy()

    return Metric(f"lpips-{net}", distances)


def load_callable(spec: str) -> Callable:
    target, _, name = spec.rpartition(":")
    if not target or not name:
        raise MetricError(f"--metric {spec!r}: use l2, psnr, ssim, lpips, or module:function / file.py:function")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise MetricError(f"--metric {spec!r}: no file {path}")
        module_spec = importlib.util.spec_from_file_location(f"bapps_metric_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            raise MetricError(f"--metric {spec!r}: importing {path} failed ({type(exc).__name__}: {exc})") from None
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise MetricError(f"--metric {spec!r}: cannot import {target} ({exc}); is it on PYTHONPATH?") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise MetricError(f"--metric {spec!r}: {target} has no function {name}")
    return fn


def custom_metric(spec: str) -> Metric:
    fn = load_callable(spec)
    if getattr(fn, "batched", False):
        def distances(img0, img1):
            out = np.asarray(fn(img0, img1), dtype=np.float64).reshape(-1)
            if out.shape[0] != img0.shape[0]:
                raise MetricError(f"--metric {spec}: returned {out.shape[0]} distances for {img0.shape[0]} pairs")
            return out
    else:
        def distances(img0, img1):
            return np.array([float(np.asarray(fn(a, b)).reshape(-1)[0]) for a, b in zip(img0, img1)])
    return Metric(spec, distances)


def get_metric(spec: str) -> Metric:
    spec = spec.strip()
    if spec == "l2":
        return Metric("l2", l2_distance)
    if spec == "psnr":
        return Metric("psnr", negative_psnr)
    if spec == "ssim":
        return Metric("ssim", ssim_distance)
    if spec == "lpips" or spec.startswith("lpips-"):
        net = spec.split("-", 1)[1] if "-" in spec else "alex"
        if net not in ("alex", "vgg", "squeeze"):
            raise MetricError(f"--metric {spec}: the lpips backbones are alex, vgg and squeeze")
        return lpips_metric(net)
    return custom_metric(spec)
