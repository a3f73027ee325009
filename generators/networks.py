"""The encoder-decoder generator, built from a config (see :mod:`generators.config`).

Shape of the network (``L`` = ``layers``, ``c_i`` = ``min(first_channels * 2**i, max_channels)``):

- first layer: 3x3 conv, stride ``first_stride``, 3 -> c_0, LeakyReLU(0.2), no
  normalization (as pix2pix): encoder level 0.
- ``L`` down stages: 4x4 conv stride 2 (c_{i-1} -> c_i), norm, LeakyReLU(0.2): levels 1..L;
  level L is the bottleneck.
- ``L`` up stages, deepest first: up stage ``i`` turns level i+1 into level i (channels
  c_{i+1}, doubled when level i+1 has a skip, -> c_i): the upsampling method, norm, ReLU,
  and Dropout(0.5) on the ``dropout_layers`` deepest stages. After stage i, when level i
  has a skip connection, the encoder's level-i output is concatenated (U-Net).
- last layer: a 3x3 conv to 3 channels (first_stride 1), or one more upsampling to 3
  channels (first_stride 2), then tanh. Pixels go in as 2x - 1 and come out as (y + 1) / 2.

Upsampling methods (each doubles the resolution):
``transposed``: ConvTranspose2d 3x3, stride 2 (kernel not a multiple of the stride: the
uneven overlap that prints checkerboards); ``nearest_conv`` / ``bilinear_conv``: resize,
then a 3x3 conv; ``pixel_shuffle``: a 3x3 conv to 4x the channels, then PixelShuffle(2).

Normalization: ``batch`` (BatchNorm2d), ``instance`` (per-image, per-channel statistics,
also at inference, with a learned scale and shift: written as GroupNorm with one group per
channel, the same function as InstanceNorm2d(affine=True) and much faster on channels_last
tensors), ``group`` (GroupNorm, 8 groups, fewer when the channels do not divide), ``none``
(and then the convs carry a bias).

Any image size works: the input is padded (edge pixels repeated) at the right and bottom
to a multiple of 2**halvings, at least twice that, and the output cropped back.
"""
from __future__ import annotations

import math
from typing import List, Mapping

from ._torch import require_torch

torch = require_torch()
nn = torch.nn
F = torch.nn.functional

from .config import channels_at, dropout_stages, halvings, skip_levels, validate_config  # noqa: E402

DOWN_KERNEL = 4
DROPOUT = 0.5


def make_norm(kind: str, channels: int) -> "nn.Module":
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        # instance norm with affine = one group per channel; nn.InstanceNorm2d computes the same
        # but is about 20x slower on channels_last CPU tensors (the layout inference uses)
        return nn.GroupNorm(channels, channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(8, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown normalization {kind!r}")


def make_upsampler(method: str, in_channels: int, out_channels: int, bias: bool) -> "nn.Module":
    """A layer that doubles the resolution and maps in_channels -> out_channels."""
    if method == "transposed":
        return nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1, bias=bias)
    if method == "nearest_conv":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                             nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias))
    if method == "bilinear_conv":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                             nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias))
    if method == "pixel_shuffle":
        return nn.Sequential(nn.Conv2d(in_channels, out_channels * 4, 3, padding=1, bias=bias), nn.PixelShuffle(2))
    raise ValueError(f"unknown upsampling method {method!r}")


class Generator(nn.Module):
    """The encoder-decoder of one config; forward takes and returns N x 3 x H x W in [0, 1]."""

    def __init__(self, config: Mapping):
        super().__init__()
        validate_config(config)
        g = config["generator"]
        layers, norm = g["layers"], g["norm"]
        bias = norm == "none"
        ch = [channels_at(config, i) for i in range(layers + 1)]
        self.skip_levels: List[int] = skip_levels(config)
        self.multiple = 2 ** halvings(config)

        self.first = nn.Sequential(nn.Conv2d(3, ch[0], 3, stride=g["first_stride"], padding=1),
                                   nn.LeakyReLU(0.2))
        self.down = nn.ModuleList(
            nn.Sequential(nn.Conv2d(ch[i - 1], ch[i], DOWN_KERNEL, stride=2, padding=1, bias=bias),
                          make_norm(norm, ch[i]), nn.LeakyReLU(0.2))
            for i in range(1, layers + 1))
        with_dropout = set(dropout_stages(config))
        up = []
        for i in range(layers - 1, -1, -1):  # up stage i makes level i from level i + 1
            cin = ch[i + 1] * (2 if (i + 1) in self.skip_levels else 1)
            parts = [make_upsampler(g["upsampling"], cin, ch[i], bias), make_norm(norm, ch[i]), nn.ReLU()]
            if i in with_dropout:
                parts.append(nn.Dropout(DROPOUT))
            up.append(nn.Sequential(*parts))
        self.up = nn.ModuleList(up)  # deepest stage first
        cin = ch[0] * (2 if 0 in self.skip_levels else 1)
        if g["first_stride"] == 2:
            self.last = make_upsampler(g["upsampling"], cin, 3, bias=True)
        else:
            self.last = nn.Conv2d(cin, 3, 3, padding=1)

    def forward(self, images):
        h, w = images.shape[-2:]
        m = self.multiple
        ph, pw = max(-(-h // m), 2) * m - h, max(-(-w // m), 2) * m - w
        x = images * 2.0 - 1.0
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        levels = [self.first(x)]
        for block in self.down:
            levels.append(block(levels[-1]))
        x = levels[-1]
        for stage, block in zip(range(len(self.up) - 1, -1, -1), self.up):
            x = block(x)
            if stage in self.skip_levels:
                x = torch.cat([x, levels[stage]], dim=1)
        y = torch.tanh(self.last(x))
        return ((y + 1.0) * 0.5)[..., :h, :w]


def build_generator(config: Mapping) -> Generator:
    return Generator(config)


def count_parameters(module) -> int:
    return int(sum(p.numel() for p in module.parameters()))
