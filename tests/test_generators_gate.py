"""The CNN bank quality gate and the cnn family's severity calibration (generators/gate.py)."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from bapps_build import BuildConfig, run_build  # noqa: E402
from bapps_build.calibration import target_visibility  # noqa: E402
from bapps_build.cli import main  # noqa: E402
from bapps_build.files import read_jsonl  # noqa: E402
from bapps_build.layout import MANIFEST, subset_dir  # noqa: E402
from bapps_build.replay import replay_example  # noqa: E402
from bapps_build.visibility import THRESHOLD, visibility  # noqa: E402
from generators import gate, integration  # noqa: E402
from generators.bank import Bank, BankError, save_generator_checkpoint, load_generator  # noqa: E402
from generators.training import train_bank  # noqa: E402
from test_generators_bank import make_bank, settings, tiny  # noqa: E402
from test_generators_build import forget_the_cnn_family  # noqa: E402,F401  (autouse: registry left as found)

QUIET = dict(progress=False, log=lambda m: None)


def zero_network(bank, name):
    """Force a network to be bad: every weight and bias 0 (a constant output)."""
    model = load_generator(bank.checkpoint_path(name), bank.config(name))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    sha = save_generator_checkpoint(bank.checkpoint_path(name), model, bank.config(name))
    bank.write_status(name, {**bank.status(name), "checkpoint_sha256": sha})


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    path = tmp_path_factory.mktemp("gate") / "bank"
    bank = make_bank(path, [tiny(corruption={"kind": "pink_noise", "sigma_min": 0.02, "sigma_max": 0.2}),
                            tiny(generator={"norm": "none"})])
    train_bank(path, settings(steps=40, batch_size=4), **QUIET)
    zero_network(bank, "net-001")
    results = gate.gate_bank(path, log=lambda m: None)
    return path, results


def test_gate_rejects_the_bad_network_and_calibrates_the_good_one(gated):
    path, results = gated
    good, bad = results["net-000"], results["net-001"]
    assert good["state"] == "done", good.get("reason")
    assert THRESHOLD <= good["gate"]["median_visibility"] <= 2 * target_visibility(1)
    assert bad["state"] == "rejected" and "quality gate" in bad["reason"]
    assert "destroys content" in bad["reason"] and bad["gate"]["destroyed_share"] > 0.5
    assert "calibration" not in bad
    # the status files hold it; `generators list` shows it
    assert Bank(path).status("net-001")["state"] == "rejected"
    res = CliRunner().invoke(main, ["generators", "list", str(path)])
    assert res.exit_code == 0, res.output
    assert "rejected" in res.output and "destroys content" in res.output and "severity calibrated" in res.output
    # the calibration: monotone blend, and the blended medians on the held-out patches follow the curve
    knots = good["calibration"]
    assert knots["blend"] == sorted(knots["blend"]) and 0 <= knots["blend"][0] and knots["blend"][-1] <= 1
    bank = Bank(path)
    refs = gate.gate_patches(24, seed=777)  # other patches than the gate's own
    rng = np.random.default_rng(0)
    from generators.corruptions import apply_corruption, sample_corruption

    loaded = integration.register_bank(path)
    outs = loaded.run("net-000", [apply_corruption(r, sample_corruption(bank.config("net-000")["corruption"], rng,
                                                                        gate.GATE_SEVERITY)) for r in refs])
    for s in (0.25, 0.5, 1.0):
        t = float(np.interp(s, knots["severity"], knots["blend"]))
        med = np.median([visibility(r, gate.blend(r, y, t)) for r, y in zip(refs, outs)])
        assert target_visibility(s) / 1.5 <= med <= target_visibility(s) * 1.5, (s, med)


def test_rejected_networks_are_never_used_and_builds_replay(gated, tmp_path):
    path, _ = gated
    loaded = integration.register_bank(path)
    assert loaded.names == ["net-000"] and "net-000" in loaded.calibration
    hooks, extra, fams = integration.distort_hooks(path, "cnn")
    cfg = BuildConfig(n=10, subset="cnn", patch_size=32, families=tuple(fams))
    run_build(cfg, tmp_path / "d", workers=1, hooks=hooks, extra_settings=extra, **QUIET)
    sub = subset_dir(tmp_path / "d", "2afc", "train", "cnn")
    records = list(read_jsonl(sub / MANIFEST))
    steps = [r[side][0] for r in records for side in ("p0", "p1")]
    assert {s["params"]["network"] for s in steps} == {"net-000"}
    for s in steps:
        knots = loaded.calibration["net-000"]
        assert s["params"]["blend"] == pytest.approx(float(np.interp(s["severity"], knots["severity"],
                                                                       knots["blend"])))
    for r in records[:3]:
        result = replay_example(sub, r["id"])
        assert result["ok"], result
    # a step without blend (an older manifest) takes the old path: the raw network output
    img = np.full((32, 32, 3), 0.4, np.float32)
    old = {k: v for k, v in steps[0]["params"].items() if k != "blend"}
    raw = loaded.apply(img, old)
    assert np.array_equal(raw, loaded.run("net-000", [integration.apply_corruption(img, old["corruption"])])[0])
    assert np.array_equal(loaded.apply(img, steps[0]["params"]),
                          gate.blend(img, raw, steps[0]["params"]["blend"]))
    # naming the rejected network in a recipe is refused
    with pytest.raises(BankError, match="not a trained network"):
        loaded.apply(img, {**old, "network": "net-001"})


def test_a_bank_with_no_accepted_network_is_a_clear_error(tmp_path):
    path = tmp_path / "bank"
    bank = make_bank(path, [tiny()])
    train_bank(path, settings(steps=2), **QUIET)
    zero_network(bank, "net-000")
    assert gate.gate_bank(path, log=lambda m: None)["net-000"]["state"] == "rejected"
    with pytest.raises(BankError, match="no trained network.*1 rejected.*quality gate"):
        integration.distort_hooks(path, "cnn")


def test_gate_rule_on_known_outputs():
    refs = gate.gate_patches(16, seed=5)
    rng = np.random.default_rng(1)
    same = gate.score_outputs(refs, refs)
    assert not same["accepted"] and "below the visibility threshold" in same["reasons"][0]
    black = gate.score_outputs(refs, [np.zeros_like(r) for r in refs])
    assert not black["accepted"] and any("destroys content" in r for r in black["reasons"])
    mild = gate.score_outputs(refs, [np.clip(r + 0.06 * rng.standard_normal(r.shape), 0, 1).astype(np.float32)
                                     for r in refs])
    assert mild["accepted"], mild["reasons"]
    assert mild["calibration"]["blend"] == sorted(mild["calibration"]["blend"])


def test_cli_train_runs_the_gate(tmp_path):
    from generators.cli import generators as generators_cli

    bank = make_bank(tmp_path / "b", [tiny()])
    runner = CliRunner()
    result = runner.invoke(generators_cli, ["train", str(bank.path), "--steps", "2", "--batch-size", "2",
                                            "--patch-size", "32", "--device", "cpu", "--quiet", "--no-vgg"])
    assert result.exit_code == 0, result.output
    assert "quality gate: " in result.output and "gate: net-000:" in result.output
    rows = json.loads(runner.invoke(generators_cli, ["list", str(bank.path), "--json"]).output)
    assert rows[0]["state"] in ("done", "rejected") and rows[0]["gate"]["patches"] == gate.GATE_PATCHES
    result = runner.invoke(generators_cli, ["gate", str(bank.path)])
    assert result.exit_code == 0 and ("1 accepted" in result.output or "1 rejected" in result.output), result.output
