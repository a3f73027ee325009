"""The distort pipeline: determinism, resume, atomic files, the manifest, the loader's view."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import distortions
from bapps_build import BuildConfig, BuildError, run_build
from bapps_build import jobs as jobs_module
from bapps_build.files import read_jsonl, sha256_file
from bapps_build.layout import MANIFEST, PARTS, stem_width, subset_dir
from bapps_build.recipes import render, sample_recipe
from bapps_build.replay import replay_example
from bapps_build.sources import SourceCache, builtin_sources, inspect_source, select_sources
from bapps_build.verify import verify_dataset
from lpips_loader import JNDDataset, TwoAFCDataset

QUIET = dict(progress=False, log=lambda m: None)


def tree_bytes(root):
    """Every file under root except the run-specific report, by relative path."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        if p.is_file() and p.name != "report.json":
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def build(tmp_path, name, workers=1, **kw):
    kw.setdefault("n", 24)
    report = run_build(BuildConfig(**kw), tmp_path / name, workers=workers, **QUIET)
    return report, subset_dir(tmp_path / name, kw.get("task", "2afc"), kw.get("split", "train"),
                              kw.get("subset", "traditional"))


def test_layout_manifest_and_report(tmp_path):
    report, sub = build(tmp_path, "a", n=25, seed=3)
    assert sorted(os.listdir(sub)) == ["build.json", "manifest.jsonl", "p0", "p1", "ref", "report.json",
                                       "sources.json"]
    stems = [f"{i:06d}" for i in range(25)]
    for folder in ("ref", "p0", "p1"):
        assert sorted(os.listdir(sub / folder)) == [s + ".png" for s in stems]
        im = Image.open(sub / folder / "000007.png")
        assert im.size == (64, 64) and im.mode == "RGB"
    records = list(read_jsonl(sub / MANIFEST))
    assert [r["id"] for r in records] == list(range(25))
    for r in records:
        assert r["stem"] == f"{r['id']:06d}" and r["seed"] == 3
        assert r["source"]["path"].startswith("skimage:") and len(r["source"]["sha256"]) == 64
        x0, y0, x1, y1 = r["crop"]["box"]
        # the window cut is the patch with 8 px of context on every side
        assert x1 - x0 == y1 - y0 and r["crop"]["margin"] == 8 and r["crop"]["size"] == 64 + 2 * 8
        assert 0.5 - 1e-9 <= r["crop"]["scale"] * (1 + 1e-9) and r["crop"]["scale"] <= 1.0 + 1e-9
        for key in ("p0", "p1"):
            assert 1 <= len(r[key]) <= 2
            assert len({s["family"] for s in r[key]}) == len(r[key])
            for step in r[key]:
                assert 0 <= step["severity"] <= 1 and isinstance(step["params"], dict)
        for folder, digest in r["files"].items():
            assert sha256_file(sub / folder / f"{r['stem']}.png") == digest
    assert report["examples"] == 25 and report["made_this_run"] == 25
    assert sum(report["family_use"].values()) == sum(len(r["p0"]) + len(r["p1"]) for r in records)
    assert json.loads((sub / "report.json").read_text())["examples"] == 25
    assert not (sub / PARTS).exists() or not any((sub / PARTS).glob("*.partial"))


def test_recipe_depends_only_on_seed_and_index(tmp_path):
    """Example 7 of a 10-example build equals example 7 of a 40-example build, bit for bit."""
    _, small = build(tmp_path, "small", n=10, seed=11)
    _, large = build(tmp_path, "large", n=40, seed=11)
    a = list(read_jsonl(small / MANIFEST))[7]
    b = list(read_jsonl(large / MANIFEST))[7]
    assert a == b
    _, other = build(tmp_path, "other", n=10, seed=12)
    assert list(read_jsonl(other / MANIFEST))[7]["crop"] != a["crop"]


def test_crop_does_not_depend_on_distortion_settings(tmp_path):
    _, a = build(tmp_path, "a", n=8, seed=4)
    _, b = build(tmp_path, "b", n=8, seed=4, families=("jpeg",), max_chain=1)
    for ra, rb in zip(read_jsonl(a / MANIFEST), read_jsonl(b / MANIFEST)):
        assert ra["crop"] == rb["crop"] and ra["source"] == rb["source"]
        assert all(s["family"] == "jpeg" for s in rb["p0"] + rb["p1"])
    assert (a / "ref" / "000003.png").read_bytes() == (b / "ref" / "000003.png").read_bytes()


