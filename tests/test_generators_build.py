"""The cnn family: exact batched inference, the cnn and mix subsets, replay, apply."""
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import distortions  # noqa: E402
from bapps_build import BuildConfig, BuildError, run_build  # noqa: E402
from bapps_build.files import read_jsonl  # noqa: E402
from bapps_build.layout import subset_dir  # noqa: E402
from bapps_build.manifest import check_manifest  # noqa: E402
from bapps_build.recipes import render  # noqa: E402
from bapps_build.replay import replay_example  # noqa: E402
from generators import integration  # noqa: E402
from generators.bank import Bank, BankError, save_generator_checkpoint  # noqa: E402
from generators.inference import exact_batch_size, run_generator  # noqa: E402
from generators.training import train_bank  # noqa: E402
from test_generators import make_config  # noqa: E402
from test_generators_bank import make_bank, settings, tiny  # noqa: E402

QUIET = dict(progress=False, log=lambda m: None)
VARIANTS = [
    tiny(generator={"upsampling": "transposed", "norm": "batch"},
         corruption={"kind": "pink_noise", "sigma_min": 0.02, "sigma_max": 0.2}),
    tiny(generator={"upsampling": "pixel_shuffle", "norm": "instance", "first_stride": 2, "force_skip_top": True},
         corruption={"kind": "downsample", "factor": 2}),
    tiny(generator={"upsampling": "bilinear_conv", "norm": "group", "dropout_layers": 1},
         corruption={"kind": "color_removal"}, discriminator={"layers": 1}, loss={"adversarial_weight": 0.1}),
    tiny(generator={"norm": "none"}, corruption={"kind": "white_noise", "sigma_min": 0.02, "sigma_max": 0.2}),
]


@pytest.fixture(scope="module", autouse=True)
def forget_the_cnn_family():
    """Tests elsewhere list every registered family: leave the registry as it was found (the
    family ``cnn`` holds its bank: removing the family lets the bank go)."""
    from distortions import registry

    before = registry._FAMILIES.get("cnn")
    yield
    if before is None:
        registry._FAMILIES.pop("cnn", None)
    else:
        registry._FAMILIES["cnn"] = before


@pytest.fixture(scope="module")
def bank_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("bank") / "bank"
    make_bank(path, VARIANTS)
    train_bank(path, settings(steps=2), **QUIET)
    return path


def tree_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*"))
            if p.is_file() and p.name != "report.json"}


def cnn_build(bank, out, subset="cnn", workers=1, n=12, task="2afc", resume=False, families=None):
    hooks, extra, fams = integration.distort_hooks(bank, subset, families)
    cfg = BuildConfig(n=n, task=task, subset=subset, patch_size=32, families=tuple(fams))
    report = run_build(cfg, out, workers=workers, resume=resume, hooks=hooks, extra_settings=extra, **QUIET)
    return report, subset_dir(out, task, "train", subset)


# ------------------------------------------------------------------ exactness of batched inference


@pytest.mark.parametrize("size,count", [(32, 37), (64, 13)])
def test_batched_inference_is_bit_identical_to_one_at_a_time(size, count):
    """Every upsampling and normalization: the images in one call, one by one, shuffled, and
    with two threads give the same bits (the fixed-batch-shape rule of generators.inference)."""
    from generators.inference import prepare_model
    from generators.networks import Generator

    rng = np.random.default_rng(0)
    images = [rng.random((size, size, 3), dtype=np.float32) for _ in range(count)]
    threads = torch.get_num_threads()
    for up, norm in itertools.product(["transposed", "nearest_conv", "bilinear_conv", "pixel_shuffle"],
                                      ["batch", "instance", "group", "none"]):
        torch.manual_seed(1)
        model = Generator(make_config(layers=3, skips=2, force_skip_top=True, dropout_layers=1, upsampling=up,
                                      norm=norm, first_channels=8, max_channels=32))
        for m in model.modules():  # trained-looking batch-norm statistics
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
        model = prepare_model(model, "cpu")
        batched = run_generator(model, images)
        single = [run_generator(model, [im])[0] for im in images]
        order = rng.permutation(count)
        shuffled = run_generator(model, [images[i] for i in order])
        try:
            torch.set_num_threads(2)
            two_threads = run_generator(model, images)
        finally:
            torch.set_num_threads(threads)
        for i in range(count):
            assert np.array_equal(batched[i], single[i]), (up, norm, i)
            assert np.array_equal(two_threads[i], single[i]), (up, norm, i)
        for k, i in enumerate(order):
            assert np.array_equal(shuffled[k], single[i]), (up, norm, i)
    assert exact_batch_size(64, 64) == 4 and exact_batch_size(32, 32) == 16 and exact_batch_size(4000, 3000) == 1


