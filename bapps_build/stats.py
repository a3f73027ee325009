"""`bapps-build stats`: the difficulty profile of a dataset, to compare builds with each other
and with BAPPS itself.

Works on any tree `verify` accepts: our builds (folders or WebDataset shards, with a
manifest) and plain BAPPS-format trees (ref/p0/p1[/judge] and p0/p1[/same] folders of PNGs,
no manifest). Per subset it measures, with the reference visibility measure
(bapps_build.visibility):

2AFC, per triplet, each side's visibility against ref (v0, v1):
- ``sides``: median visibility, S-CIELAB dE and SSIM of the sides;
- ``near_identical``: the share of sides below the visibility threshold (THRESHOLD), for p0,
  p1 and both together;
- ``ratio``: max(v0, v1) / min(v0, v1), quantiles over the triplets where both sides differ
  from ref (``identical_side`` counts the others, where the ratio is undefined), and the
  share of triplets with ratio < 1.5 (sides about equally visible: the hard ones);
- ``l2_ssim_agreement``: the share of triplets where L2 (mean squared error, smaller = closer)
  and SSIM (larger = closer) pick the same side as closer to ref (both calling it a tie
  counts as agreeing);
- with judge/ labels (the fraction of people who called p1 closer, h): ``human`` = the mean
  of h^2 + (1 - h)^2 (the chance that two people drawn from those who judged agree; the
  "human" row of the LPIPS paper), and L2's / SSIM's 2AFC score (h when the metric picks p1,
  1 - h when it picks p0, 0.5 on a tie; the LPIPS paper's score).

JND, per pair, the visibility between p0 and p1:
- ``below_threshold``: the share of pairs below THRESHOLD (BAPPS people called 27.9% of
  its JND test pairs "same"); with same/ labels, the mean "same" fraction and the share of
  pairs where "below threshold" and "most people said same" agree.

With a manifest, ``families``: per family, how many sides (2AFC) or pairs (JND) have it in
their chain and the median visibility of those sides/pairs. Without one, only the parts
above (the families are unknown).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
from PIL import Image

from .errors import UserError
from .layout import IMAGE_FOLDERS, LABEL_FOLDERS, MANIFEST, find_subsets
from .manifest import REAL_FAMILY, read_manifest, upgrade_record
from .shards import INDEX, is_shard_set, read_shard
from .visibility import THRESHOLD, visibility_parts

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
HARD_RATIO = 1.5  # sides within x1.5 of each other's visibility: a hard triplet
BUILD_SAMPLE = 256  # examples measured (about 12 ms each on a loaded core: a few seconds) for report.json's "difficulty" at the end of a build


class StatsError(UserError, RuntimeError):
    pass


def _decode(data_or_path, where: str) -> np.ndarray:
    try:
        img = Image.open(data_or_path if not isinstance(data_or_path, bytes) else __import__("io").BytesIO(data_or_path))
        return np.asarray(img.convert("RGB"))
    except Exception as exc:
        raise StatsError(f"{where}: not a readable image ({exc}); run `bapps-build verify` on the dataset") from None


def _label(data_or_path, where: str) -> float:
    try:
        if isinstance(data_or_path, bytes):
            import io
            value = np.load(io.BytesIO(data_or_path), allow_pickle=False)
        else:
            value = np.load(data_or_path, allow_pickle=False)
        return float(np.asarray(value).reshape(-1)[0])
    except Exception as exc:
        raise StatsError(f"{where}: not a readable .npy label ({exc}); run `bapps-build verify`") from None


def _examples(task: str, path: Path, sample: Optional[int], seed: int):
    """(total, list of (stem, {folder: image}, label or None, recipe or None) callables)."""
    folders = IMAGE_FOLDERS[task]
    label = LABEL_FOLDERS[task]
    rng = np.random.default_rng(seed)
    if is_shard_set(path) and not (path / folders[0]).is_dir():
        index = json.loads((path / INDEX).read_text())
        total = int(index["samples"])
        chosen = None if sample is None or sample >= total else set(rng.choice(total, sample, replace=False).tolist())

        def gen():
            i = 0
            for shard in index["shards"]:
                for key, fields in read_shard(path / shard["file"]):
                    if chosen is None or i in chosen:
                        where = f"{path / shard['file']}:{key}"
                        missing = [f for f in folders if f"{f}.png" not in fields]
                        if missing:
                            raise StatsError(f"{where}: sample lacks {', '.join(missing)}; run `bapps-build verify`")
                        images = {f: _decode(fields[f"{f}.png"], where) for f in folders}
                        lab = _label(fields[f"{label}.npy"], where) if f"{label}.npy" in fields else None
                        recipe = json.loads(fields["json"]).get("recipe") if "json" in fields else None
                        recipe = upgrade_record(recipe)
                        yield key, images, lab, recipe
                    i += 1
        n = total if chosen is None else len(chosen)
        return total, n, gen()
    missing = [f for f in folders if not (path / f).is_dir()]
    if missing:
        raise StatsError(f"{path}: no {', '.join(f + '/' for f in missing)} folder; a {task} subset needs "
                         f"{', '.join(folders)} (run `bapps-build verify {path}`)")
    stems = sorted(p.stem for p in (path / folders[0]).glob("*.png"))
    total = len(stems)
    if sample is not None and sample < total:
        stems = [stems[i] for i in sorted(rng.choice(total, sample, replace=False).tolist())]
    recipes: Dict[str, dict] = {}
    if (path / MANIFEST).exists():
        wanted = set(stems)
        recipes = {r["stem"]: r for r in read_manifest(path / MANIFEST) if r.get("stem") in wanted}
    has_label = (path / label).is_dir()

    def gen():
        for s in stems:
            images = {}
            for f in folders:
                p = path / f / f"{s}.png"
                if not p.exists():
                    raise StatsError(f"{p} is missing ({folders[0]}/{s}.png exists); run `bapps-build verify {path}`")
                images[f] = _decode(p, str(p))
            lab = None
            if has_label:
                lp = path / label / f"{s}.npy"
                if not lp.exists():
                    raise StatsError(f"{lp} is missing; run `bapps-build verify {path}`")
                lab = _label(lp, str(lp))
            yield s, images, lab, recipes.get(s)
    return total, len(stems), gen()


def _quantiles(values) -> Optional[Dict[str, float]]:
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return None
    return {f"q{int(round(q * 100))}": round(float(np.quantile(v, q)), 4) for q in QUANTILES}


def _median(values) -> Optional[float]:
    return round(float(np.median(values)), 4) if len(values) else None


def _share(flags) -> Optional[float]:
    return round(float(np.mean(flags)), 4) if len(flags) else None


def _same_shape(images: dict, stem: str, path: Path):
    shapes = {f: im.shape for f, im in images.items()}
    if len(set(shapes.values())) > 1:
        raise StatsError(f"{path}: example {stem} has images of different sizes {shapes}; "
                         f"every folder's image of one example must have the same size")


def _families(recipe: Optional[dict], sides) -> List[str]:
    if not recipe:
        return []
    names = []
    for side in sides:
        for step in recipe.get(side) or []:
            family = step.get("family") if isinstance(step, dict) else None
            if family and family != REAL_FAMILY and family not in names:  # families of distortions only
                names.append(family)
    return names


def _pick(d0: float, d1: float) -> int:
    """0: p0 is closer, 1: p1 is closer, -1: a tie."""
    return 0 if d0 < d1 else 1 if d1 < d0 else -1


def _score(pick: int, h: float) -> float:
    return 0.5 if pick < 0 else (h if pick == 1 else 1.0 - h)


def profile_subset(task: str, path, *, sample: Optional[int] = None, seed: int = 0,
                   progress: bool = False, desc: Optional[str] = None) -> dict:
    """The difficulty profile of one subset folder (see the module docstring)."""
    path = Path(path)
    total, n, examples = _examples(task, path, sample, seed)
    from .jobs import progress_bar

    bar = progress_bar(n, desc or str(path), "ex", progress)
    profile = TwoAFCProfile() if task == "2afc" else JNDProfile()
    for stem, images, label, recipe in examples:
        _same_shape(images, stem, path)
        profile.add(images, label, recipe)
        bar.update(1)
    bar.close()
    out = {"task": task, "path": str(path), "examples": total, **profile.result(),
           "threshold": THRESHOLD, "manifest": profile.with_manifest > 0}
    if profile.with_manifest:
        out["families"] = {k: {"use": len(v), "median_visibility": _median(v)}
                           for k, v in sorted(profile.families.items(), key=lambda kv: (-len(kv[1]), kv[0]))}
    return out


class _Profile:
    """What every task's profile keeps: the visibility of each family's sides or pairs."""

    def __init__(self):
        self.families: Dict[str, List[float]] = {}
        self.with_manifest = 0  # examples whose recipe (manifest) is known

    def _count_families(self, recipe: dict, sides, visibility: float) -> None:
        for name in _families(recipe, sides):
            self.families.setdefault(name, []).append(visibility)


class TwoAFCProfile(_Profile):
    """Per triplet: each side's visibility against ref, their ratio, L2 and SSIM's picks, the people's."""

    def __init__(self):
        super().__init__()
        self.vis = {"p0": [], "p1": []}
        self.scielab, self.ssims = [], []
        self.ratios, self.identical, self.agree = [], 0, []
        self.human, self.l2_score, self.ssim_score = [], [], []

    def add(self, images: dict, h: Optional[float], recipe: Optional[dict]) -> None:
        ref = images["ref"]
        l2, dssim = {}, {}
        for side in ("p0", "p1"):
            parts = visibility_parts(ref, images[side])
            self.vis[side].append(parts["visibility"])
            self.scielab.append(parts["scielab"])
            self.ssims.append(parts["ssim"])
            diff = ref.astype(np.float64) - images[side].astype(np.float64)
            l2[side] = float(np.mean((diff / 255.0) ** 2))
            dssim[side] = 1.0 - parts["ssim"]
            if recipe is not None:
                self._count_families(recipe, (side,), parts["visibility"])
        self.with_manifest += recipe is not None
        v0, v1 = self.vis["p0"][-1], self.vis["p1"][-1]
        if min(v0, v1) > 0:
            self.ratios.append(max(v0, v1) / min(v0, v1))
        else:
            self.identical += 1
        pl2, pssim = _pick(l2["p0"], l2["p1"]), _pick(dssim["p0"], dssim["p1"])
        self.agree.append(pl2 == pssim)
        if h is not None:
            self.human.append(h * h + (1 - h) * (1 - h))
            self.l2_score.append(_score(pl2, h))
            self.ssim_score.append(_score(pssim, h))

    def result(self) -> dict:
        vis = self.vis
        both = vis["p0"] + vis["p1"]
        out = {"measured": len(vis["p0"]),
               "sides": {"median_visibility": _median(both), "median_scielab": _median(self.scielab),
                         "median_ssim": _median(self.ssims), "visibility_quantiles": _quantiles(both)},
               "near_identical": {"p0": _share([v < THRESHOLD for v in vis["p0"]]),
                                  "p1": _share([v < THRESHOLD for v in vis["p1"]]),
                                  "all_sides": _share([v < THRESHOLD for v in both])},
               "ratio": {"quantiles": _quantiles(self.ratios),
                         "below_1.5": _share([r < HARD_RATIO for r in self.ratios]), "identical_side": self.identical},
               "l2_ssim_agreement": _share(self.agree)}
        if self.human:
            out["judged"] = {"examples": len(self.human), "human": _share(self.human), "l2": _share(self.l2_score),
                             "ssim": _share(self.ssim_score)}
        return out


