"""The manifest's schema: every kind of record follows it, verify names what breaks it, and
version 1 manifests (real subsets whose p0/p1 were objects) are still read by everything."""
import copy
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from jsonschema import Draft202012Validator
from PIL import Image

from bapps_build import BuildConfig, run_build
from bapps_build.export import export_to_shards, export_to_tree
from bapps_build.layout import MANIFEST, subset_dir
from bapps_build.manifest import (SCHEMA_VERSION, ManifestError, check_manifest, find_record, load_schema,
                                  read_manifest, real_output, record_problem, upgrade_record)
from bapps_build.preview import html_sheet, select_records, write_preview
from bapps_build.real import RealConfig, run_real
from bapps_build.replay import replay_example, replay_record
from bapps_build.stats import profile_subset
from bapps_build.verify import SHOWN_INVALID, verify_dataset

QUIET = dict(progress=False, log=lambda m: None)
REPO = Path(__file__).resolve().parents[1]


def problems_of(path):
    return [(n, p) for n, _, p in check_manifest(path) if p]


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """One subset of each kind our code writes: 2afc, jnd, real, shards and a tree from them."""
    root = tmp_path_factory.mktemp("builds")
    run_build(BuildConfig(n=10, seed=1), root / "ds", workers=1, **QUIET)
    run_build(BuildConfig(n=8, seed=2, task="jnd", split="val"), root / "ds", workers=1, **QUIET)
    gt, outputs = algorithm_outputs(root)
    run_real(RealConfig(n=12, name="superres", seed=4), gt, outputs, root / "ds", workers=1, **QUIET)
    export_to_shards(root / "ds", root / "shards", maxcount=4, workers=1, progress=False)
    export_to_tree(root / "shards", root / "tree", workers=1, progress=False)
    return root


def algorithm_outputs(root):
    from skimage import data

    gt, a, b = (root / n for n in ("gt", "bicubic", "nearest"))
    for d in (gt, a, b):
        d.mkdir()
    for name, img in (("astro", data.astronaut()[:160, :200]), ("cat", data.chelsea()[:150, :200])):
        h, w = img.shape[:2]
        small = cv2.resize(img, (w // 4, h // 4), interpolation=cv2.INTER_AREA)
        Image.fromarray(img).save(gt / f"{name}.png")
        Image.fromarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)).save(a / f"{name}.png")
        Image.fromarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)).save(b / f"{name}.png")
    return gt, [a, b]


def real_subset(root):
    return subset_dir(root, "2afc", "val", "superres")


def as_version_1(manifest: Path) -> list:
    """Rewrite a real manifest as real builds wrote it before schema 2; returns the raw lines."""
    lines = []
    for line in manifest.read_text().splitlines():
        record = json.loads(line)
        for side in ("p0", "p1"):
            [step] = record[side]
            record[side] = step["params"]
        lines.append(json.dumps(record, separators=(",", ":")))
    manifest.write_text("".join(line + "\n" for line in lines))
    return lines


# ---------------------------------------------------------------- the schema file