def test_byte_identical_for_any_worker_count(tmp_path):
    build(tmp_path, "w1", n=45, seed=5, workers=1)
    build(tmp_path, "w2", n=45, seed=5, workers=2)
    one, two = tree_bytes(tmp_path / "w1"), tree_bytes(tmp_path / "w2")
    assert one.keys() == two.keys()
    assert [k for k in one if one[k] != two[k]] == []


def test_chains_replay_from_the_recorded_context(tmp_path):
    """p0/p1 are the recorded chains applied to the recorded context, center kept; ref.png is
    that center. Without a context margin the chains apply to ref.png itself."""
    from bapps_build.recipes import apply_in_context, center, reference_patch

    _, sub = build(tmp_path, "a", n=6, seed=9)
    cache = SourceCache()
    for r in read_jsonl(sub / MANIFEST):
        src = next(s for s in select_sources(
            [inspect_source(p, min_size=64, max_pixels=10**9, flat_threshold=0.015, val_fraction=0.2)
             for p in builtin_sources()], "train")[0] if s.sha256 == r["source"]["sha256"])
        context = reference_patch(r, cache.get(src))
        assert context.shape == (80, 80, 3)
        ref = np.asarray(Image.open(sub / "ref" / f"{r['stem']}.png").convert("RGB"))
        assert np.array_equal(center(context, 8), ref)
        for key in ("p0", "p1"):
            chain = json.loads(json.dumps(r[key]))
            # on the context, center kept; a chain of pointwise families on the bare patch
            redone = distortions.to_uint8(apply_in_context(context.astype(np.float32) / 255, chain, 8))
            on_disk = np.asarray(Image.open(sub / key / f"{r['stem']}.png").convert("RGB"))
            assert np.array_equal(redone, on_disk), (r["id"], key)
    _, flat = build(tmp_path, "b", n=4, seed=9, context_margin=0)
    for r in read_jsonl(flat / MANIFEST):
        assert "margin" not in r["crop"] and r["crop"]["size"] == 64
        ref = np.asarray(Image.open(flat / "ref" / f"{r['stem']}.png").convert("RGB"))
        for key in ("p0", "p1"):
            redone = distortions.to_uint8(distortions.apply_chain(ref, r[key]))
            assert np.array_equal(redone, np.asarray(Image.open(flat / key / f"{r['stem']}.png").convert("RGB")))


def test_replay_and_verify(tmp_path):
    _, sub = build(tmp_path, "a", n=12, seed=2)
    result = replay_example(sub, 5)
    assert result["ok"] and all(e["bytes_equal"] and e["checksum_matches_manifest"]
                                for e in result["folders"].values())
    assert verify_dataset(tmp_path / "a")[0]["problems"] == []
    # a tampered p1 is caught by both
    p = sub / "p1" / "000005.png"
    arr = np.asarray(Image.open(p)).copy()
    arr[0, 0] = 255 - arr[0, 0]
    Image.fromarray(arr).save(p)
    assert not replay_example(sub, 5)["ok"]
    problems = verify_dataset(tmp_path / "a")[0]["problems"]
    assert any("000005.png" in m and "checksum" in m for m in problems)


@pytest.mark.parametrize("damage, expect", [
    (lambda s: (s / "judge").mkdir() or (s / "judge" / "stray.png").write_bytes(b"x"), "judge"),
    (lambda s: (s / "p0" / "000003.png").unlink(), "lacks"),
    (lambda s: (s / "ref" / "000099.png").write_bytes((s / "ref" / "000001.png").read_bytes()), "lacks"),
    (lambda s: (s / "p1" / "notes.jpg").write_bytes(b"x"), ".jpg"),
    (lambda s: (s / "p1" / "deep").mkdir() or (s / "p1" / "deep" / "000001.png").write_bytes(b"x"), "subfolder"),
    (lambda s: (s / "ref" / "1000000.png").write_bytes(b"x"), "widths"),
])
def test_verify_catches_what_would_mispair(tmp_path, damage, expect):
    _, sub = build(tmp_path, "a", n=12, seed=2)
    damage(sub)
    problems = verify_dataset(tmp_path / "a", checksums=False)[0]["problems"]
    assert any(expect in p for p in problems), problems


