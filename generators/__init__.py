"""CNN-based distortions: a bank of random-architecture generators, the family `cnn` (docs/generators.md).

One idea per module:

- ``config``: the configuration space, its ranges, sampling a bank's configs from a seed.
- ``corruptions``: the input corruptions (null, pink/white noise, color removal, downsampling).
- ``networks``: the encoder-decoder generator a config describes.
- ``discriminator``: the PatchGAN discriminator of the adversarial loss.
- ``vgg``: VGG16 features in torchvision's state-dict format, for the perceptual loss.
- ``bank``: the bank folder: configs, status files, checkpoints (plain state dicts).
- ``training``: training a bank, resumable network by network.
- ``inference``: batched inference whose output does not depend on the batch (exact replay).
- ``integration``: the bank as the distortion family ``cnn`` and the cnn/mix build hooks.
- ``preview``: a sheet of every network's output on the same patches.
- ``cli``: ``bapps-build generators sample|train|list|preview``.

Importing this package (which registers the replay hook of ``integration`` with the core),
``config``, ``bank``, ``corruptions`` or ``cli`` does not import torch;
the other modules need it (``pip install 'bapps-build[cnn]'``).
"""
from bapps_build.hooks import register_replay_preparer

from .integration import prepare_replay

# replaying a cnn or mix subset first registers the bank its build.json names (the core asks
# through its hook; it does not import this package)
register_replay_preparer("generators", prepare_replay)
