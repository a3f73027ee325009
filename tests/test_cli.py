"""The command line: every command once, its errors, and the two ways to add families."""
import json
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import distortions
from distortions import registry
from bapps_build.cli import main
from bapps_build.files import read_jsonl

PLUGIN = textwrap.dedent('''
    import numpy as np
    from distortions import Family, register

    def sample(rng, severity):
        return {"levels": int(round(32 - 30 * severity))}

    def apply(image, params):
        levels = params["levels"]
        return (np.round(image * (levels - 1)) / (levels - 1)).astype(np.float32)

    register(Family("posterize", "photometric", sample, apply,
                    {"levels": "gray levels per channel, 2..32"}, "levels from 32 down to 2"))
''')


@pytest.fixture
def clean_registry(monkeypatch):
    """Plugins register into the process-wide registry: undo that after each test."""
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
    monkeypatch.setattr(registry, "_loaded_plugin_files", {})
    yield


def run(*args, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def photo(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:120, 0:160]
    img = np.stack([xx / 160, yy / 120, 0.5 + 0.5 * np.sin(xx / 7.0)], -1) * 255
    img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(img).save(path, quality=95)
    return path


def test_help_has_examples():
    for cmd in ("distort", "apply", "families", "replay", "verify", "preview"):
        out = run(cmd, "--help").output
        assert "Usage:" in out
    assert "bapps-build distort --n 1000" in run("distort", "--help").output
    assert "--chain gaussian_blur:0.5+jpeg:0.8" in run("apply", "--help").output


def test_distort_then_replay_verify_preview(tmp_path):
    out = tmp_path / "ds"
    res = run("distort", "--n", 12, "--out", out, "--workers", 1, "--quiet", "--seed", 4)
    assert "12 examples" in res.output and "families:" in res.output
    res = run("replay", out, "--id", 7)
    assert res.output.count("identical pixels, identical bytes") == 3
    assert "ok" in run("verify", out).output
    run("preview", out, "--out", tmp_path / "sheet.png", "--n", 6)
    sheet = Image.open(tmp_path / "sheet.png")
    assert sheet.size[0] > 3 * 64 * 3 and sheet.size[1] > 64 * 3
    run("preview", out, "--out", tmp_path / "sheet.html", "--n", 4, "--seed", 1)
    page = (tmp_path / "sheet.html").read_text()
    assert page.count("data:image/png;base64,") == 12 and "reference" in page
    # the label under each patch is its chain
    first = next(read_jsonl(out / "2afc/train/traditional/manifest.jsonl"))
    run("preview", out, "--out", tmp_path / "s.html", "--ids", "0")
    assert distortions.describe_chain(first["p0"]) in (tmp_path / "s.html").read_text()
    # a damaged dataset makes verify exit non-zero
    (out / "2afc/train/traditional/p0/000003.png").unlink()
    res = run("verify", out, ok=False)
    assert res.exit_code == 1 and "lacks" in res.output


def test_apply_spec_forms(photo, tmp_path):
    res = run("apply", photo, "--chain", "gaussian_blur:0.5+jpeg:0.8", "--out", tmp_path / "a.png", "--seed", 1)
    chain = json.loads(res.output)["chain"]
    assert [s["family"] for s in chain] == ["gaussian_blur", "jpeg"]
    from distortions.calibration import severity_to_strength
    expected_quality = distortions.get_family("jpeg").sample(None, severity_to_strength("jpeg", 0.8))["quality"]
    assert chain[0]["severity"] == 0.5 and chain[1]["params"]["quality"] == expected_quality
    out = np.asarray(Image.open(tmp_path / "a.png"))
    src = np.asarray(Image.open(photo).convert("RGB"))
    expected = distortions.to_uint8(distortions.apply_chain(src, chain))
    assert np.array_equal(out, expected)
    res = run("apply", photo, "--chain", "jpeg:quality=7", "--out", tmp_path / "b.png", "--record", tmp_path / "b.json")
    assert json.loads((tmp_path / "b.json").read_text())["chain"][0]["params"] == {"quality": 7}
    # same seed, same random parts
    a = run("apply", photo, "--chain", "pink_noise", "--out", tmp_path / "c1.png", "--seed", 5).output
    b = run("apply", photo, "--chain", "pink_noise", "--out", tmp_path / "c2.png", "--seed", 5).output
    assert a == b and (tmp_path / "c1.png").read_bytes() == (tmp_path / "c2.png").read_bytes()


def test_apply_writes_png_through_libpng_and_other_formats_through_pillow(photo, tmp_path):
    from bapps_build.files import encode_photo_png, read_png

    run("apply", photo, "--chain", "pink_noise", "--out", tmp_path / "c.png", "--seed", 5)
    data = (tmp_path / "c.png").read_bytes()
    assert data == encode_photo_png(read_png(tmp_path / "c.png"))
    run("apply", photo, "--chain", "pink_noise", "--out", tmp_path / "c.jpg", "--seed", 5)
    with Image.open(tmp_path / "c.jpg") as im:
        assert im.format == "JPEG" and im.size == Image.open(photo).size
        assert np.abs(np.asarray(im, dtype=int) - read_png(tmp_path / "c.png")).mean() < 8


@pytest.mark.parametrize("args, message", [
    (["apply", "{photo}", "--chain", "gausian_blur", "--out", "{tmp}/x.png"], "unknown distortion family 'gausian_blur'"),
    (["apply", "{photo}", "--chain", "jpeg:quality=5,q=3", "--out", "{tmp}/x.png"], "jpeg has no parameter q"),
    (["apply", "{photo}", "--chain", "jpeg:1.5", "--out", "{tmp}/x.png"], "not in [0, 1]"),
    (["apply", "{photo}", "--chain", "jpeg:0.5", "--out", "{tmp}/x.xyz"], "cannot write"),
    (["apply", "{tmp}/nope.png", "--chain", "jpeg", "--out", "{tmp}/x.png"], "does not exist"),
    (["distort", "--n", "0", "--out", "{tmp}/d"], "--n"),
    (["distort", "--n", "5", "--out", "{tmp}/d", "--families", "jpeg,nope"], "unknown distortion family 'nope'"),
    (["distort", "--n", "5", "--out", "{tmp}/d", "--scale-range", "1", "0.5"], "--scale-range"),
    (["distort", "--n", "5", "--out", "{tmp}/d", "--sources", "{tmp}/missing"], "no such file or folder"),
    (["distort", "--n", "5", "--out", "{tmp}/d", "--split", "val", "--val-fraction", "0"], "no usable source image"),
    (["replay", "{tmp}", "--id", "3"], "holds no BAPPS subset"),
    (["preview", "{tmp}", "--out", "{tmp}/s.png"], "holds no BAPPS subset"),
])
def test_errors_are_messages_not_tracebacks(photo, tmp_path, args, message):
    args = [a.format(photo=photo, tmp=tmp_path) for a in args]
    res = CliRunner().invoke(main, args)
    assert res.exit_code != 0
    assert message in res.output, res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "d" / "2afc").exists()