# ------------------------------------------------------------------ the family


def test_family_records_network_and_corruption_and_replays(bank_path):
    loaded = integration.register_bank(bank_path)
    fam = distortions.get_family("cnn")
    assert fam.group == "cnn" and "cnn" not in distortions.family_names()  # not a traditional family
    rng = np.random.default_rng(0)
    ref = rng.random((32, 32, 3), dtype=np.float32)
    seen = set()
    for k in range(40):
        step = distortions.sample_step("cnn", np.random.default_rng(k))
        params = step["params"]
        json.dumps(step)
        assert params["checkpoint_sha256"] == loaded.sha[params["network"]]
        kind = params["corruption"]["kind"]
        assert kind == loaded.config(params["network"])["corruption"]["kind"]
        if kind in ("pink_noise", "white_noise"):
            assert params["corruption"]["sigma"] == pytest.approx(0.02 + 0.18 * step["severity"])
        seen.add(params["network"])
        if k < 8:
            out = distortions.apply_chain(ref, [step])
            assert out.dtype == np.float32 and out.shape == ref.shape and 0 <= out.min() and out.max() <= 1
            assert np.array_equal(out, distortions.apply_chain(ref.copy(), json.loads(json.dumps([step]))))
    assert seen == set(loaded.names)
    bad = dict(step, params={**step["params"], "checkpoint_sha256": "0" * 64})
    with pytest.raises(BankError, match="another checkpoint"):
        distortions.apply_chain(ref, [bad])


def test_only_trained_networks_are_used(tmp_path):
    bank = make_bank(tmp_path / "b", [tiny(), tiny()])
    with pytest.raises(BankError, match="no trained network"):
        integration.register_bank(bank.path)
    train_bank(bank.path, settings(steps=1), only=["net-001"], **QUIET)
    bank.write_status("net-000", {"name": "net-000", "state": "failed", "reason": "test"})
    assert integration.register_bank(bank.path).names == ["net-001"]


def test_batch_renderer_equals_render(bank_path):
    integration.register_bank(bank_path)
    rng = np.random.default_rng(3)
    recipes, refs = [], []
    for i in range(14):
        ref = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
        chains = []
        for key in ("p0", "p1"):
            r = distortions.generator(np.random.SeedSequence([i, len(chains)]))
            if i % 3 == 0:
                chains.append(distortions.sample_chain(r, ["gaussian_blur", "jpeg", "shift"]))
            elif i % 3 == 1:
                chains.append([distortions.sample_step("cnn", r)])
            else:  # a cnn step inside a longer chain goes the per-image way
                chains.append([distortions.sample_step("jpeg", r), distortions.sample_step("cnn", r)])
        task = "jnd" if i % 4 == 0 else "2afc"
        recipes.append({"id": i, "task": task, "p0": [] if task == "jnd" else chains[0], "p1": chains[1]})
        refs.append(ref)
    batched = integration.render_batch(None, recipes, refs)
    for recipe, ref, images in zip(recipes, refs, batched):
        expected = render(recipe, ref)
        assert images.keys() == expected.keys()
        for k in expected:
            assert images[k].dtype == np.uint8 and np.array_equal(images[k], expected[k])


# ------------------------------------------------------------------ the subsets


def test_cnn_subset_replays_exactly_and_is_the_same_for_any_worker_count(bank_path, tmp_path):
    report, sub = cnn_build(bank_path, tmp_path / "one", workers=1, n=16)
    assert report["family_use"] == {"cnn": 32}
    records = list(read_jsonl(sub / "manifest.jsonl"))
    for r in records:
        for key in ("p0", "p1"):
            assert len(r[key]) == 1 and r[key][0]["family"] == "cnn"
    assert len({r[k][0]["params"]["network"] for r in records for k in ("p0", "p1")}) == len(VARIANTS)
    settings_ = json.loads((sub / "build.json").read_text())["settings"]
    assert settings_["generators"]["bank"] == str(Path(bank_path).resolve()) and settings_["families"] == ["cnn"]
    for i in range(16):
        result = replay_example(sub, i)
        assert result["ok"], result["folders"]
    _, sub2 = cnn_build(bank_path, tmp_path / "two", workers=2, n=16)
    assert tree_bytes(sub) == tree_bytes(sub2)


