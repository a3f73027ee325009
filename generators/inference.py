"""Running a trained generator on images, batched, with results that do not depend on the batch.

Why the fixed batch shape: on the CPU, oneDNN chooses its convolution kernel by the
shape of the call, batch size included, and two kernels sum in different orders: the
same image through a batch of 1 and a batch of 37 can differ in the last bit. Measured
(torch 2.13 CPU, float32): with channels_last, a row's output is the same in *any* call
of the same shape, whatever the other rows are, its position, or the thread count. So
every forward pass here sees exactly ``exact_batch_size(h, w)`` images (the last chunk
padded with zeros): one example replayed alone gives the bytes of the batched build.
A test runs every upsampling and normalization method through this.

On a GPU the batches are simply large (up to 256) and exactness is not promised: a subset
built on a GPU replays on the CPU only approximately.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

from ._torch import require_torch

torch = require_torch()

PIXELS_PER_CALL = 4 * 64 * 64  # 4 BAPPS patches per call: the CPU rate is flat above it
GPU_BATCH = 256


def exact_batch_size(height: int, width: int) -> int:
    """The one batch size used on the CPU for images of this size (a function of the size only)."""
    return int(max(1, min(16, PIXELS_PER_CALL // max(1, height * width))))


def prepare_model(model, device: str):
    """Eval mode, float32, channels_last, on the device."""
    return model.to(device=device, dtype=torch.float32).to(memory_format=torch.channels_last).eval()


def run_generator(model, images: Sequence[np.ndarray], device: str = "cpu") -> List[np.ndarray]:
    """The network's outputs (float32 H x W x 3, not clipped) for float32 H x W x 3 inputs in [0, 1].

    Images of different sizes are run in separate calls.
    """
    out: List[np.ndarray] = [None] * len(images)  # type: ignore[list-item]
    by_shape = {}
    for i, im in enumerate(images):
        by_shape.setdefault(tuple(im.shape), []).append(i)
    cuda = device.startswith("cuda")
    with torch.inference_mode():
        for (h, w, _c), idx in by_shape.items():
            size = GPU_BATCH if cuda else exact_batch_size(h, w)
            for start in range(0, len(idx), size):
                part = idx[start:start + size]
                batch = np.zeros((size if not cuda else len(part), 3, h, w), dtype=np.float32)
                for k, i in enumerate(part):
                    batch[k] = np.asarray(images[i], dtype=np.float32).transpose(2, 0, 1)
                x = torch.from_numpy(batch).to(device).contiguous(memory_format=torch.channels_last)
                y = model(x)[:len(part)].float().permute(0, 2, 3, 1).to("cpu").numpy()
                for k, i in enumerate(part):
                    out[i] = np.ascontiguousarray(y[k], dtype=np.float32)
    return out
