"""The traditional build works without the heavy extras (torch, dask, crowd-kit, the server,
webdataset), and a command that needs one says what to install.

Each command runs in a fresh interpreter whose import system refuses those packages, as if
they had never been installed (`pip install -e .` only).
"""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "dask", "distributed", "crowdkit", "starlette", "uvicorn", "webdataset")

RUN_WITHOUT_HEAVY = textwrap.dedent(f"""
    import sys
    from importlib.abc import MetaPathFinder

    class NotInstalled(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {HEAVY!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, NotInstalled())
    from bapps_build.cli import main
    main(sys.argv[1:], prog_name="bapps-build")
""")


def bapps(tmp_path, *args):
    return subprocess.run([sys.executable, "-c", RUN_WITHOUT_HEAVY, *args], cwd=tmp_path, capture_output=True,
                          text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def test_traditional_build_and_its_tools_need_no_heavy_package(tmp_path):
    for args in (["distort", "--n", "6", "--workers", "1", "--out", "ds", "--quiet"],
                 ["verify", "ds"], ["stats", "ds", "--quiet"], ["replay", "ds", "--id", "2"],
                 ["preview", "ds", "--out", "sheet.png"], ["families"],
                 ["tasks", "ds", "--platform", "generic", "--judgments", "1", "--per-hit", "6", "--out", "tk"],
                 ["serve", "--help"], ["generators", "--help"]):
        done = bapps(tmp_path, *args)
        assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    assert (tmp_path / "ds/2afc/train/traditional/manifest.jsonl").is_file()
    assert (tmp_path / "sheet.png").is_file() and (tmp_path / "tk/tasks.json").is_file()


@pytest.mark.parametrize("args,extra", [
    (["generators", "train", "bank"], "cnn"),
    (["distort", "--n", "4", "--executor", "dask", "--out", "ds"], "dask"),
    (["distort", "--n", "4", "--format", "webdataset", "--out", "ds"], None),
])
def test_a_command_needing_a_missing_extra_says_what_to_install(tmp_path, args, extra):
    if args[:2] == ["generators", "train"]:
        assert bapps(tmp_path, "generators", "sample", "--n", "1", "--out", "bank").returncode == 0
    done = bapps(tmp_path, *args)
    if extra is None:  # shards are written by our own tar writer: no webdataset needed
        assert done.returncode == 0, done.stderr
        return
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "pip install" in done.stderr and extra in done.stderr
