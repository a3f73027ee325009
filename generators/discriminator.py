"""A PatchGAN discriminator (pix2pix): conditional on the corrupted input, one score per patch.

``layers`` stride-2 4x4 convs (32 channels doubling, capped at 256; batch norm after all
but the first), then a stride-1 4x4 conv to one channel: the scores of overlapping
patches. ``layers`` = 0 means no discriminator and no adversarial loss.
"""
from __future__ import annotations

from ._torch import require_torch

torch = require_torch()
nn = torch.nn

BASE_CHANNELS = 32
MAX_CHANNELS = 256


class PatchDiscriminator(nn.Module):
    def __init__(self, layers: int, in_channels: int = 6, base_channels: int = BASE_CHANNELS):
        super().__init__()
        if layers < 1:
            raise ValueError("a discriminator needs at least one layer (0 means no adversarial loss)")
        parts = [nn.Conv2d(in_channels, base_channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        channels = base_channels
        for i in range(1, layers):
            out = min(base_channels * 2 ** i, MAX_CHANNELS)
            parts += [nn.Conv2d(channels, out, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(out),
                      nn.LeakyReLU(0.2)]
            channels = out
        parts.append(nn.Conv2d(channels, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*parts)

    def forward(self, corrupted, image):
        """Scores for (corrupted input, candidate) pairs, both N x 3 x H x W in [0, 1]."""
        return self.model(torch.cat([corrupted * 2.0 - 1.0, image * 2.0 - 1.0], dim=1))


def build_discriminator(config):
    layers = int(config["discriminator"]["layers"])
    return PatchDiscriminator(layers) if layers > 0 else None