def test_schema_is_valid_versioned_and_documented():
    schema = load_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith(f":manifest:{SCHEMA_VERSION}")
    assert f"version {SCHEMA_VERSION}" in schema["title"]
    # shipped as package data, and the file a user's tool would read is the one we use
    assert "bapps_build = schemas/*.json" in (REPO / "setup.cfg").read_text()
    assert json.loads((REPO / "bapps_build/schemas/manifest.schema.json").read_text()) == schema

    undocumented = []

    def walk(node, where):
        if isinstance(node, dict):
            for name, sub in node.get("properties", {}).items():
                target = sub
                if "$ref" in sub and not ({"title", "description"} & set(sub)):
                    target = schema["$defs"][sub["$ref"].split("/")[-1]]
                if not ({"title", "description"} & set(target)):
                    undocumented.append(f"{where}/{name}")
            for key, sub in node.items():
                walk(sub, f"{where}/{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                walk(sub, f"{where}/{i}")

    walk(schema, "")
    # if/then/else only refine a field already documented in the same record
    assert [u for u in undocumented if not {"if", "then", "else"} & set(u.split("/"))] == []


def test_every_kind_of_build_follows_the_schema(builds):
    manifests = sorted(builds.rglob(MANIFEST))
    kinds = set()
    for manifest in manifests:
        assert problems_of(manifest) == [], manifest
        for record in read_manifest(manifest):
            kinds.add(record.get("kind", record.get("task")))
            assert isinstance(record["p0"], list) and isinstance(record["p1"], list)
    assert kinds == {"2afc", "jnd", "real"} and len(manifests) == 9  # 3 subsets: built, shards, tree
    for record in read_manifest(real_subset(builds / "ds") / MANIFEST):
        for side in ("p0", "p1"):
            assert [s["family"] for s in record[side]] == ["real"]
            assert set(real_output(record[side])) == {"algorithm", "path", "sha256"}
    # what another JSON Schema tool sees: the raw lines of a new real manifest validate as they are
    validator = Draft202012Validator(json.loads((REPO / "bapps_build/schemas/manifest.schema.json").read_text()))
    for line in (real_subset(builds / "ds") / MANIFEST).read_text().splitlines():
        assert not list(validator.iter_errors(json.loads(line)))


def test_a_tree_imported_from_shards_without_recipes_follows_the_schema():
    record = {"stem": "000003", "files": {"p0": "a" * 64, "p1": "b" * 64}, "stored_size": 128}
    assert record_problem(record) is None
    assert "files" in record_problem({"stem": "000003"})


def test_the_schema_refuses_what_no_build_writes(builds):
    distort = next(read_manifest(subset_dir(builds / "ds", "2afc", "train", "traditional") / MANIFEST))
    real = next(read_manifest(real_subset(builds / "ds") / MANIFEST))
    cases = [
        (distort, lambda r: r["p0"].append({"family": "real", "params": real["p0"][0]["params"]}), "p0/"),
        (distort, lambda r: r["p0"][0].pop("severity"), "severity"),
        (distort, lambda r: r["p0"][0].update(severity=1.5), "severity"),
        (distort, lambda r: r.update(task="jnd"), "p0"),  # a JND pair's p0 is the reference: []
        (distort, lambda r: r["files"].pop("ref"), "ref"),
        (distort, lambda r: r["crop"].update(box=[1, 2, 3]), "crop/box"),
        (distort, lambda r: r.update(note="mine"), "note"),
        (distort, lambda r: r["p0"].__setitem__(0, {"family": "cnn", "severity": 0.5, "params": {"network": "n"}}),
         "p0/0/params"),
        (real, lambda r: r["p0"].append(r["p1"][0]), "p0"),
        (real, lambda r: r["p1"][0]["params"].pop("sha256"), "sha256"),
        (real, lambda r: r["files"].update(ref="XYZ"), "files/ref"),
    ]
    for record, damage, words in cases:
        broken = copy.deepcopy(record)
        damage(broken)
        problem = record_problem(broken)
        assert problem and words in problem, (words, problem)


def test_a_cnn_step_follows_the_schema():
    step = {"family": "cnn", "severity": 0.4, "params": {
        "network": "net-000", "checkpoint_sha256": "e" * 64,
        "corruption": {"kind": "pink_noise", "sigma": 0.1, "seed": 7}, "blend": 0.3}}
    record = {"id": 0, "stem": "000000", "seed": 1, "task": "2afc", "seed_domain": ["2afc", "train", "cnn"],
              "source": {"path": "skimage:astronaut.png", "sha256": "8" * 64},
              "crop": {"box": [0, 0, 80, 80], "size": 80, "scale": 1.0, "attempts": 1, "margin": 8},
              "p0": [step], "p1": [dict(step, params={**step["params"], "corruption": {"kind": "downsample",
                                                                                        "factor": 2}})],
              "files": {"ref": "1" * 64, "p0": "2" * 64, "p1": "3" * 64}}
    assert record_problem(record) is None
    record["p1"][0]["params"]["corruption"]["kind"] = "blur"
    assert "p1/0/params/corruption/kind" in record_problem(record)


# ---------------------------------------------------------------- version 1 records


def test_upgrade_of_a_version_1_real_record_is_exact_and_pure():
    old = {"id": 0, "stem": "000000", "seed": 4, "task": "2afc", "kind": "real",
           "source": {"path": "/r/gt/a.png", "sha256": "0" * 64},
           "crop": {"box": [0, 0, 64, 64], "size": 64, "scale": 1.0, "attempts": 1},
           "p0": {"algorithm": "bicubic", "path": "/r/bicubic/a.png", "sha256": "1" * 64},
           "p1": {"algorithm": "nearest", "path": "/r/nearest/a.png", "sha256": "2" * 64},
           "files": {"ref": "3" * 64, "p0": "4" * 64, "p1": "5" * 64}}
    kept = copy.deepcopy(old)
    new = upgrade_record(old)
    assert old == kept  # the input is untouched
    assert new["p0"] == [{"family": "real", "params": old["p0"]}]
    assert new["p1"] == [{"family": "real", "params": old["p1"]}]
    assert {k: v for k, v in new.items() if k not in ("p0", "p1")} == {k: v for k, v in old.items()
                                                                         if k not in ("p0", "p1")}
    assert upgrade_record(new) is new and record_problem(new) is None
    assert record_problem(old) is not None  # the schema itself describes version 2 only


def test_a_version_1_real_manifest_is_still_read_by_everything(builds, tmp_path):
    import shutil

    root = tmp_path / "old"
    shutil.copytree(builds / "ds", root)
    sub = real_subset(root)
    lines = as_version_1(sub / MANIFEST)
    assert json.loads(lines[3])["p0"]["algorithm"]  # really the old shape on disk
    assert verify_dataset(root) and all(r["problems"] == [] for r in verify_dataset(root))
    for i in (0, 3, 11):
        result = replay_example(sub, i)
        assert result["ok"] and all(e["bytes_equal"] for e in result["folders"].values())
        assert result["record"]["p0"][0]["family"] == "real"
    assert replay_record(json.loads(lines[5]))["p1"].shape == (64, 64, 3)  # a raw old record too
    assert find_record(sub / MANIFEST, 7)["p1"][0]["params"] == json.loads(lines[7])["p1"]
    labels = html_sheet(sub, select_records(sub, 4))
    assert "p0: bicubic" in labels or "p0: nearest" in labels
    write_preview(sub, tmp_path / "sheet.png", count=4)
    profile = profile_subset("2afc", sub)
    assert profile["manifest"] and profile["families"] == {}  # as before: algorithms are not families
    export_to_shards(root, tmp_path / "shards", maxcount=5, workers=1, progress=False)
    shards = subset_dir(tmp_path / "shards", "2afc", "val", "superres")
    assert (shards / MANIFEST).read_text().splitlines() == lines  # an export copies, never rewrites
    assert all(r["problems"] == [] for r in verify_dataset(tmp_path / "shards"))
    assert replay_example(shards, 2)["ok"]
    assert profile_subset("2afc", shards, sample=3)["manifest"]


# ---------------------------------------------------------------- verify names broken records


def damaged_copy(builds, tmp_path, damage):
    import shutil

    root = tmp_path / "damaged"
    shutil.copytree(subset_dir(builds / "ds", "2afc", "train", "traditional"),
                    subset_dir(root, "2afc", "train", "traditional"))
    manifest = subset_dir(root, "2afc", "train", "traditional") / MANIFEST
    lines = manifest.read_text().splitlines()
    damage(lines)
    manifest.write_text("\n".join(lines) + "\n")
    return verify_dataset(root)[0]["problems"]


def edit(n, change):
    def damage(lines):
        record = json.loads(lines[n - 1])
        change(record)
        lines[n - 1] = json.dumps(record)
    return damage


@pytest.mark.parametrize("damage, expect", [
    (edit(3, lambda r: r.pop("source")), "manifest.jsonl, line 3: lacks the field 'source'"),
    (edit(4, lambda r: r.update(seed="11")), "manifest.jsonl, line 4: seed: is a string where the schema "
                                             "wants an integer"),
    (edit(2, lambda r: r.update(p0="gaussian_blur")), "manifest.jsonl, line 2: p0: is a string where the "
                                                      "schema wants a list"),
    (edit(5, lambda r: r["p1"][0].pop("family")), "manifest.jsonl, line 5: p1/0: lacks the field 'family'"),
    (lambda lines: lines.__setitem__(6, lines[6][:40]), "manifest.jsonl, line 7: not valid JSON"),
    (lambda lines: lines.__setitem__(0, "[1, 2]"), "manifest.jsonl, line 1: not a record (a JSON object) "
                                                   "but a list"),
])
def test_verify_names_an_invalid_record_by_its_line(builds, tmp_path, damage, expect):
    problems = damaged_copy(builds, tmp_path, damage)
    assert len(problems) == 1 and problems[0].startswith(expect), problems  # that record, and only it


def test_verify_shows_the_first_invalid_records_and_counts_the_rest(builds, tmp_path):
    def damage(lines):
        for n in range(len(lines)):
            record = json.loads(lines[n])
            record["seed"] = -1
            lines[n] = json.dumps(record)

    problems = damaged_copy(builds, tmp_path, damage)
    named = [p for p in problems if p.startswith("manifest.jsonl, line ")]
    assert [p.split(":")[0] for p in named] == [f"manifest.jsonl, line {n}" for n in range(1, SHOWN_INVALID + 1)]
    assert f"{10 - SHOWN_INVALID} more invalid record(s)" in " ".join(problems)
    assert all("seed" in p for p in named)


def test_read_manifest_names_a_damaged_line(tmp_path):
    manifest = tmp_path / MANIFEST
    manifest.write_text('{"stem": "000000", "files": {}}\n\n{"stem": \n')
    with pytest.raises(ManifestError, match=r"line 3: not valid JSON"):
        list(read_manifest(manifest))
    assert np.array_equal([n for n, _, _ in check_manifest(manifest)], [1, 3])
