"""Datasets are byte-identical across refactors.

Every scenario below runs the real command line in a fresh folder; the sha256 of every file it
writes is compared with ``tests/data/byte_identity.json``, recorded by the code of commit
17dba7a (the start of the architecture refactor). A change that alters a single
byte of a built dataset fails here, naming the scenario and the file.

Full photos written through libpng (``apply --out``, ``--stored-size`` exports) are compared
by their decoded pixels: the PNG encoder is allowed to change, the image is not.

To re-record after an intended change of output (say so in the commit):
    python tests/test_byte_identity.py --write
"""
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / "tests" / "data" / "byte_identity.json"

# Files whose content is a log of the run (timings, host), not data; so are a bank's
# NET.status.json files.
NOT_DATA = {"report.json"}

# (scenario, command lines run in order from a scratch folder, folders to hash, compare)
SCENARIOS = [
    ("distort-2afc-train", [["distort", "--n", "40", "--seed", "11", "--workers", "2", "--out", "ds",
                             "--quiet"]], ["ds"], "bytes"),
    ("distort-2afc-val", [["distort", "--n", "24", "--seed", "11", "--split", "val", "--workers", "1",
                           "--out", "ds", "--quiet"]], ["ds"], "bytes"),
    ("distort-jnd", [["distort", "--n", "24", "--task", "jnd", "--seed", "5", "--workers", "1",
                      "--out", "ds", "--quiet"]], ["ds"], "bytes"),
    ("shards", [["distort", "--n", "30", "--seed", "3", "--workers", "1", "--out", "ds", "--quiet"],
                ["export", "ds", "--format", "webdataset", "--maxcount", "12", "--out", "shards",
                 "--workers", "1", "--quiet"],
                ["export", "shards", "--format", "bapps", "--out", "tree", "--workers", "1", "--quiet"]],
     ["shards", "tree"], "bytes"),
    ("stored-size", [["distort", "--n", "6", "--seed", "3", "--workers", "1", "--out", "ds", "--quiet"],
                     ["export", "ds", "--format", "webdataset", "--out", "shards", "--workers", "1",
                      "--quiet"],
                     ["export", "shards", "--format", "bapps", "--out", "big", "--stored-size", "128",
                      "--workers", "1", "--quiet"]],
     ["big"], "pixels"),
    ("apply", [["apply", "PHOTO", "--chain", "gaussian_blur:0.4+pink_noise:0.6+jpeg:0.5", "--seed", "9",
                "--out", "out.png", "--record", "out.json"]], ["out.png", "out.json"], "pixels"),
    ("real", [["real", "--reference", "gt", "--outputs", "bicubic", "nearest", "--n", "20", "--seed", "4",
               "--workers", "1", "--out", "ds", "--quiet", "REAL_NAME"]], ["ds"], "bytes"),
    ("tasks", [["distort", "--n", "30", "--split", "val", "--seed", "2", "--workers", "1", "--out", "ds",
                "--quiet"],
               ["tasks", "ds", "--platform", "generic", "--judgments", "3", "--per-hit", "10", "--out",
                "tk", "--seed", "1"],
               ["simulate", "tk", "--platform", "generic", "--out", "res.csv", "--workers", "6", "--seed",
                "3"],
               ["ingest", "res.csv", "--dataset", "ds"]],
     ["ds", "tk", "res.csv"], "bytes"),
    ("cnn-mix", [["generators", "sample", "--n", "2", "--seed", "0", "--out", "bank"],
                 ["generators", "train", "bank", "--steps", "2", "--no-vgg", "--no-gate", "--batch-size", "4",
                  "--patch-size", "32", "--device", "cpu", "--workers", "1"],
                 ["distort", "--n", "8", "--subset", "mix", "--bank", "bank", "--seed", "1", "--workers",
                  "1", "--out", "ds", "--quiet"]],
     ["bank", "ds"], "bytes"),
]

# Option spellings that differ between the recording commit and today's command line.
SPELLINGS = {"REAL_NAME": ["--subset", "superres"]}


def write_inputs(work):
    """The photo and algorithm outputs some scenarios read, made here so nothing is downloaded."""
    import cv2
    from skimage import data

    Image.fromarray(data.astronaut()[:160, :200]).save(work / "photo.png")
    for d in ("gt", "bicubic", "nearest"):
        (work / d).mkdir()
    for name, img in (("astro", data.astronaut()[:200, :240]), ("cat", data.chelsea()[:150, :200])):
        h, w = img.shape[:2]
        small = cv2.resize(img, (w // 4, h // 4), interpolation=cv2.INTER_AREA)
        Image.fromarray(img).save(work / "gt" / f"{name}.png")
        Image.fromarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)).save(work / "bicubic" / f"{name}.png")
        Image.fromarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)).save(work / "nearest" / f"{name}.png")


def digest(path, compare, work):
    if compare == "pixels" and path.suffix == ".png":
        with Image.open(path) as im:
            pixels = np.asarray(im)
        return "pixels:" + hashlib.sha256(repr((pixels.shape, str(pixels.dtype))).encode()
                                          + pixels.tobytes()).hexdigest()
    # Records name the inputs by absolute path: the scratch folder differs from run to run.
    # The ingest log stamps the wall-clock time of each ingest.
    data = path.read_bytes().replace(str(work).encode(), b"<WORK>")
    return hashlib.sha256(re.sub(rb'"time":"[0-9T:+-]+"', b'"time":""', data)).hexdigest()


def run_scenario(work, commands, outputs, compare, code_root=REPO):
    write_inputs(work)
    env = dict(os.environ, PYTHONPATH=str(code_root), BAPPS_BUILD_TRACEBACK="1")
    for args in commands:
        args = [w for a in args for w in SPELLINGS.get(a, [a])]
        args = [str(work / "photo.png") if a == "PHOTO" else a for a in args]
        done = subprocess.run([sys.executable, "-m", "bapps_build.cli", *args], cwd=work, env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    hashes = {}
    for name in outputs:
        root = work / name
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            if p.name not in NOT_DATA and not p.name.endswith(".status.json"):
                hashes[p.relative_to(work).as_posix()] = digest(p, compare, work)
    return hashes


@pytest.mark.parametrize("scenario,commands,outputs,compare", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_outputs_are_byte_identical_to_the_recording(tmp_path, scenario, commands, outputs, compare):
    expected = json.loads(RECORD.read_text())[scenario]
    got = run_scenario(tmp_path, commands, outputs, compare)
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    changed = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
    assert not (missing or extra or changed), (
        f"{scenario}: {len(changed)} changed, {len(missing)} missing, {len(extra)} new files; "
        f"changed {changed[:8]}, missing {missing[:8]}, new {extra[:8]}")


if __name__ == "__main__":
    import tempfile

    if sys.argv[1:2] != ["--write"]:
        sys.exit("usage: python tests/test_byte_identity.py --write [CODE_ROOT]")
    code_root = Path(sys.argv[2]).resolve() if len(sys.argv) > 2 else REPO
    record = {}
    for scenario, commands, outputs, compare in SCENARIOS:
        with tempfile.TemporaryDirectory() as tmp:
            record[scenario] = run_scenario(Path(tmp), commands, outputs, compare, code_root)
            print(f"{scenario}: {len(record[scenario])} files", flush=True)
    RECORD.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
