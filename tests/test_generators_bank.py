"""Generator banks: training (loss goes down, resume, divergence, VGG), checkpoints, CLI."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from generators.bank import Bank, CheckpointError, load_generator, sample_bank  # noqa: E402
from generators.cli import generators as generators_cli  # noqa: E402
from generators.training import TrainSettings, TrainingPatches, train_bank  # noqa: E402
from test_generators import write_vgg_checkpoint  # noqa: E402

QUIET = dict(progress=False, log=lambda m: None)


def tiny(**over):
    """Fields of a small, fast network; over replaces any section's fields."""
    c = {"corruption": {"kind": "null"},
         "generator": {"layers": 2, "skips": 1, "force_skip_top": False, "dropout_layers": 0,
                       "upsampling": "nearest_conv", "norm": "batch", "first_stride": 1, "first_channels": 8,
                       "max_channels": 16},
         "discriminator": {"layers": 0},
         "loss": {"l1_weight": 10.0, "vgg_weight": 0.0, "adversarial_weight": 0.0, "learning_rate": 2e-3}}
    for section, fields in over.items():
        if isinstance(fields, dict) and section != "corruption":
            c[section] = {**c[section], **fields}
        else:
            c[section] = fields
    return c


def make_bank(path, variants, seed=0):
    """A bank whose configs are replaced by the given small variants."""
    bank = sample_bank(path, len(variants), seed)
    for name, v in zip(bank.names, variants):
        config = json.loads((bank.path / f"{name}.json").read_text())
        config.update(v)
        (bank.path / f"{name}.json").write_text(json.dumps(config))
    return Bank(path)


def settings(**kw):
    base = dict(steps=3, batch_size=2, patch_size=32, device="cpu", checkpoint_every=2, no_vgg=True)
    base.update(kw)
    return TrainSettings(**base)


def state_dict_of(bank, name):
    return torch.load(bank.checkpoint_path(name), weights_only=True)["state_dict"]


# ------------------------------------------------------------------ training


def test_short_training_lowers_the_l1_loss(tmp_path):
    from generators.networks import Generator

    bank = make_bank(tmp_path / "b", [tiny()])
    s = settings(steps=30, batch_size=4)
    config = bank.config("net-000")
    patches = TrainingPatches(s)
    x, y = patches.batch(config, 10_000)  # a batch the training never sees
    xt, yt = (torch.from_numpy(a.transpose(0, 3, 1, 2).copy()) for a in (x, y))
    torch.manual_seed(config["seed"])
    before = Generator(config).eval()
    summary = train_bank(bank.path, s, **QUIET)
    assert summary["trained"] == ["net-000"] and not summary["failed"]
    after = load_generator(bank.checkpoint_path("net-000"), config)
    with torch.no_grad():
        l1_before = float((before(xt) - yt).abs().mean())
        l1_after = float((after(xt) - yt).abs().mean())
    assert l1_after < 0.7 * l1_before
    st = bank.status("net-000")
    assert st["state"] == "done" and st["steps_done"] == 30 and st["l1_last"] < st["l1_first"]
    assert not bank.resume_path("net-000").exists()


def test_training_batches_are_deterministic_and_cut_like_distort(tmp_path):
    bank = make_bank(tmp_path / "b", [tiny(corruption={"kind": "white_noise", "sigma_min": 0.1, "sigma_max": 0.1})])
    s = settings(batch_size=3)
    config = bank.config("net-000")
    a, b = TrainingPatches(s), TrainingPatches(s)
    x1, y1 = a.batch(config, 5)
    x2, y2 = b.batch(config, 5)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert x1.shape == (3, 32, 32, 3) and x1.dtype == np.float32
    assert 0.05 < float(np.std(x1 - y1)) < 0.15  # the corruption is applied to the clean target
    assert not np.array_equal(a.batch(config, 6)[1], y1)
    assert all(src.split == "train" for src in a.sources)  # never the val images


def test_epochs_use_every_source_once_per_epoch(tmp_path):
    bank = make_bank(tmp_path / "b", [tiny()])
    s = settings(steps=None, epochs=2, batch_size=4)
    patches = TrainingPatches(s)
    n = len(patches.sources)
    assert patches.steps_total() == 2 * math.ceil(n / 4)
    seed = bank.config("net-000")["seed"]
    for epoch in range(2):
        used = []
        for k in range(patches.steps_per_epoch()):
            for j in range(4):
                slot = patches._slot(seed, epoch * patches.steps_per_epoch() + k, j)
                if slot is not None:
                    used.append(slot[1][0].sha256)
        assert sorted(used) == sorted(s.sha256 for s in patches.sources)