def test_mix_subset_draws_both_kinds(bank_path, tmp_path):
    report, sub = cnn_build(bank_path, tmp_path / "mix", subset="mix", n=24, families=["gaussian_blur", "jpeg"])
    kinds = []
    for r in read_jsonl(sub / "manifest.jsonl"):
        for key in ("p0", "p1"):
            fams = [s["family"] for s in r[key]]
            assert fams == ["cnn"] or (fams and "cnn" not in fams and set(fams) <= {"gaussian_blur", "jpeg"})
            kinds.append(fams == ["cnn"])
    assert 0.25 < np.mean(kinds) < 0.75
    # cnn and traditional steps side by side follow the manifest's schema
    assert [(n, p) for n, _, p in check_manifest(sub / "manifest.jsonl") if p] == []
    build = json.loads((sub / "build.json").read_text())["settings"]
    assert build["families"] == ["gaussian_blur", "jpeg", "cnn"] and build["generators"]["cnn_share"] == 0.5
    for i in (0, 5, 11, 23):
        assert replay_example(sub, i)["ok"]


def test_jnd_cnn_subset(bank_path, tmp_path):
    _, sub = cnn_build(bank_path, tmp_path / "jnd", n=6, task="jnd")
    assert sorted(p.name for p in sub.iterdir() if p.is_dir()) == ["p0", "p1"]
    assert [(n, p) for n, _, p in check_manifest(sub / "manifest.jsonl") if p] == []
    for i in range(6):
        assert replay_example(sub, i)["ok"]


def test_changed_or_moved_bank_is_refused_on_resume_and_replay(bank_path, tmp_path):
    bank_copy = tmp_path / "bank"
    shutil.copytree(bank_path, bank_copy)
    _, sub = cnn_build(bank_copy, tmp_path / "ds", n=6)
    # "retrain" one network: another checkpoint, its status updated
    from generators.bank import load_generator

    bank = Bank(bank_copy)
    model = load_generator(bank.checkpoint_path("net-000"), bank.config("net-000"))
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    sha = save_generator_checkpoint(bank.checkpoint_path("net-000"), model, bank.config("net-000"))
    bank.write_status("net-000", {**bank.status("net-000"), "checkpoint_sha256": sha})
    with pytest.raises(BankError, match="has changed since this subset was built"):
        replay_example(sub, 0)
    with pytest.raises(BuildError, match="--bank"):
        cnn_build(bank_copy, tmp_path / "ds", n=6, resume=True)
    shutil.move(str(bank_copy), str(tmp_path / "moved"))
    with pytest.raises(BankError, match="not there any more"):
        replay_example(sub, 0)


def test_apply_command_accepts_cnn(bank_path, tmp_path):
    from click.testing import CliRunner

    from bapps_build.cli import main
    from bapps_build.files import encode_png, read_png

    rng = np.random.default_rng(0)
    src = tmp_path / "in.png"
    src.write_bytes(encode_png((rng.random((40, 52, 3)) * 255).astype(np.uint8)))
    out = tmp_path / "out.png"
    result = CliRunner().invoke(main, ["apply", str(src), "--chain", "cnn:0.7", "--bank", str(bank_path),
                                       "--seed", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    chain = json.loads(result.output)["chain"]
    assert chain[0]["family"] == "cnn" and chain[0]["severity"] == 0.7
    written = read_png(out)
    assert written.shape == (40, 52, 3)
    again = distortions.to_uint8(distortions.apply_chain(read_png(src), chain))
    assert np.array_equal(written, again)
    # picking a network: its name and checksum (from `generators list --json`)
    from generators.cli import generators as generators_cli

    rows = json.loads(CliRunner().invoke(generators_cli, ["list", str(bank_path), "--json"]).output)
    sha = rows[2]["checkpoint_sha256"]
    result = CliRunner().invoke(main, ["apply", str(src), "--chain", f"cnn:network=net-002,checkpoint_sha256={sha}",
                                       "--bank", str(bank_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["chain"][0]["params"]["network"] == "net-002"
    result = CliRunner().invoke(main, ["apply", str(src), "--chain", "cnn:network=net-002,checkpoint_sha256=abc",
                                       "--bank", str(bank_path), "--out", str(out)])
    assert result.exit_code == 1 and "another checkpoint of net-002" in result.output


def test_distort_and_replay_commands_with_a_bank(bank_path, tmp_path):
    from click.testing import CliRunner

    from bapps_build.cli import main

    runner = CliRunner()
    out = tmp_path / "ds"
    result = runner.invoke(main, ["distort", "--n", "5", "--subset", "cnn", "--bank", str(bank_path),
                                  "--patch-size", "32", "--workers", "1", "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["replay", str(out), "--id", "3"])
    assert result.exit_code == 0 and result.output.count("identical pixels") == 3, result.output
    result = runner.invoke(main, ["distort", "--n", "5", "--subset", "mix", "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "--bank" in result.output
