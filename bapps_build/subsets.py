"""Which subset of a dataset a command means: the one `--subset` of every command resolves.

`--subset` names a subset of an existing dataset by its bare name (`traditional`) when that
name is unique in the dataset, or by its qualified TASK/SPLIT/SUBSET path
(`2afc/val/traditional`). Without it, a dataset holding one subset means that one; a subset
folder given as the dataset means itself.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

from .errors import UserError
from .layout import BUILD, MANIFEST, find_subsets

_SHARD_INDEX = "index.json"


class SubsetError(UserError, ValueError):
    """No such subset in the dataset, or more than one could be meant; the message lists them."""


def subset_rel(path) -> str:
    """TASK/SPLIT/SUBSET of a subset folder (its last three path parts)."""
    return "/".join(Path(path).resolve().parts[-3:])


def _is_subset_folder(path: Path) -> bool:
    return any((path / name).exists() for name in (MANIFEST, BUILD, _SHARD_INDEX))


def _listing(found: List[Tuple[str, str, str, Path]]) -> str:
    return ", ".join(f"{t}/{s}/{n}" for t, s, n, _ in found)


def resolve_subset(root, subset: Optional[str] = None) -> Path:
    """The folder of the subset `subset` (bare NAME or TASK/SPLIT/SUBSET) of the dataset at root.

    Raises SubsetError, naming the subsets the dataset has, when none or several match.
    """
    root = Path(root)
    if _is_subset_folder(root):
        return root
    found = find_subsets(root)
    if not found:
        raise SubsetError(f"{root} holds no BAPPS subset (no <task>/<split>/<subset>/ with a manifest.jsonl "
                          f"or image folders)")
    if not subset:
        if len(found) == 1:
            return found[0][3]
        raise SubsetError(f"{root} holds several subsets ({_listing(found)}); pick one with --subset NAME "
                          f"or --subset TASK/SPLIT/SUBSET")
    wanted = subset.strip("/")
    if "/" in wanted:
        matches = [f for f in found if f"{f[0]}/{f[1]}/{f[2]}" == wanted]
    else:
        matches = [f for f in found if f[2] == wanted]
    if len(matches) == 1:
        return matches[0][3]
    if not matches:
        raise SubsetError(f"{root} has no subset {subset!r}; its subsets: {_listing(found)}")
    raise SubsetError(f"{root} has several subsets named {subset!r} ({_listing(matches)}); pick one with "
                      f"--subset TASK/SPLIT/SUBSET")
