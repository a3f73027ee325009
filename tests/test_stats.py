"""The difficulty profile (bapps_build/stats.py, `bapps-build stats`, report.json's "difficulty")."""
import json
from collections import Counter

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from bapps_build import BuildConfig, run_build
from bapps_build.cli import main
from bapps_build.files import read_jsonl
from bapps_build.layout import MANIFEST, REPORT, subset_dir
from bapps_build.stats import StatsError, profile_dataset, profile_subset
from bapps_build.visibility import THRESHOLD, visibility

QUIET = dict(progress=False, log=lambda m: None)


def _u8(a):
    return np.round(np.clip(a, 0, 1) * 255).astype(np.uint8)


def _gradient():
    y, x = np.mgrid[0:64, 0:64] / 63.0
    return np.stack([0.3 + 0.4 * x, 0.3 + 0.4 * y, 0.5 + 0 * x], -1)


def _write(folder, stem, img):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(folder / f"{stem}.png")


def _label(folder, stem, value):
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{stem}.npy", np.array([value], dtype=np.float32))


def test_build_report_and_stats_agree_with_manifest(tmp_path):
    report = run_build(BuildConfig(n=24, seed=5), tmp_path / "d", workers=1, **QUIET)
    sub = subset_dir(tmp_path / "d", "2afc", "train", "traditional")
    diff = report["difficulty"]
    assert json.loads((sub / REPORT).read_text())["difficulty"] == diff
    assert diff["measured"] == 24 and diff["threshold"] == THRESHOLD
    # per-family use = sides whose chain has the family, from the manifest
    use = Counter()
    records = list(read_jsonl(sub / MANIFEST))
    for r in records:
        for side in ("p0", "p1"):
            for name in {s["family"] for s in r[side]}:
                use[name] += 1
    assert {k: v["use"] for k, v in diff["families"].items()} == dict(use)
    # the near-identical share matches a direct computation
    vis = []
    for r in records:
        ref = np.asarray(Image.open(sub / "ref" / f"{r['stem']}.png").convert("RGB"))
        for side in ("p0", "p1"):
            vis.append(visibility(ref, np.asarray(Image.open(sub / side / f"{r['stem']}.png").convert("RGB"))))
    assert diff["near_identical"]["all_sides"] == pytest.approx(np.mean(np.array(vis) < THRESHOLD), abs=1e-4)
    assert diff["sides"]["median_visibility"] == pytest.approx(np.median(vis), abs=1e-3)
    q = diff["ratio"]["quantiles"]
    assert 1.0 <= q["q10"] <= q["q50"] <= q["q90"]
    assert 0.0 <= diff["l2_ssim_agreement"] <= 1.0

    # the CLI on the same tree, sampled, with --json
    out = tmp_path / "p.json"
    res = CliRunner().invoke(main, ["stats", str(tmp_path / "d"), "--sample", "7", "--json", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "L2 and SSIM pick the same side" in res.output and "families" in res.output
    profiles = json.loads(out.read_text())
    assert profiles[0]["subset"] == "2afc/train/traditional" and profiles[0]["measured"] == 7
    assert profiles[0]["examples"] == 24 and profiles[0]["manifest"]


def test_jnd_build_profile(tmp_path):
    report = run_build(BuildConfig(n=12, seed=2, task="jnd"), tmp_path / "d", workers=1, **QUIET)
    diff = report["difficulty"]
    assert diff["measured"] == 12 and 0.0 <= diff["below_threshold"] <= 1.0 and "pairs" in diff


def test_plain_bapps_tree_without_manifest(tmp_path):
    ref = _gradient()
    rng = np.random.default_rng(0)
    # subset "same": p0 identical to ref in every triplet
    sub = tmp_path / "2afc" / "val" / "same"
    for i in range(5):
        noisy = ref + (0.05 + 0.02 * i) * rng.standard_normal(ref.shape)
        _write(sub / "ref", f"{i:06d}", _u8(ref))
        _write(sub / "p0", f"{i:06d}", _u8(ref))
        _write(sub / "p1", f"{i:06d}", _u8(noisy))
    # subset "agree": known L2 / SSIM picks and judge labels
    sub2 = tmp_path / "2afc" / "val" / "agree"
    shift = ref + 0.12  # large L2, SSIM barely moved
    fine = ref + 0.03 * rng.standard_normal(ref.shape)  # small L2, SSIM much lower
    strong = ref + 0.3 * rng.standard_normal(ref.shape)
    cases = [  # (p0, p1, h): stem 0 both pick p0; stem 1 L2 picks p1 and SSIM p0
        (ref + 0.01 * rng.standard_normal(ref.shape), strong, 0.2),
        (shift, fine, 0.6),
    ]
    for i, (a, b, h) in enumerate(cases):
        _write(sub2 / "ref", f"{i:06d}", _u8(ref))
        _write(sub2 / "p0", f"{i:06d}", _u8(a))
        _write(sub2 / "p1", f"{i:06d}", _u8(b))
        _label(sub2 / "judge", f"{i:06d}", h)
    # a JND subset: two identical pairs, two clearly different, labels
    sub3 = tmp_path / "jnd" / "val" / "j"
    for i in range(4):
        other = ref if i < 2 else ref + 0.2 * rng.standard_normal(ref.shape)
        _write(sub3 / "p0", f"{i:06d}", _u8(ref))
        _write(sub3 / "p1", f"{i:06d}", _u8(other))
        _label(sub3 / "same", f"{i:06d}", 1.0 if i < 2 else 0.0)

    profiles = {p["subset"]: p for p in profile_dataset(tmp_path)}
    same = profiles["2afc/val/same"]
    assert not same["manifest"] and "families" not in same
    assert same["near_identical"]["p0"] == 1.0 and same["near_identical"]["p1"] == 0.0
    assert same["ratio"]["identical_side"] == 5 and same["ratio"]["quantiles"] is None
    assert same["l2_ssim_agreement"] == 1.0 and "judged" not in same

    agree = profiles["2afc/val/agree"]
    assert agree["l2_ssim_agreement"] == 0.5
    j = agree["judged"]
    assert j["examples"] == 2
    assert j["human"] == pytest.approx(((0.04 + 0.64) + (0.36 + 0.16)) / 2, abs=1e-4)
    assert j["l2"] == pytest.approx((0.8 + 0.6) / 2, abs=1e-4)  # picks p0 (1-h), then p1 (h)
    assert j["ssim"] == pytest.approx((0.8 + 0.4) / 2, abs=1e-4)  # picks p0 both times

    jnd = profiles["jnd/val/j"]
    assert jnd["below_threshold"] == 0.5
    assert jnd["judged"]["mean_same"] == 0.5 and jnd["judged"]["threshold_agrees_with_majority"] == 1.0

    # a subset folder given directly, and the printed form
    direct = profile_dataset(sub)
    assert len(direct) == 1 and direct[0]["near_identical"]["p0"] == 1.0
    res = CliRunner().invoke(main, ["stats", str(tmp_path), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "no manifest: families unknown" in res.output and "p0 100.0%" in res.output
    assert "judged (2): human 60.0%, L2 70.0%, SSIM 60.0%" in res.output


def test_clear_errors(tmp_path):
    res = CliRunner().invoke(main, ["stats", str(tmp_path)])
    assert res.exit_code != 0 and "holds no BAPPS subset" in res.output
    sub = tmp_path / "2afc" / "val" / "x"
    _write(sub / "ref", "000000", _u8(_gradient()))
    _write(sub / "p0", "000000", _u8(_gradient()))
    (sub / "p1").mkdir()
    with pytest.raises(StatsError, match="p1/000000.png is missing"):
        profile_subset("2afc", sub)