def test_loader_mirror_pairs_files_with_manifest(tmp_path):
    """What the LPIPS loader reads at position k is exactly example k of the manifest."""
    _, sub = build(tmp_path, "a", n=15, seed=6)
    ds = TwoAFCDataset(str(sub))
    records = list(read_jsonl(sub / MANIFEST))
    assert len(ds) == len(records) == 15
    for k, r in enumerate(records):
        item = ds[k]
        assert [Path(p).stem for p in item["paths"]] == [r["stem"]] * 3
        for key, arr in zip(("ref", "p0", "p1"), (item["ref"], item["p0"], item["p1"])):
            assert arr.shape == (64, 64, 3) and arr.min() >= -1 and arr.max() <= 1
            raw = np.asarray(Image.open(sub / key / f"{r['stem']}.png").convert("RGB"), dtype=np.float32)
            np.testing.assert_allclose(arr, raw / 127.5 - 1.0, atol=1e-6)


def test_jnd_pairs(tmp_path):
    _, sub = build(tmp_path, "j", n=12, seed=1, task="jnd", split="val")
    assert sub == tmp_path / "j" / "jnd" / "val" / "traditional"
    assert sorted(p.name for p in sub.iterdir() if p.is_dir()) == ["p0", "p1"]
    ds = JNDDataset(str(sub))
    assert len(ds) == 12
    records = list(read_jsonl(sub / MANIFEST))
    cache = SourceCache()
    sources = {s.sha256: s for s in select_sources(
        [inspect_source(p, min_size=64, max_pixels=10**9, flat_threshold=0.015, val_fraction=0.2)
         for p in builtin_sources()], "val")[0]}
    for r in records:
        assert r["p0"] == [] and r["p1"]
        # p0 is the reference patch itself
        from bapps_build.recipes import center, reference_patch
        ref = center(reference_patch(r, cache.get(sources[r["source"]["sha256"]])), r["crop"]["margin"])
        assert np.array_equal(np.asarray(Image.open(sub / "p0" / f"{r['stem']}.png")), ref)
    assert verify_dataset(tmp_path / "j")[0]["problems"] == []


def _crash_after(examples):
    """A build_chunk that dies part-way, leaving images of an incomplete chunk and a temp file."""
    real = jobs_module.build_chunk
    state = {"left": examples}

    def chunk(ctx, k, progress=lambda n: None):
        n = len(ctx.chunk_range(k))
        if state["left"] < n:
            out = Path(ctx.out)
            i = ctx.chunk_range(k)[0]
            recipe, ref = sample_recipe(i, ctx.cfg, ctx.families, ctx.sources, SourceCache().get, f"{i:06d}")
            images = render(recipe, ref)
            from bapps_build.files import encode_png, write_atomic
            write_atomic(out / "ref" / f"{i:06d}.png", encode_png(images["ref"]))
            (out / "p0" / f".{i:06d}.png.123.partial").write_bytes(b"\x89PNG half")
            raise KeyboardInterrupt
        state["left"] -= n
        return real(ctx, k, progress)
    return chunk


def test_resume_after_interruption_is_byte_identical(tmp_path, monkeypatch):
    build(tmp_path, "clean", n=50, seed=8)
    monkeypatch.setattr(jobs_module, "build_chunk", _crash_after(25))
    with pytest.raises(BuildError, match="--resume"):
        build(tmp_path, "crashed", n=50, seed=8)
    monkeypatch.undo()
    sub = subset_dir(tmp_path / "crashed", "2afc", "train", "traditional")
    assert not (sub / MANIFEST).exists()
    assert any(sub.rglob("*.partial"))
    with pytest.raises(BuildError, match="already holds an unfinished build"):
        build(tmp_path, "crashed", n=50, seed=8)
    report = run_build(BuildConfig(n=50, seed=8), tmp_path / "crashed", workers=2, resume=True, **QUIET)
    assert 0 < report["already_there"] < 50
    assert not any(sub.rglob("*.partial"))
    assert tree_bytes(tmp_path / "clean") == tree_bytes(tmp_path / "crashed")