def test_resume_after_interruption_equals_an_uninterrupted_run(tmp_path):
    variant = tiny(generator={"dropout_layers": 1}, discriminator={"layers": 1},
                   loss={"adversarial_weight": 0.1}, corruption={"kind": "pink_noise", "sigma_min": 0.05,
                                                                 "sigma_max": 0.2})
    whole = make_bank(tmp_path / "whole", [variant])
    cut = make_bank(tmp_path / "cut", [variant])
    s = settings(steps=6, checkpoint_every=2)
    train_bank(whole.path, s, **QUIET)

    def interrupt(name, step):
        if step == 5:  # after the state saved at step 4
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_bank(cut.path, s, on_step=interrupt, **QUIET)
    st = cut.status("net-000")
    assert st["state"] == "training" and st["steps_done"] == 4 and cut.resume_path("net-000").exists()
    assert not cut.checkpoint_path("net-000").exists()
    logs = []
    train_bank(cut.path, s, progress=False, log=logs.append)
    assert any("resuming at step 4" in m for m in logs)
    a, b = state_dict_of(whole, "net-000"), state_dict_of(cut, "net-000")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # a finished network is skipped by the next run
    again = train_bank(cut.path, s, **QUIET)
    assert again["trained"] == [] and again["skipped"] == {"net-000": "done"}


def test_a_diverging_network_is_marked_failed_and_the_others_go_on(tmp_path, monkeypatch):
    bank = make_bank(tmp_path / "b", [tiny(), tiny(generator={"norm": "none"}), tiny()])
    real_batch = TrainingPatches.batch

    def poisoned(self, config, step):
        x, y = real_batch(self, config, step)
        if config["name"] == "net-001" and step == 1:
            x = x * np.float32(np.nan)
        return x, y

    monkeypatch.setattr(TrainingPatches, "batch", poisoned)
    summary = train_bank(bank.path, settings(), **QUIET)
    assert summary["trained"] == ["net-000", "net-002"] and list(summary["failed"]) == ["net-001"]
    st = bank.status("net-001")
    assert st["state"] == "failed" and "nan" in st["reason"].lower() and "step 1" in st["reason"]
    assert not bank.checkpoint_path("net-001").exists()
    assert bank.done_networks() == ["net-000", "net-002"]
    # failed networks stay failed unless asked
    monkeypatch.setattr(TrainingPatches, "batch", real_batch)
    assert "net-001" in train_bank(bank.path, settings(), **QUIET)["skipped"]
    assert train_bank(bank.path, settings(retry_failed=True), **QUIET)["trained"] == ["net-001"]
    result = CliRunner().invoke(generators_cli, ["list", str(bank.path)])
    assert result.exit_code == 0 and result.output.count("done") >= 3


def a_bug_at(step_of_bug, network):
    """NetworkTrainer.step, raising an error that is not a divergence in one network's step."""
    from generators.training import NetworkTrainer

    real_step = NetworkTrainer.step

    def step(self, x, y, step):
        if step == step_of_bug and self.network == network:
            raise RuntimeError("a bug in the training step")
        return real_step(self, x, y, step)
    return step


def test_a_bug_in_training_propagates_and_leaves_the_network_resumable(tmp_path, monkeypatch):
    from bapps_build.errors import WorkError
    from generators.training import NetworkTrainer

    bank = make_bank(tmp_path / "b", [tiny(), tiny()])
    s = settings(steps=4, checkpoint_every=2)
    real_init = NetworkTrainer.__init__

    def init(self, config, *args, **kw):
        real_init(self, config, *args, **kw)
        self.network = config["name"]

    monkeypatch.setattr(NetworkTrainer, "__init__", init)
    monkeypatch.setattr(NetworkTrainer, "step", a_bug_at(3, "net-001"))
    with pytest.raises(WorkError) as info:
        train_bank(bank.path, s, **QUIET)
    assert info.value.kind == "RuntimeError" and "a bug in the training step" in str(info.value)
    assert "net-001" in str(info.value)
    st = bank.status("net-001")  # neither done nor failed: interrupted at its last saved state
    assert st["state"] == "training" and st["steps_done"] == 2 and bank.resume_path("net-001").exists()
    assert bank.status("net-000")["state"] == "done"
    monkeypatch.undo()
    logs = []
    summary = train_bank(bank.path, s, progress=False, log=logs.append)
    assert summary["trained"] == ["net-001"] and not summary["failed"]
    assert any("net-001: resuming at step 2" in m for m in logs)
    assert bank.status("net-001")["state"] == "done" and not bank.resume_path("net-001").exists()


