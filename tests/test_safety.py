"""Safe outputs, tried as a hostile or unlucky user would: crafted shards and
manifests, a full disk, a foreign folder with --resume, two writers at once, a plugin that
raises in a worker, odd source files, a killed export."""
import errno
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bapps_build import BuildConfig, BuildError, run_build
from bapps_build import files as files_module
from bapps_build import jobs as jobs_module
from bapps_build.cli import main
from bapps_build.export import export_to_shards, export_to_tree
from bapps_build.files import decode_png, encode_png, read_jsonl, write_atomic
from bapps_build.layout import BUILD, MANIFEST, PARTS, subset_dir
from bapps_build.shards import tar_member, TAR_END
from bapps_build.verify import verify_dataset

QUIET = dict(progress=False, log=lambda m: None)
REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def tree_bytes(root, skip=("report.json",)):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*"))
            if p.is_file() and p.name not in skip}


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def sub_of(root, task="2afc", split="train", subset="traditional"):
    return subset_dir(root, task, split, subset)


# ------------------------------------------------------------------ 2. short writes, checked resume


def _full_disk_after(budget):
    """os.write that stores at most `budget` bytes in all, then fails like a full disk (short first)."""
    real = os.write
    state = {"left": budget}

    def write(fd, data):
        if state["left"] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = min(len(data), state["left"])
        state["left"] -= n
        return real(fd, bytes(memoryview(data)[:n]))
    return write


class _OsWith:
    """The os module with another write(), for one module's `os` only: patching os.write itself
    would also be captured by modules imported meanwhile (multiprocessing.connection keeps it)."""

    def __init__(self, write):
        self.write = write

    def __getattr__(self, name):
        return getattr(os, name)


def test_a_short_write_is_never_renamed_into_place(tmp_path, monkeypatch):
    target = tmp_path / "part.jsonl"
    monkeypatch.setattr(files_module, "os", _OsWith(_full_disk_after(53_248)))
    with pytest.raises(OSError) as err:
        write_atomic(target, b"x" * 109_457)
    assert err.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert not target.exists() and os.listdir(tmp_path) == []  # no truncated file, no temp file


def test_a_short_write_fails_an_ingest_transaction(tmp_path, monkeypatch):
    """The labels (write_many) on a full disk: the transaction fails and nothing is renamed into place."""
    from judgments import store
    from judgments.store import Transaction

    txn = Transaction()
    monkeypatch.setattr(store, "os", _OsWith(_full_disk_after(1000)))
    monkeypatch.setattr(files_module, "os", _OsWith(_full_disk_after(1000)))
    with pytest.raises(OSError):
        txn.write_many(tmp_path / "judge", [(f"{i:06d}.npy", b"y" * 132) for i in range(20)])
        txn.commit()
    monkeypatch.undo()
    txn.abort()
    assert os.listdir(tmp_path / "judge") == []


