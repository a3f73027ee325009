"""bapps-build: BAPPS-style perceptual-similarity datasets (2AFC triplets and JND pairs).

The command line is a thin layer over this API:

    from bapps_build import BuildConfig, run_build
    report = run_build(BuildConfig(n=1000, task="2afc", split="train"), "dataset", workers=2)
"""
from .build import BuildError, run_build
from .config import BuildConfig, ConfigError
from .version import __version__

__all__ = ["BuildConfig", "ConfigError", "BuildError", "run_build", "__version__"]