class JNDProfile(_Profile):
    """Per pair: the visibility between p0 and p1, and the people's "same" fraction."""

    def __init__(self):
        super().__init__()
        self.vis, self.scielab, self.ssims, self.same, self.agree = [], [], [], [], []

    def add(self, images: dict, s: Optional[float], recipe: Optional[dict]) -> None:
        parts = visibility_parts(images["p0"], images["p1"])
        self.vis.append(parts["visibility"])
        self.scielab.append(parts["scielab"])
        self.ssims.append(parts["ssim"])
        if recipe is not None:
            self.with_manifest += 1
            self._count_families(recipe, ("p0", "p1"), parts["visibility"])
        if s is not None:
            self.same.append(s)
            self.agree.append((parts["visibility"] < THRESHOLD) == (s > 0.5))

    def result(self) -> dict:
        vis = self.vis
        out = {"measured": len(vis),
               "pairs": {"median_visibility": _median(vis), "median_scielab": _median(self.scielab),
                         "median_ssim": _median(self.ssims), "visibility_quantiles": _quantiles(vis)},
               "below_threshold": _share([v < THRESHOLD for v in vis])}
        if self.same:
            out["judged"] = {"examples": len(self.same), "mean_same": _share(self.same),
                             "threshold_agrees_with_majority": _share(self.agree)}
        return out