def _disk_fills_during_a_part_file():
    """os.write where the disk fills up while a chunk's manifest part is written: that write is
    short (half), every later one fails with ENOSPC, as on a real full disk."""
    real = os.write
    state = {"full": False}

    def write(fd, data):
        if state["full"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        if re.search(r"chunk-\d+\.jsonl", os.readlink(f"/proc/self/fd/{fd}")):
            state["full"] = True
            return real(fd, bytes(memoryview(data)[: len(data) // 2]))
        return real(fd, data)
    return write


def test_a_build_on_a_full_disk_stops_and_resumes_to_the_same_bytes(tmp_path, monkeypatch):
    clean = tmp_path / "clean"
    run_build(BuildConfig(n=60, seed=4), clean, workers=1, **QUIET)
    out = tmp_path / "full"
    monkeypatch.setattr(files_module, "os", _OsWith(_disk_fills_during_a_part_file()))
    with pytest.raises(BuildError) as err:
        run_build(BuildConfig(n=60, seed=4), out, workers=1, **QUIET)
    monkeypatch.undo()
    assert "No space left on device" in str(err.value) and "--resume" in str(err.value)
    run_build(BuildConfig(n=60, seed=4), out, workers=1, resume=True, **QUIET)
    assert tree_bytes(clean) == tree_bytes(out)
    assert verify_dataset(out)[0]["problems"] == []


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MB tmpfs, where the test may mount one (root, a kernel that allows it); else skipped."""
    mount = tmp_path / "fs"
    mount.mkdir()
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                                                       capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (the patched os.write tests cover the same)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_real_full_file_system(tmp_path, small_tmpfs):
    clean = tmp_path / "clean"
    run_build(BuildConfig(n=120, seed=4), clean, workers=2, **QUIET)
    out = small_tmpfs / "d"
    with pytest.raises(BuildError) as err:
        run_build(BuildConfig(n=120, seed=4), out, workers=2, **QUIET)
    assert "No space left on device" in str(err.value) and "at chunk" in str(err.value), str(err.value)
    assert not (sub_of(out) / MANIFEST).exists()
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_tmpfs)], check=True)
    run_build(BuildConfig(n=120, seed=4), out, workers=2, resume=True, **QUIET)
    assert tree_bytes(clean) == tree_bytes(out)


def _crash_after(n_examples):
    real = jobs_module.build_chunk
    state = {"left": n_examples}

    def chunk(ctx, k, progress=lambda n: None):
        if state["left"] <= 0:
            raise KeyboardInterrupt
        state["left"] -= len(ctx.chunk_range(k))
        return real(ctx, k, progress)
    return chunk


@pytest.mark.parametrize("workers", [1, 2])
def test_resume_checks_each_chunk_before_trusting_it(tmp_path, monkeypatch, workers):
    """A part file cut short (as a full disk left it) and an image changed on disk: both chunks redone."""
    clean = tmp_path / "clean"
    run_build(BuildConfig(n=60, seed=9), clean, workers=1, **QUIET)
    out = tmp_path / "cut"
    monkeypatch.setattr(jobs_module, "build_chunk", _crash_after(40))
    with pytest.raises(BuildError):
        run_build(BuildConfig(n=60, seed=9), out, workers=1, **QUIET)
    monkeypatch.undo()
    monkeypatch.setattr(jobs_module, "CHECK_ON_A_POOL", 1, raising=False)  # 2 workers: checked on the pool
    sub = sub_of(out)
    parts = sorted((sub / PARTS).glob("chunk-*.jsonl"))
    assert len(parts) >= 2
    data = parts[0].read_bytes()
    parts[0].write_bytes(data[: len(data) // 2])  # truncated, as the short write left it
    second = json.loads(parts[1].read_bytes().splitlines()[0])
    (sub / "p1" / f"{second['stem']}.png").write_bytes(b"\x89PNG\r\n\x1a\n not the image")
    logs = []
    run_build(BuildConfig(n=60, seed=9), out, workers=workers, resume=True, progress=False, log=logs.append)
    assert tree_bytes(clean) == tree_bytes(out)
    assert any("redoing chunk 0" in m for m in logs) and any("redoing chunk 1" in m for m in logs)
    assert all(len(json.loads(line)) for line in (sub / MANIFEST).read_text().splitlines())


# ------------------------------------------------------------------ 3. a folder it did not build


def _released_tree(root, n=6):
    sub = sub_of(root, split="val", subset="released")
    for folder in ("ref", "p0", "p1"):
        (sub / folder).mkdir(parents=True)
        for i in range(n):
            (sub / folder / f"{i:06d}.png").write_bytes(f"released {folder} {i}".encode())
    (sub / "judge").mkdir()
    for i in range(n):
        np.save(sub / "judge" / f"{i:06d}.npy", np.array([0.5], np.float32))
    return sub


def test_resume_refuses_a_folder_without_its_build_record(tmp_path):
    _released_tree(tmp_path / "released")
    before = tree_bytes(tmp_path / "released")
    cfg = BuildConfig(n=10, seed=5, split="val", subset="released", val_fraction=1.0)
    with pytest.raises(BuildError, match="no build.json"):
        run_build(cfg, tmp_path / "released", workers=1, resume=True, **QUIET)
    assert tree_bytes(tmp_path / "released") == before
    # a build.json of another tool is no build record either
    sub = sub_of(tmp_path / "released", split="val", subset="released")
    (sub / BUILD).write_text('{"complete": true}')
    with pytest.raises(BuildError, match="not a bapps-build record"):
        run_build(cfg, tmp_path / "released", workers=1, resume=True, **QUIET)
    assert (sub / "ref" / "000000.png").read_bytes() == b"released ref 0"


# ------------------------------------------------------------------ 4. one writer per folder


def _distort_cmd(out, n, seed, *extra):
    return [sys.executable, "-m", "bapps_build.cli", "distort", "--n", str(n), "--seed", str(seed),
            "--out", str(out), "--workers", "1", "--quiet", *extra]


def test_a_resume_beside_a_running_build_is_refused_and_a_dead_holder_is_taken_over(tmp_path):
    out = tmp_path / "busy"
    sub = sub_of(out)
    proc = subprocess.Popen(_distort_cmd(out, 3000, 7), start_new_session=True, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not (sub / BUILD).exists() and time.time() < deadline:
            time.sleep(0.02)
        with pytest.raises(BuildError) as err:
            run_build(BuildConfig(n=3000, seed=7), out, workers=1, resume=True, **QUIET)
        assert f"pid {proc.pid}" in str(err.value) and socket.gethostname() in str(err.value)
        assert proc.poll() is None, "the build finished before the test could try; raise n"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # the holder died (kill -9): its lock is stale, taken over, and the resume finishes the build
    assert (sub.parent / ".traditional.lock").exists()
    report = run_build(BuildConfig(n=3000, seed=7), out, workers=2, resume=True, **QUIET)
    assert report["examples"] == 3000 and not (sub.parent / ".traditional.lock").exists()
    assert verify_dataset(out)[0]["problems"] == []


def test_two_builds_into_one_folder_at_once(tmp_path):
    import cv2

    src = tmp_path / "src"  # enough photos that the scan takes a while: both start before either writes
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        cv2.imwrite(str(src / f"{i:02d}.png"), rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8))
    out = tmp_path / "both"
    procs = [subprocess.Popen(_distort_cmd(out, 400, seed, "--sources", str(src), "--val-fraction", "0"), env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 1], results
    loser = next(err for rc, err in results if rc == 1)
    assert "being written by bapps-build distort" in loser or "already holds" in loser, loser
    assert "Traceback" not in loser
    winner_seed = 1 if results[0][0] == 0 else 2
    assert {r["seed"] for r in read_jsonl(sub_of(out) / MANIFEST)} == {winner_seed}
    assert verify_dataset(out)[0]["problems"] == []


def test_a_lock_from_another_host_is_never_broken(tmp_path):
    out = tmp_path / "shared"
    lock = sub_of(out).parent / ".traditional.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"host": "node-17.cluster", "pid": 1, "time": time.time(), "token": "x",
                                "command": "bapps-build distort"}))
    with pytest.raises(BuildError) as err:
        run_build(BuildConfig(n=10), out, workers=1, **QUIET)
    assert "node-17.cluster" in str(err.value) and f"remove {lock}" in str(err.value)
    assert lock.exists() and not sub_of(out).exists()


_RACE = textwrap.dedent("""
    import sys, time
    from bapps_build.locks import FolderLock, LockError
    start = float(sys.argv[2])
    time.sleep(max(0.0, start - time.time()))
    try:
        lock = FolderLock(sys.argv[1], "race").acquire()
    except LockError:
        print("refused"); sys.exit(0)
    print("won"); sys.stdout.flush()
    time.sleep(4.0)
    lock.release()
""")


@pytest.mark.parametrize("stale", [False, True])
def test_exactly_one_of_many_racing_processes_gets_the_lock(tmp_path, stale):
    folder = tmp_path / "x"
    if stale:  # a lock left by a process that is gone: all racers try to take it over at once
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        (tmp_path / ".x.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid,
                                                      "token": "old", "time": 0}))
    start = time.time() + 6.0  # all started (imports done) before any tries
    procs = [subprocess.Popen([sys.executable, "-c", _RACE, str(folder), str(start)], env=ENV,
                              stdout=subprocess.PIPE, text=True) for _ in range(6)]
    outcomes = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    assert outcomes == ["refused"] * 5 + ["won"], outcomes
    assert not (tmp_path / ".x.lock").exists()


# ------------------------------------------------------------------ 5. the real error


PLUGIN = textwrap.dedent('''
    import numpy as np
    from distortions import Family, register

    def sample(rng, severity):
        return {"k": 1}

    def apply(image, params):
        raise ValueError("plugin boom")

    register(Family("boom", "photometric", sample, apply, {"k": "nothing"}, "always fails"))
''')


@pytest.fixture
def boom_plugin(tmp_path, monkeypatch):
    from distortions import registry

    registry.family_names()  # the built-ins registered before the snapshot, so they survive the undo
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
    monkeypatch.setattr(registry, "_loaded_plugin_files", {})
    path = tmp_path / "boom.py"
    path.write_text(PLUGIN)
    return path


@pytest.mark.parametrize("workers,executor", [(1, "local"), (2, "local"), (2, "dask")])
def test_a_failure_in_a_worker_shows_its_cause_and_example(tmp_path, boom_plugin, workers, executor):
    if executor == "dask":
        pytest.importorskip("distributed")
    cfg = BuildConfig(n=40, families=["boom"], plugins=[str(boom_plugin)])
    with pytest.raises(BuildError) as err:
        run_build(cfg, tmp_path / "d", workers=workers, executor=executor, **QUIET)
    msg = str(err.value)
    assert "ValueError: plugin boom" in msg and "NoneType" not in msg, msg
    assert "at example " in msg and "chunk " in msg, msg
    assert not (sub_of(tmp_path / "d") / MANIFEST).exists()
    # the worker's traceback is kept for a bug report
    from bapps_build.errors import work_error_detail

    assert 'raise ValueError("plugin boom")' in work_error_detail(err.value)


def test_a_dead_worker_is_reported_as_such(tmp_path, boom_plugin):
    boom_plugin.write_text(PLUGIN.replace('raise ValueError("plugin boom")', "import os; os._exit(3)"))
    cfg = BuildConfig(n=40, families=["boom"], plugins=[str(boom_plugin)])
    with pytest.raises(BuildError) as err:
        run_build(cfg, tmp_path / "d", workers=2, **QUIET)
    assert "a worker process died" in str(err.value) and "NoneType" not in str(err.value), str(err.value)


def test_the_cli_shows_a_worker_bug_with_the_worker_traceback(tmp_path, boom_plugin):
    # a ValueError from a family is a bug (not a UserError): its cause, where, and the worker's traceback
    res = cli("distort", "--n", 30, "--out", tmp_path / "c", "--workers", 2, "--quiet", "--plugin", boom_plugin,
              "--families", "boom")
    assert res.exit_code == 1
    assert "Error: the build stopped: " in res.output and "ValueError: plugin boom" in res.output, res.output
    assert 'raise ValueError("plugin boom")' in res.output, res.output


# ------------------------------------------------------------------ 6. tasks reads what the manifest names


def test_tasks_reads_only_the_dataset_own_files(tmp_path):
    from judgments.catalog import resolve_subset
    from judgments.tasks import TaskSettings, build_task_set

    root = tmp_path / "ds"
    run_build(BuildConfig(n=8, split="val", val_fraction=1.0, seed=3), root, workers=1, **QUIET)
    sub = sub_of(root, split="val")
    secret = tmp_path / "private" / "secret"
    secret.parent.mkdir()
    secret.write_bytes(b"the secret")
    shutil.copy(secret, secret.parent / "secret.png")  # what <subset>/ref/<stem>.png becomes for that stem
    lines = (sub / MANIFEST).read_text().splitlines()
    record = json.loads(lines[0])
    record["stem"] = str(secret.parent / "secret-x")[:-2]  # an absolute stem: .../private/secret
    lines[0] = json.dumps(record)
    (sub / MANIFEST).write_text("\n".join(lines) + "\n")
    settings = TaskSettings("generic", 3, 4, 0.0, 0, None, 0, "t")
    with pytest.raises(ValueError, match="not a plain name"):  # refused where the manifest is read
        build_task_set(resolve_subset(root, "2afc/val/traditional"), tmp_path / "tasks", settings)
    published = [p.read_bytes() for p in (tmp_path / "tasks").rglob("*") if p.is_file()]
    assert b"the secret" not in published


def test_tasks_refuses_an_image_that_links_outside_the_dataset(tmp_path):
    from judgments.catalog import resolve_subset
    from judgments.tasks import TaskSettings, build_task_set

    root = tmp_path / "ds"
    run_build(BuildConfig(n=8, split="val", val_fraction=1.0, seed=3), root, workers=1, **QUIET)
    sub = sub_of(root, split="val")
    private = tmp_path / "private.png"
    secret_pixels = np.random.default_rng(5).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    private.write_bytes(encode_png(secret_pixels))  # a valid PNG, but not the dataset's own file
    (sub / "p0" / "000002.png").unlink()
    (sub / "p0" / "000002.png").symlink_to(private)
    settings = TaskSettings("generic", 3, 4, 0.0, 0, None, 0, "t")
    with pytest.raises(ValueError, match="leads outside the dataset"):
        build_task_set(resolve_subset(root, "2afc/val/traditional"), tmp_path / "tasks", settings)
    for published in (tmp_path / "tasks").rglob("*.png"):
        assert not np.array_equal(decode_png(published.read_bytes()), secret_pixels), published


# ------------------------------------------------------------------ 7. odd source files


def test_a_fifo_and_a_link_to_dev_zero_are_skipped_not_read(tmp_path):
    from skimage import data
    from PIL import Image

    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(data.astronaut()).save(src / "photo.png")
    os.mkfifo(src / "fifo.png")
    (src / "zero.png").symlink_to("/dev/zero")
    out = tmp_path / "out"
    proc = subprocess.run(_distort_cmd(out, 10, 1, "--sources", str(src), "--val-fraction", "0"), env=ENV,
                          capture_output=True, text=True, timeout=120)  # the old code hangs here for ever
    assert proc.returncode == 0, proc.stderr
    skipped = {Path(s["path"]).name: s["reason"] for s in json.loads((sub_of(out) / "report.json").read_text())
               ["sources"]["skipped"]}
    assert "FIFO" in skipped["fifo.png"] and "character device" in skipped["zero.png"], skipped
    assert "skipped" in proc.stdout and "fifo.png" in proc.stdout


def test_a_source_over_the_size_limit_is_skipped(tmp_path, monkeypatch):
    from bapps_build import sources

    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * 5000)
    monkeypatch.setattr(sources, "MAX_SOURCE_BYTES", 4096)
    result = sources.inspect_source(str(big), min_size=64, max_pixels=10**8, flat_threshold=0.0, val_fraction=0.0)
    assert "over the limit of 4,096" in result.reason


# ------------------------------------------------------------------ 1. crafted shard sets


def _tar(path, members):
    path.write_bytes(b"".join(tar_member(name, data) for name, data in members) + TAR_END)


@pytest.fixture
def shard_set(tmp_path):
    """A real shard set (export of a small build), to be tampered with."""
    run_build(BuildConfig(n=6, seed=2), tmp_path / "tree", workers=1, **QUIET)
    export_to_shards(tmp_path / "tree", tmp_path / "shards", maxcount=10, workers=1, progress=False)
    folder = sub_of(tmp_path / "shards")
    return folder, json.loads((folder / "index.json").read_text())


def _samples(folder, index):
    with tarfile.open(folder / index["shards"][0]["file"]) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar]


@pytest.mark.parametrize("bad_name", ["{victim}/evil.ref.png", "../../evil.ref.png", "sub/000001.ref.png",
                                      "000001.ref.png/..", "000001.evil.sh", "..\\x.ref.png"])
def test_a_member_name_outside_the_format_is_refused(tmp_path, shard_set, bad_name):
    folder, index = shard_set
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "evil.png").write_bytes(b"precious")
    name = bad_name.format(victim=victim)
    members = _samples(folder, index) + [(name, b"\x89PNG not really")]
    _tar(folder / index["shards"][0]["file"], members)
    index["shards"][0]["samples"] += 1
    (folder / "index.json").write_text(json.dumps(index))
    res = cli("export", tmp_path / "shards", "--format", "bapps", "--out", tmp_path / "back", "--workers", 2,
              "--quiet")
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert index["shards"][0]["file"] in res.output and "member" in res.output, res.output
    assert (victim / "evil.png").read_bytes() == b"precious" and os.listdir(victim) == ["evil.png"]
    assert not sub_of(tmp_path / "back").exists()  # nothing looks complete
    assert not [p for p in (tmp_path / "back").rglob("*") if p.is_file()] if (tmp_path / "back").exists() else True


@pytest.mark.parametrize("key,value", [("split", "../../IDX_ESCAPE"), ("subset", "/abs/IDX_ESCAPE"),
                                       ("subset", ".."), ("task", "../x")])
def test_index_values_that_escape_the_layout_are_refused(tmp_path, shard_set, key, value):
    folder, index = shard_set
    index[key] = value
    (folder / "index.json").write_text(json.dumps(index))
    with pytest.raises(BuildError, match=key):
        export_to_tree(tmp_path / "shards", tmp_path / "out" / "tree", workers=1, progress=False)
    assert not list(tmp_path.rglob("IDX_ESCAPE")) and not (tmp_path / "out").exists()


def test_an_index_naming_a_shard_outside_its_folder_is_refused(tmp_path, shard_set):
    folder, index = shard_set
    outside = tmp_path / "outside.tar"
    shutil.copy(folder / index["shards"][0]["file"], outside)
    index["shards"][0]["file"] = "../../../outside.tar"
    (folder / "index.json").write_text(json.dumps(index))
    with pytest.raises(BuildError, match="not a plain .tar name"):
        export_to_tree(tmp_path / "shards", tmp_path / "back", workers=1, progress=False)


def test_a_member_claiming_a_huge_size_is_refused(tmp_path, shard_set):
    folder, index = shard_set
    header = bytearray(tar_member("000000.ref.png", b"")[:512])
    header[124:136] = b"%011o\0" % (2**33 - 1)  # 8 GiB, the most ustar can say; then the file ends
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    (folder / index["shards"][0]["file"]).write_bytes(bytes(header) + b"\0" * 4096)
    res = cli("export", tmp_path / "shards", "--format", "bapps", "--out", tmp_path / "back", "--workers", 1,
              "--quiet")
    assert res.exit_code == 1 and "Traceback" not in res.output and "MemoryError" not in res.output, res.output
    assert "claims" in res.output and "000000.ref.png" in res.output, res.output


def test_a_corrupt_index_names_the_file(tmp_path, shard_set):
    folder, _ = shard_set
    (folder / "index.json").write_text('{"shards": [')
    res = cli("export", tmp_path / "shards", "--format", "bapps", "--out", tmp_path / "back", "--quiet")
    assert res.exit_code == 1 and str(folder / "index.json") in res.output and "Traceback" not in res.output


# ------------------------------------------------------------------ 8. a killed export


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("big") / "tree"
    run_build(BuildConfig(n=1500, seed=6), root, workers=2, **QUIET)
    return root


@pytest.mark.parametrize("direction", ["webdataset", "bapps"])
def test_a_killed_export_leaves_nothing_that_looks_complete_and_runs_again(tmp_path, big_tree, direction):
    if direction == "webdataset":
        source = big_tree
    else:
        source = tmp_path / "shards"
        export_to_shards(big_tree, source, maxcount=10, workers=2, progress=False)
    clean = tmp_path / "clean"
    (export_to_shards(source, clean, maxcount=5, workers=1, progress=False) if direction == "webdataset"
     else export_to_tree(source, clean, workers=1, progress=False))
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "bapps_build.cli", "export", str(source), "--format", direction, "--out", str(out),
           "--workers", "1", "--quiet"] + (["--maxcount", "5"] if direction == "webdataset" else [])
    proc = subprocess.Popen(cmd, start_new_session=True, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    stage = sub_of(out).parent / ".traditional.export.partial"
    deadline = time.time() + 120
    while time.time() < deadline:
        if stage.exists() and sum(1 for _ in stage.rglob("*.*")) >= 40:
            break
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not sub_of(out).exists(), "the export finished before it could be killed; raise n"
    subprocess.run(cmd, check=True, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert tree_bytes(clean) == tree_bytes(out)
    # and once more: the complete export is checked and left alone
    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    assert res.returncode == 0 and "already exported" in res.stderr


# ------------------------------------------------------------------ 9. messages


def test_a_finished_build_never_fails_on_a_name_the_terminal_cannot_show(tmp_path):
    from skimage import data
    from PIL import Image

    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(data.astronaut()).save(src / "photo.png")
    (src / "café-broken.png").write_bytes(b"not an image")
    with open(os.fsencode(src) + b"/bad\xff.png", "wb") as f:  # a name that is not UTF-8
        f.write(b"junk")
    out = tmp_path / "out"
    proc = subprocess.run(_distort_cmd(out, 5, 1, "--sources", str(src), "--val-fraction", "0"),
                          env={**ENV, "PYTHONIOENCODING": "ascii"}, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert b"caf\\xe9-broken.png" in proc.stdout and b"bad\\udcff.png" in proc.stdout, proc.stdout


def test_an_over_long_id_is_not_echoed_whole(tmp_path):
    root = tmp_path / "ds"
    run_build(BuildConfig(n=2, split="val", val_fraction=1.0, seed=3), root, workers=1, **QUIET)
    results = tmp_path / "r.jsonl"
    results.write_text(json.dumps({"worker": "A", "assignment": "a", "item": "x" * 5_000_000, "response": "p1"})
                       + "\n")
    res = cli("ingest", results, "--dataset", root)
    assert res.exit_code == 1 and "xxxxxxxx" in res.output, res.output[:500]
    assert len(res.output) < 10_000, len(res.output)


def test_a_corrupt_manifest_line_is_named_on_export(tmp_path):
    run_build(BuildConfig(n=6, seed=2), tmp_path / "tree", workers=1, **QUIET)
    manifest = sub_of(tmp_path / "tree") / MANIFEST
    lines = manifest.read_text().splitlines()
    lines[3] = lines[3][:40]
    manifest.write_text("\n".join(lines) + "\n")
    res = cli("export", tmp_path / "tree", "--format", "webdataset", "--out", tmp_path / "s", "--quiet")
    assert res.exit_code == 1 and f"{manifest}, line 4" in res.output and "Traceback" not in res.output, res.output


def test_ingest_never_writes_or_removes_labels_outside_the_subset(tmp_path):
    from judgments.ingest import ingest_files

    root = tmp_path / "ds"
    run_build(BuildConfig(n=2, split="val", val_fraction=1.0, seed=3), root, workers=1, **QUIET)
    sub = sub_of(root, split="val")
    victim = tmp_path / "victim.npy"
    victim.write_bytes(b"precious")
    lines = (sub / MANIFEST).read_text().splitlines()
    lines[1] = json.dumps({**json.loads(lines[1]), "stem": str(victim)[:-4]})
    (sub / MANIFEST).write_text("\n".join(lines) + "\n")
    # a task record whose trial X1 is that example: a label for it would be written as <stem>.npy
    (sub / "judgments" / "tasks").mkdir(parents=True)
    (sub / "judgments" / "tasks" / "t.json").write_text(json.dumps({
        "name": "t", "subset": "2afc/val/traditional", "task": "2afc",
        "items": {"X0": {"kind": "test", "stem": "000000"}, "X1": {"kind": "test", "stem": str(victim)[:-4]}}}))
    results = tmp_path / "lab.csv"
    results.write_text("worker,assignment,item,response,side,time_ms,status\nA,a1,X0,p1,,900,\nA,a1,X1,p1,,900,\n")
    with pytest.raises(ValueError, match="not a plain name"):
        ingest_files([results], root, partial_labels=True)
    assert victim.read_bytes() == b"precious" and not (sub / "judge").exists()


def test_an_ingest_beside_a_writer_of_the_subset_is_refused(tmp_path):
    from bapps_build.locks import FolderLock
    from judgments.ingest import IngestError, ingest_files

    root = tmp_path / "ds"
    run_build(BuildConfig(n=6, split="val", val_fraction=1.0, seed=3), root, workers=1, **QUIET)
    sub = sub_of(root, split="val")
    results = tmp_path / "lab.csv"
    results.write_text("worker,assignment,item,response,side,time_ms,status\n"
                       "A,a1,2afc/val/traditional/000000,p1,,900,\n")
    before = tree_bytes(root)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom bapps_build.locks import FolderLock\n"
                               f"FolderLock({str(sub)!r}, 'bapps-build distort').acquire()\nprint('held', flush=True)\n"
                               "time.sleep(60)"], env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(IngestError, match=f"pid {holder.pid}"):
            ingest_files([results], root, partial_labels=True)
    finally:
        holder.kill()
        holder.wait()
    assert {k: v for k, v in tree_bytes(root).items() if "lock" not in k} == before
    ingest_files([results], root, partial_labels=True)  # the holder is gone: its stale lock is taken over
    assert (sub / "judgments" / "rows.tsv").exists()


def test_a_fifo_inside_an_exported_tree_does_not_hang_the_export(tmp_path):
    run_build(BuildConfig(n=6, seed=1), tmp_path / "t", workers=1, **QUIET)
    fifo = sub_of(tmp_path / "t") / "p0" / "000002.png"
    fifo.unlink()
    os.mkfifo(fifo)
    cmd = [sys.executable, "-m", "bapps_build.cli", "export", str(tmp_path / "t"), "--format", "webdataset", "--out",
           str(tmp_path / "s"), "--workers", "1", "--quiet"]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)  # the old code hangs here
    assert proc.returncode == 1 and "FIFO" in proc.stderr and str(fifo) in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not sub_of(tmp_path / "s").exists()