def test_families_lists_all_twenty():
    out = run("families").output
    names = [line.split()[0] for line in out.splitlines() if line and not line.startswith(" ")]
    assert len(names) == 20 and names[0] == "lightness_shift" and names[-1] == "jpeg"
    listed = json.loads(run("families", "--json").output)
    assert {f["name"] for f in listed} == set(names)
    assert all(f["params"] and f["severity"] for f in listed)
    blur = json.loads(run("families", "--json", "--group", "blur").output)
    assert [f["name"] for f in blur] == ["gaussian_blur", "bilateral_filter"]


def test_plugin_file_on_every_command(tmp_path, photo, clean_registry):
    plugin = tmp_path / "poster.py"
    plugin.write_text(PLUGIN)
    assert "posterize  [photometric]" in run("families", "--plugin", plugin).output
    res = run("apply", photo, "--chain", "posterize:levels=2", "--out", tmp_path / "p.png", "--plugin", plugin)
    assert json.loads(res.output)["chain"][0]["params"] == {"levels": 2}
    assert len(np.unique(np.asarray(Image.open(tmp_path / "p.png")))) <= 2
    out = tmp_path / "ds"
    # two workers: the plugin must be loaded in the worker processes too
    run("distort", "--n", 20, "--out", out, "--workers", 2, "--quiet", "--plugin", plugin,
        "--families", "posterize,jpeg")
    records = list(read_jsonl(out / "2afc/train/traditional/manifest.jsonl"))
    used = {s["family"] for r in records for s in r["p0"] + r["p1"]}
    assert "posterize" in used and used <= {"posterize", "jpeg"}
    assert "identical pixels" in run("replay", out, "--id", 3, "--plugin", plugin).output
    # a plugin file that defines nothing is an error that says so
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    res = CliRunner().invoke(main, ["families", "--plugin", str(empty)])
    assert res.exit_code != 0 and "defined no distortion family" in res.output


def test_entry_point_plugins(tmp_path, monkeypatch, clean_registry):
    pkg = tmp_path / "site"
    pkg.mkdir()
    (pkg / "posterize_pkg.py").write_text(PLUGIN.replace("register(Family(", "FAMILY = (Family(") + "\n")
    dist = pkg / "posterize_pkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: posterize-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[bapps_build.distortions]\nposterize = posterize_pkg:FAMILY\n")
    monkeypatch.syspath_prepend(str(pkg))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    fam = distortions.get_family("posterize")
    assert fam.group == "photometric" and "entry point posterize_pkg:FAMILY" in fam.source
    assert "posterize" in distortions.family_names()