def test_resume_refuses_other_settings(tmp_path):
    build(tmp_path, "a", n=10, seed=1)
    with pytest.raises(BuildError) as err:
        run_build(BuildConfig(n=10, seed=1, max_chain=3), tmp_path / "a", workers=1, resume=True, **QUIET)
    assert "--max-chain: 2 in the existing build, 3 now" in str(err.value)
    with pytest.raises(BuildError, match="--n: 10 in the existing build, 11 now"):
        run_build(BuildConfig(n=11, seed=1), tmp_path / "a", workers=1, resume=True, **QUIET)
    # same settings: nothing to do, nothing changes
    before = tree_bytes(tmp_path / "a")
    report = run_build(BuildConfig(n=10, seed=1), tmp_path / "a", workers=1, resume=True, **QUIET)
    assert report["made_this_run"] == 0 and tree_bytes(tmp_path / "a") == before


def test_kill_at_any_moment_then_resume(tmp_path):
    """A real SIGKILL of the whole process group mid-build, then --resume."""
    n, seed = 1200, 21
    clean = tmp_path / "clean"
    run_build(BuildConfig(n=n, seed=seed), clean, workers=2, **QUIET)
    out = tmp_path / "killed"
    sub = subset_dir(out, "2afc", "train", "traditional")
    cmd = [sys.executable, "-m", "bapps_build.cli", "distort", "--n", str(n), "--seed", str(seed),
           "--out", str(out), "--workers", "2", "--quiet"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once some, not all, of the work is on disk
        parts = list((sub / PARTS).glob("chunk-*.jsonl")) if (sub / PARTS).exists() else []
        if len(parts) >= 2:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (sub / MANIFEST).exists(), "the build finished before it could be killed; raise n"
    for png in sub.rglob("*.png"):  # whatever carries an image extension is a whole image
        Image.open(png).load()
    subprocess.run(cmd + ["--resume"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert tree_bytes(clean) == tree_bytes(out)


def test_stem_width_grows_past_a_million():
    assert stem_width(10) == 6 and stem_width(1_000_000) == 6 and stem_width(1_000_001) == 7


def test_flat_patches_are_rejected(tmp_path):
    _, sub = build(tmp_path, "a", n=30, seed=3, flat_threshold=0.05)
    for r in read_jsonl(sub / MANIFEST):
        ref = np.asarray(Image.open(sub / "ref" / f"{r['stem']}.png"), dtype=np.float64)
        luma = ref @ np.array([0.299, 0.587, 0.114])
        assert r["crop"].get("flat_fallback") or luma.std() / 255 >= 0.05 - 1e-6


@pytest.mark.parametrize("shape", [(64, 64, 3), (17, 33, 3), (1, 1, 3), (300, 257, 3)])
def test_photo_png_is_libpng_and_keeps_pixels_and_channel_order(shape):
    import io

    from bapps_build.files import encode_photo_png

    rng = np.random.default_rng(sum(shape))
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    pixels[0, 0] = (255, 0, 0)  # red stays red: OpenCV encodes BGR
    data = encode_photo_png(pixels)
    assert data == encode_photo_png(pixels.copy())
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "RGB" and np.array_equal(np.asarray(im), pixels)
    with pytest.raises(ValueError, match="uint8"):
        encode_photo_png(pixels.astype(np.float32))
    with pytest.raises(ValueError, match="uint8"):
        encode_photo_png(pixels[..., 0])


@pytest.mark.parametrize("shape", [(64, 64, 3), (17, 33, 3), (1, 1, 3), (256, 200, 3)])
def test_png_encoder_round_trips_through_libpng_and_pil(shape):
    import io

    import cv2

    from bapps_build.files import decode_png, encode_png

    rng = np.random.default_rng(sum(shape))
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    data = encode_png(pixels)
    assert data == encode_png(pixels.copy())
    Image.open(io.BytesIO(data)).verify()  # checks the CRCs
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels)
    assert np.array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)[..., ::-1], pixels)
    assert np.array_equal(decode_png(data), pixels)
