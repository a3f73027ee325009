"""Training shards, real-algorithm triplets and the Dask executor."""
import hashlib
import io
import json
import os
import signal
import tarfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from bapps_build import BuildConfig, run_build
from bapps_build.export import export_to_shards, export_to_tree
from bapps_build.files import encode_photo_png, encode_png, read_jsonl, read_png
from bapps_build.layout import MANIFEST, subset_dir
from bapps_build.real import RealConfig, match_outputs, run_real
from bapps_build.replay import replay_example
from bapps_build.shards import INDEX, read_shard, sample_bytes, tar_header, tar_member, write_shard
from bapps_build.verify import verify_dataset
import judgments  # noqa: F401  (registers the judgment counts that export carries in shards)

QUIET = dict(progress=False, log=lambda m: None)


def tree_files(root, skip=("report.json", "build.json", "sources.json")):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*"))
            if p.is_file() and p.name not in skip}


@pytest.fixture(scope="module")
def labelled_tree(tmp_path_factory):
    """A small 2AFC tree with judge/ labels, as ingest writes them."""
    root = tmp_path_factory.mktemp("tree")
    run_build(BuildConfig(n=23, seed=3), root, workers=1, **QUIET)
    sub = subset_dir(root, "2afc", "train", "traditional")
    (sub / "judge").mkdir()
    (sub / "judgments").mkdir()
    lines = ["stem,n_p1,n_total,fraction\n"]
    for r in read_jsonl(sub / MANIFEST):
        np.save(sub / "judge" / f"{r['stem']}.npy", np.array([(r["id"] % 3) / 2], dtype=np.float32))
        lines.append(f"{r['stem']},{r['id'] % 3},2,{(r['id'] % 3) / 2}\n")
    (sub / "judgments" / "counts.csv").write_text("".join(lines))  # as `ingest` writes it
    return root


