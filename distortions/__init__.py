"""The traditional distortions of BAPPS: 20 families, each a pure ``apply`` and a ``sample``.

    >>> import numpy as np, distortions
    >>> chain = distortions.parse_chain_spec("gaussian_blur:0.5+jpeg:0.8", np.random.default_rng(0))
    >>> out = distortions.apply_chain(np.full((64, 64, 3), 0.5, np.float32), chain)
"""
from ._common import colored_noise, draw_seed, finish, generator, lerp, seeded, to_uint8
from .chain import (apply_chain, chain_families, describe_chain, parse_chain_spec, sample_chain,
                    sample_step, to_jsonable)
from .errors import (CalibrationError, ChainSpecError, FamilyError, PluginError, UnknownFamilyError,
                     UserError)
from .registry import (ENTRY_POINT_GROUP, Family, all_families, family_names,
                       get_family, load_plugin_file, loaded_plugin_files, register)

__all__ = [
    "Family", "register", "get_family", "all_families", "family_names", "load_plugin_file",
    "loaded_plugin_files", "ENTRY_POINT_GROUP",
    "UserError", "UnknownFamilyError", "ChainSpecError", "FamilyError", "PluginError", "CalibrationError",
    "apply_chain", "sample_chain", "sample_step", "parse_chain_spec", "describe_chain",
    "chain_families", "to_jsonable", "colored_noise", "to_uint8",
    # for authors of families: seeds, severity maps and the output contract
    "generator", "seeded", "draw_seed", "lerp", "finish",
]