def profile_dataset(root, *, sample: Optional[int] = None, seed: int = 0, progress: bool = False,
                    subset: Optional[str] = None) -> List[dict]:
    """Profiles of every subset under root (or of root itself when it is a subset folder)."""
    root = Path(root)
    subsets = find_subsets(root)
    if not subsets:
        task = root.parent.parent.name
        if task in IMAGE_FOLDERS and any((root / f).is_dir() for f in IMAGE_FOLDERS[task]) or (root / INDEX).exists():
            subsets = [(task if task in IMAGE_FOLDERS else "2afc", root.parent.name, root.name, root)]
    if subset:
        subsets = [s for s in subsets if f"{s[0]}/{s[1]}/{s[2]}" == subset]
    if not subsets:
        raise StatsError(f"{root} holds no BAPPS subset (<task>/<split>/<subset>/ with "
                         f"ref/p0/p1 or p0/p1 folders)" + (f" named {subset}" if subset else ""))
    results = []
    for task, split, name, path in subsets:
        p = profile_subset(task, path, sample=sample, seed=seed, progress=progress, desc=f"{task}/{split}/{name}")
        p["subset"] = f"{task}/{split}/{name}"
        results.append(p)
    return results


def build_difficulty(out, task: str, sample: int = BUILD_SAMPLE) -> dict:
    """The compact profile report.json gets at the end of a build (at most `sample` examples)."""
    p = profile_subset(task, out, sample=sample, seed=0)
    keep = ("measured", "sides", "pairs", "near_identical", "ratio", "l2_ssim_agreement",
            "below_threshold", "threshold", "families")
    return {k: p[k] for k in keep if k in p}


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def format_profile(p: dict) -> str:
    lines = [f"{p.get('subset', p['path'])}: {p['measured']} of {p['examples']} examples measured"
             + ("" if p.get("manifest") else " (no manifest: families unknown)")]
    if p["task"] == "2afc":
        s = p["sides"]
        lines.append(f"  sides: median visibility {s['median_visibility']}, S-CIELAB dE {s['median_scielab']}, "
                     f"SSIM {s['median_ssim']}")
        ni = p["near_identical"]
        lines.append(f"  near-identical (visibility < {p['threshold']}): p0 {_pct(ni['p0'])}, p1 {_pct(ni['p1'])}, "
                     f"all sides {_pct(ni['all_sides'])}")
        r = p["ratio"]
        q = r["quantiles"]
        lines.append("  visibility ratio max/min: " + (", ".join(f"{k} {v:.2f}" for k, v in q.items()) if q else "-")
                     + f"; below {HARD_RATIO}: {_pct(r['below_1.5'])}"
                     + (f"; {r['identical_side']} triplet(s) with a side identical to ref" if r["identical_side"] else ""))
        lines.append(f"  L2 and SSIM pick the same side: {_pct(p['l2_ssim_agreement'])}")
        j = p.get("judged")
        if j:
            lines.append(f"  judged ({j['examples']}): human {_pct(j['human'])}, L2 {_pct(j['l2'])}, "
                         f"SSIM {_pct(j['ssim'])}")
    else:
        s = p["pairs"]
        lines.append(f"  pairs: median visibility {s['median_visibility']}, S-CIELAB dE {s['median_scielab']}, "
                     f"SSIM {s['median_ssim']}")
        lines.append(f"  below threshold ({p['threshold']}): {_pct(p['below_threshold'])}")
        j = p.get("judged")
        if j:
            lines.append(f"  judged ({j['examples']}): mean 'same' {_pct(j['mean_same'])}, threshold agrees with "
                         f"the majority {_pct(j['threshold_agrees_with_majority'])}")
    fams = p.get("families")
    if fams:
        lines.append("  families (use, median visibility):")
        for name, f in fams.items():
            lines.append(f"    {name:24s} {f['use']:6d}  {f['median_visibility']}")
    return "\n".join(lines)