def test_a_bug_in_a_worker_process_stops_the_run_without_marking_the_network(tmp_path, monkeypatch):
    """The process pool: the bug comes back from the worker, no network is marked failed."""
    from bapps_build.errors import WorkError

    hooks = tmp_path / "hooks"  # the spawned workers patch the step at start-up (a fresh interpreter)
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('BAPPS_TEST_BUG'):\n"
        "    import generators.training as t\n"
        "    real_init, real_step = t.NetworkTrainer.__init__, t.NetworkTrainer.step\n"
        "    def init(self, config, *a, **k):\n"
        "        real_init(self, config, *a, **k)\n"
        "        self.network = config['name']\n"
        "    def step(self, x, y, step):\n"
        "        if step == 3 and self.network == 'net-001':\n"
        "            raise RuntimeError('a bug in the training step')\n"
        "        return real_step(self, x, y, step)\n"
        "    t.NetworkTrainer.__init__, t.NetworkTrainer.step = init, step\n")
    import os

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hooks), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("BAPPS_TEST_BUG", "1")
    bank = make_bank(tmp_path / "b", [tiny(), tiny()])
    s = settings(steps=4, checkpoint_every=2)
    with pytest.raises(WorkError) as info:
        train_bank(bank.path, s, workers=2, **QUIET)
    assert info.value.kind == "RuntimeError" and "net-001" in str(info.value)
    assert "failed" not in [st["state"] for st in bank.statuses()]
    assert bank.status("net-001")["state"] == "training" and bank.resume_path("net-001").exists()
    monkeypatch.delenv("BAPPS_TEST_BUG")
    train_bank(bank.path, s, **QUIET)
    assert [st["state"] for st in bank.statuses()] == ["done", "done"]