def test_tar_headers_are_standard():
    """Our hand-made headers read back with tarfile, with the fixed metadata."""
    blob = tar_member("000001.ref.png", b"abc") + b"\0" * 1024
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        [m] = tar.getmembers()
        assert (m.name, m.size, m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == \
            ("000001.ref.png", 3, 946684800, 0, 0, "", "", 0o644)
        assert tar.extractfile(m).read() == b"abc"
    with pytest.raises(ValueError, match="dots"):
        sample_bytes("a.b", {"json": b"{}"})


def _ustar_header_by_the_book(name: str, size: int) -> bytes:
    """A POSIX ustar header laid out field by field, as shards were written before tarfile made them."""
    header = bytearray(512)
    header[0:len(name)] = name.encode()
    for start, width, value in ((100, 8, 0o644), (108, 8, 0), (116, 8, 0), (124, 12, size), (136, 12, 946684800)):
        header[start:start + width] = b"%0*o\0" % (width - 1, value)
    header[148:156] = b" " * 8
    header[156:157] = b"0"  # a regular file
    header[257:265] = b"ustar\x0000"
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


@pytest.mark.parametrize("name,size", [("000001.ref.png", 3), ("a.json", 0), ("x" * 90 + ".judge.npy", 2**33 - 1),
                                       ("000123.p1.png", 512), ("k-1_b.json", 12345)])
def test_tar_headers_keep_their_bytes(name, size):
    """tarfile writes the same bytes as the field-by-field layout shards were recorded with:
    no device numbers, no owner names, no pax or GNU extension records."""
    assert tar_header(name, size) == _ustar_header_by_the_book(name, size)
    member = tar_member(name, b"x" * min(size, 700))
    assert len(member) % 512 == 0 and member.startswith(tar_header(name, min(size, 700)))
    with pytest.raises(ValueError, match="too long"):
        tar_header("x" * 93 + ".ref.png", 1)


def test_a_shard_ends_with_two_zero_blocks_not_a_padded_record(tmp_path):
    """POSIX's end of archive and nothing more: TarFile would pad to 10 KiB and change every shard's hash."""
    info = write_shard(tmp_path / "s.tar", [("000000", {"ref.png": b"abc", "json": b"{}"}),
                                           ("000001", {"ref.png": b"d" * 600})])
    data = (tmp_path / "s.tar").read_bytes()
    assert len(data) == info["bytes"] == 512 * (2 + 2 + 3) + 1024 and data.endswith(b"\0" * 1024)
    assert info["sha256"] == hashlib.sha256(data).hexdigest()
    assert [(k, sorted(f)) for k, f in read_shard(tmp_path / "s.tar", strict=True)] == \
        [("000000", ["json", "ref.png"]), ("000001", ["ref.png"])]


def test_shards_read_back_with_webdataset_equal_the_tree(labelled_tree, tmp_path):
    import webdataset as wds

    summary = export_to_shards(labelled_tree, tmp_path / "shards", maxcount=10, workers=1, progress=False)
    assert summary["examples"] == 23
    out = tmp_path / "shards" / "2afc" / "train" / "traditional"
    index = json.loads((out / INDEX).read_text())
    assert [s["file"] for s in index["shards"]] == [f"2afc-train-traditional-00000{k}.tar" for k in range(3)]
    assert [s["samples"] for s in index["shards"]] == [10, 10, 3] and index["samples"] == 23
    sub = subset_dir(labelled_tree, "2afc", "train", "traditional")
    urls = [str(out / s["file"]) for s in index["shards"]]
    seen = 0
    for sample in wds.WebDataset(urls, shardshuffle=False):
        key = sample["__key__"]
        for f in ("ref", "p0", "p1"):
            assert sample[f"{f}.png"] == (sub / f / f"{key}.png").read_bytes()
        assert sample["judge.npy"] == (sub / "judge" / f"{key}.npy").read_bytes()
        meta = json.loads(sample["json"])
        assert meta["recipe"]["stem"] == key
        assert meta["counts"] == {"n_p1": meta["recipe"]["id"] % 3, "n_total": 2}
        seen += 1
    assert seen == 23


def test_dataloader_in_a_few_lines(labelled_tree, tmp_path):
    """The reading recipe of docs/export.md, exactly."""
    torch = pytest.importorskip("torch")
    import webdataset as wds

    export_to_shards(labelled_tree, tmp_path / "shards", maxcount=10, workers=1, progress=False)
    urls = sorted(str(p) for p in (tmp_path / "shards").rglob("*.tar"))
    dataset = (wds.WebDataset(urls, shardshuffle=False)
               .decode("torchrgb")
               .to_tuple("ref.png", "p0.png", "p1.png", "judge.npy"))
    loader = torch.utils.data.DataLoader(dataset.batched(8), batch_size=None, num_workers=0)
    batches = list(loader)
    ref, p0, p1, judge = batches[0]
    assert ref.shape == (8, 3, 64, 64) and ref.dtype == torch.float32 and 0 <= ref.min() and ref.max() <= 1
    assert judge.shape == (8, 1)
    assert sum(b[0].shape[0] for b in batches) == 23


def test_shards_are_byte_reproducible(labelled_tree, tmp_path):
    export_to_shards(labelled_tree, tmp_path / "a", maxcount=7, workers=1, progress=False)
    export_to_shards(labelled_tree, tmp_path / "b", maxcount=7, workers=2, progress=False)
    assert tree_files(tmp_path / "a") == tree_files(tmp_path / "b")
    index = json.loads((tmp_path / "a/2afc/train/traditional" / INDEX).read_text())
    import hashlib
    for s in index["shards"]:
        assert hashlib.sha256((tmp_path / "a/2afc/train/traditional" / s["file"]).read_bytes()).hexdigest() == s["sha256"]


def test_tree_to_shards_to_tree_round_trip(labelled_tree, tmp_path):
    export_to_shards(labelled_tree, tmp_path / "shards", maxcount=10, workers=2, progress=False)
    export_to_tree(tmp_path / "shards", tmp_path / "back", workers=2, progress=False)
    assert tree_files(labelled_tree) == tree_files(tmp_path / "back")
    assert verify_dataset(tmp_path / "back")[0]["problems"] == []


def test_stored_size_256(labelled_tree, tmp_path):
    export_to_shards(labelled_tree, tmp_path / "shards", workers=1, progress=False)
    export_to_tree(tmp_path / "shards", tmp_path / "big", stored_size=256, workers=1, progress=False)
    sub = tmp_path / "big/2afc/train/traditional"
    im = Image.open(sub / "p0" / "000004.png")
    assert im.size == (256, 256)
    assert verify_dataset(tmp_path / "big")[0]["problems"] == []
    replayed = replay_example(sub, 4)
    assert replayed["ok"]  # compared at the stored size
    assert all(e["bytes_equal"] and e["checksum_matches_manifest"] for e in replayed["folders"].values())
    # a full-size image goes through libpng, not the patch encoder
    pixels = read_png(sub / "p0" / "000004.png")
    assert (sub / "p0" / "000004.png").read_bytes() == encode_photo_png(pixels) != encode_png(pixels)
    # the LPIPS loader's resize to 64 gives back (nearly) the 64-pixel patch
    small = np.asarray(im.convert("RGB").resize((64, 64), Image.BILINEAR), dtype=float)
    orig = np.asarray(Image.open(subset_dir(labelled_tree, "2afc", "train", "traditional") / "p0/000004.png"),
                      dtype=float)
    assert np.corrcoef(small.ravel(), orig.ravel())[0, 1] > 0.9


def test_distort_writes_shards_directly(tmp_path):
    run_build(BuildConfig(n=25, seed=2, format="webdataset", maxcount=10), tmp_path / "w", workers=2, **QUIET)
    run_build(BuildConfig(n=25, seed=2), tmp_path / "t", workers=1, **QUIET)
    shards = subset_dir(tmp_path / "w", "2afc", "train", "traditional")
    tree = subset_dir(tmp_path / "t", "2afc", "train", "traditional")
    assert sorted(p.name for p in shards.glob("*.tar")) == [f"2afc-train-traditional-00000{k}.tar" for k in range(3)]
    assert (shards / MANIFEST).read_bytes() == (tree / MANIFEST).read_bytes()
    keys = []
    for tar in sorted(shards.glob("*.tar")):
        for key, fields in read_shard(tar):
            keys.append(key)
            for f in ("ref", "p0", "p1"):
                assert fields[f"{f}.png"] == (tree / f / f"{key}.png").read_bytes()
    assert keys == [f"{i:06d}" for i in range(25)]
    assert verify_dataset(tmp_path / "w")[0]["problems"] == []
    assert replay_example(shards, 13)["ok"]
    # the same build again: the same shard bytes
    run_build(BuildConfig(n=25, seed=2, format="webdataset", maxcount=10), tmp_path / "w2", workers=1, **QUIET)
    assert tree_files(tmp_path / "w") == tree_files(tmp_path / "w2")


# ---------------------------------------------------------------- real-algorithm triplets


@pytest.fixture
def algorithm_outputs(tmp_path):
    from skimage import data

    gt, a, b, c = (tmp_path / n for n in ("gt", "bicubic", "lanczos", "nearest"))
    for d in (gt, a, b, c):
        d.mkdir()
    for name, img in (("astro", data.astronaut()[:200, :240]), ("coffee", data.coffee()[:180, :220]),
                      ("cat", data.chelsea()[:150, :200])):
        Image.fromarray(img).save(gt / f"{name}.png")
        h, w = img.shape[:2]
        small = cv2.resize(img, (w // 4, h // 4), interpolation=cv2.INTER_AREA)
        Image.fromarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)).save(a / f"{name}.png")
        if name != "cat":  # cat: only bicubic and nearest
            Image.fromarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_LANCZOS4)).save(b / f"{name}.jpg")
        if name == "coffee":  # a mismatched size
            Image.fromarray(img[:-2]).save(c / f"{name}.png")
        else:
            Image.fromarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)).save(c / f"{name}.png")
    Image.fromarray(data.rocket()[:100, :100]).save(c / "orphan.png")
    (gt / "lonely.png").write_bytes((gt / "cat.png").read_bytes())  # no algorithm output at all
    return gt, [a, b, c]


def test_real_triplets_with_missing_and_mismatched_files(algorithm_outputs, tmp_path):
    gt, outputs = algorithm_outputs
    images, problems = match_outputs(gt, outputs, min_size=64)
    reasons = {(Path(p["path"]).name, p["reason"].split(" ")[0]) for p in problems}
    assert ("coffee.png", "size") in reasons            # nearest/coffee.png is two rows short
    assert ("cat.png", "no") in reasons                  # no output of lanczos for cat
    assert ("orphan.png", "no") in reasons               # an output without a reference
    assert ("lonely.png", "only") in reasons             # fewer than two algorithms
    by_stem = {im.stem: [a for a, _ in im.outputs] for im in images}
    assert by_stem == {"astro": ["bicubic", "lanczos", "nearest"], "coffee": ["bicubic", "lanczos"],
                       "cat": ["bicubic", "nearest"]}

    report = run_real(RealConfig(n=40, name="superres", seed=5), gt, outputs, tmp_path / "ds", workers=2, **QUIET)
    sub = tmp_path / "ds/2afc/val/superres"
    assert report["examples"] == 40 and len(report["sources"]["skipped"]) == len(problems)
    records = list(read_jsonl(sub / MANIFEST))
    for r in records:
        # p0 and p1 are one step each of family "real" (manifest schema 2)
        [p0], [p1] = r["p0"], r["p1"]
        assert p0["family"] == p1["family"] == "real" and set(p0) == {"family", "params"}
        p0, p1 = p0["params"], p1["params"]
        assert p0["algorithm"] != p1["algorithm"]
        stem = Path(r["source"]["path"]).stem
        assert p0["algorithm"] in by_stem[stem] and p1["algorithm"] in by_stem[stem]
        # the three crops are aligned: the same box of the reference and of the outputs
        x0, y0, x1, y1 = r["crop"]["box"]
        ref_full = np.asarray(Image.open(r["source"]["path"]).convert("RGB"))
        expect = ref_full[y0:y1, x0:x1]
        assert np.array_equal(np.asarray(Image.open(sub / "ref" / f"{r['stem']}.png")), expect)
        out_full = np.asarray(Image.open(p1["path"]).convert("RGB"))
        assert np.array_equal(np.asarray(Image.open(sub / "p1" / f"{r['stem']}.png")), out_full[y0:y1, x0:x1])
    assert verify_dataset(tmp_path / "ds")[0]["problems"] == []
    assert replay_example(sub, 17)["ok"]
    # byte-identical with one worker
    run_real(RealConfig(n=40, name="superres", seed=5), gt, outputs, tmp_path / "ds1", workers=1, **QUIET)
    assert tree_files(tmp_path / "ds") == tree_files(tmp_path / "ds1")