def test_missing_vgg_stops_before_training_and_no_vgg_drops_the_term(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    bank = make_bank(tmp_path / "b", [tiny(), tiny(loss={"vgg_weight": 1.5})])
    s = settings(no_vgg=False)
    with pytest.raises(RuntimeError) as info:
        train_bank(bank.path, s, **QUIET)
    text = str(info.value)
    assert str(tmp_path / "torch-home" / "hub" / "checkpoints" / "vgg16-397923af.pth") in text
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in text and "net-001" in text
    assert [st["state"] for st in bank.statuses()] == ["pending", "pending"]  # nothing trained
    runner = CliRunner()
    result = runner.invoke(generators_cli, ["train", str(bank.path), "--steps", "2", "--batch-size", "2",
                                            "--patch-size", "32", "--device", "cpu", "--quiet"])
    assert result.exit_code == 1 and "vgg16-397923af.pth" in result.output and "--no-vgg" in result.output
    result = runner.invoke(generators_cli, ["train", str(bank.path), "--steps", "2", "--batch-size", "2",
                                            "--patch-size", "32", "--device", "cpu", "--quiet", "--no-vgg",
                                            "--no-gate"])  # 2-step networks are too poor for the gate
    assert result.exit_code == 0, result.output
    st = bank.status("net-001")
    assert st["state"] == "done" and st["vgg_term"].startswith("dropped") and st["effective_loss"]["vgg_weight"] == 0
    assert bank.status("net-000")["vgg_term"].startswith("not used")


def test_vgg_term_with_a_checkpoint_in_torchvision_format(tmp_path):
    weights = tmp_path / "vgg.pth"
    write_vgg_checkpoint(weights)
    bank = make_bank(tmp_path / "b", [tiny(loss={"vgg_weight": 2.0})])
    summary = train_bank(bank.path, settings(no_vgg=False, vgg_weights=str(weights), steps=2), **QUIET)
    assert summary["trained"] == ["net-000"]
    st = bank.status("net-000")
    assert st["vgg_term"] == "used" and st["effective_loss"]["vgg_weight"] == 2.0


# ------------------------------------------------------------------ checkpoints


class Payload:
    """What a malicious checkpoint would run on load."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "ran"))


def test_loading_refuses_a_checkpoint_with_a_pickled_object(tmp_path):
    bank = make_bank(tmp_path / "b", [tiny()])
    train_bank(bank.path, settings(steps=1), **QUIET)
    config = bank.config("net-000")
    good = torch.load(bank.checkpoint_path("net-000"), weights_only=True)
    assert set(good) == {"format", "state_dict", "config_sha256"}
    marker = tmp_path / "marker.txt"
    evil = tmp_path / "evil.pt"
    torch.save({**good, "extra": Payload(str(marker))}, evil)
    with pytest.raises(CheckpointError) as info:
        load_generator(evil, config)
    assert "pickled" in str(info.value) and "evil.pt" in str(info.value)
    assert not marker.exists()
    # a checkpoint for another architecture is refused with the config's name
    other = dict(config, generator={**config["generator"], "first_channels": 16, "max_channels": 32})
    with pytest.raises(CheckpointError, match="net-000"):
        load_generator(bank.checkpoint_path("net-000"), other)


# ------------------------------------------------------------------ CLI


def test_cli_sample_is_reproducible_and_refuses_another_bank(tmp_path):
    runner = CliRunner()
    for name in ("a", "b"):
        result = runner.invoke(generators_cli, ["sample", "--n", "5", "--seed", "3", "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == ["bank.json"] + [f"net-{i:03d}.json" for i in range(5)]
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    result = runner.invoke(generators_cli, ["sample", "--n", "6", "--seed", "3", "--out", str(tmp_path / "a")])
    assert result.exit_code == 1 and "already holds a bank" in result.output
    result = runner.invoke(generators_cli, ["list", str(tmp_path)])
    assert result.exit_code == 1 and "not a generator bank" in result.output


def test_cli_train_list_and_preview(tmp_path):
    from PIL import Image

    bank = make_bank(tmp_path / "b", [tiny(), tiny(generator={"upsampling": "transposed"},
                                                   corruption={"kind": "downsample", "factor": 2})])
    runner = CliRunner()
    result = runner.invoke(generators_cli, ["train", str(bank.path), "--steps", "2", "--batch-size", "2",
                                            "--patch-size", "32", "--device", "cpu", "--quiet", "--no-vgg",
                                            "--no-gate"])  # 2-step networks: the gate is tested in test_generators_gate
    assert result.exit_code == 0, result.output
    assert "2 trained, 0 failed" in result.output and "quality gate" not in result.output
    result = runner.invoke(generators_cli, ["train", str(bank.path), "--steps", "2", "--epochs", "1"])
    assert result.exit_code != 0 and "not both" in result.output
    result = runner.invoke(generators_cli, ["list", str(bank.path), "--json"])
    rows = json.loads(result.output)
    assert [r["state"] for r in rows] == ["done", "done"] and "sr2" in rows[1]["summary"]
    out = tmp_path / "sheet.png"
    result = runner.invoke(generators_cli, ["preview", str(bank.path), "--out", str(out), "--n", "3"])
    assert result.exit_code == 0, result.output
    im = Image.open(out)
    assert im.size[1] > 3 * 128 and im.size[0] > 3 * 128  # a row of clean patches and a row per network


def test_cli_train_default_budget_and_epochs(tmp_path, monkeypatch):
    import generators.cli as cli_module

    monkeypatch.setattr(cli_module, "DEFAULT_STEPS", 1)
    bank = make_bank(tmp_path / "b", [tiny()])
    runner = CliRunner()
    result = runner.invoke(generators_cli, ["train", str(bank.path), "--batch-size", "2", "--patch-size", "32",
                                            "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    assert bank.status("net-000")["steps_total"] == 1
    other = make_bank(tmp_path / "c", [tiny()])
    result = runner.invoke(generators_cli, ["train", str(other.path), "--epochs", "1", "--batch-size", "4",
                                            "--patch-size", "32", "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    n_sources = len(TrainingPatches(settings(batch_size=4)).sources)
    assert other.status("net-000")["steps_total"] == math.ceil(n_sources / 4)


def test_same_weights_for_any_worker_count_and_on_dask(tmp_path):
    """One network = one unit: trained alone, two at a time, or as Dask tasks, bit for bit."""
    variants = [tiny(), tiny(generator={"norm": "instance", "upsampling": "transposed"}),
                tiny(discriminator={"layers": 1}, loss={"adversarial_weight": 0.1})]
    pytest.importorskip("distributed")
    s = settings(steps=4)
    runs = {"one": dict(workers=1), "two": dict(workers=2), "dask": dict(workers=2, executor="dask")}
    banks = {}
    for label, kw in runs.items():
        banks[label] = make_bank(tmp_path / label, variants)
        summary = train_bank(banks[label].path, s, **QUIET, **kw)
        assert summary["trained"] == ["net-000", "net-001", "net-002"], (label, summary)
    for name in ("net-000", "net-001", "net-002"):
        ref = state_dict_of(banks["one"], name)
        for label in runs:
            other = state_dict_of(banks[label], name)
            assert all(torch.equal(ref[k], other[k]) for k in ref), (label, name)