def test_real_needs_two_algorithms(algorithm_outputs, tmp_path):
    from bapps_build.sources import SourceError

    gt, outputs = algorithm_outputs
    with pytest.raises(SourceError, match="at least two"):
        match_outputs(gt, outputs[:1], min_size=64)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="two usable algorithm outputs"):
        run_real(RealConfig(n=5, name="x"), empty, outputs, tmp_path / "o", workers=1, **QUIET)


def test_real_with_rescale(algorithm_outputs, tmp_path):
    gt, outputs = algorithm_outputs
    run_real(RealConfig(n=20, name="deblur", scale_range=(0.5, 0.9)), gt, outputs, tmp_path / "ds", workers=1,
             **QUIET)
    for r in read_jsonl(tmp_path / "ds/2afc/val/deblur" / MANIFEST):
        assert 0.5 - 0.02 <= r["crop"]["scale"] <= 0.9 + 0.02 and r["crop"]["box"][2] - r["crop"]["box"][0] > 64


# ---------------------------------------------------------------- Dask


def test_dask_local_cluster_equals_local_build(tmp_path):
    pytest.importorskip("distributed")
    run_build(BuildConfig(n=30, seed=4), tmp_path / "local", workers=2, **QUIET)
    report = run_build(BuildConfig(n=30, seed=4), tmp_path / "dask", workers=2, executor="dask", **QUIET)
    assert report["executor"] == "dask"
    assert tree_files(tmp_path / "local") == tree_files(tmp_path / "dask")


def test_dask_worker_killed_mid_range_loses_nothing(tmp_path):
    """Kill a worker process while it writes its range: Dask reruns the range, same bytes."""
    distributed = pytest.importorskip("distributed")
    n, seed = 600, 6
    run_build(BuildConfig(n=n, seed=seed), tmp_path / "local", workers=2, **QUIET)
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=50)
    client = distributed.Client(cluster)
    try:
        pids = list(client.run(os.getpid).values())
        result, error = {}, {}

        def build():
            try:
                result["report"] = run_build(BuildConfig(n=n, seed=seed), tmp_path / "dask", workers=2,
                                             executor="dask", scheduler=cluster.scheduler_address, **QUIET)
            except Exception as exc:  # reported below
                error["exc"] = exc

        thread = threading.Thread(target=build)
        thread.start()
        ref_dir = subset_dir(tmp_path / "dask", "2afc", "train", "traditional") / "ref"
        deadline = time.time() + 120
        while time.time() < deadline:
            made = len(list(ref_dir.glob("*.png"))) if ref_dir.exists() else 0
            if made >= n // 8:
                break
            time.sleep(0.02)
        assert made < n, "the build finished before a worker could be killed; raise n"
        os.kill(pids[0], signal.SIGKILL)
        thread.join(timeout=300)
        assert not thread.is_alive()
        assert "exc" not in error, error
    finally:
        client.close()
        cluster.close()
    assert tree_files(tmp_path / "local") == tree_files(tmp_path / "dask")
    assert not list((tmp_path / "dask").rglob("*.partial"))


def test_export_through_dask(labelled_tree, tmp_path):
    pytest.importorskip("distributed")
    export_to_shards(labelled_tree, tmp_path / "local", maxcount=10, workers=1, progress=False)
    export_to_shards(labelled_tree, tmp_path / "dask", maxcount=10, workers=2, executor="dask", progress=False)
    assert tree_files(tmp_path / "local") == tree_files(tmp_path / "dask")
