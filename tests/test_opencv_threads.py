"""OpenCV's thread count: importing the packages leaves it alone; the workers set it.

The packages are imported by notebooks and other programs: an import must not change a
process-wide setting of theirs. Worker processes run nothing but units, one core each, so they
use OpenCV on one thread; a build with one worker runs in the caller's process and gives the
caller's setting back when it ends.
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

cv2 = pytest.importorskip("cv2")

from bapps_build.executors import WORKER_OPENCV_THREADS, run_units  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CALLERS = 3  # a count of the caller's own, neither OpenCV's default here nor the workers'


def test_importing_every_module_leaves_opencv_threads_alone():
    script = textwrap.dedent(f"""
        import importlib, pkgutil
        import cv2
        cv2.setNumThreads({CALLERS})
        default = None
        for package in ("distortions", "bapps_build", "generators", "judgments"):
            module = importlib.import_module(package)
            for info in pkgutil.walk_packages(module.__path__, package + "."):
                if info.name.startswith("generators."):
                    try:
                        import torch  # noqa: F401
                    except ImportError:
                        continue
                importlib.import_module(info.name)
                if cv2.getNumThreads() != {CALLERS}:
                    raise SystemExit(f"importing {{info.name}} set OpenCV's threads to {{cv2.getNumThreads()}}")
        print("threads", cv2.getNumThreads())
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == ["threads", str(CALLERS)]


def opencv_threads_in_a_unit(context, unit, progress):
    """A unit that reports the OpenCV thread count it runs with (module level: workers import it)."""
    if context == "fail":
        raise ValueError("this unit fails")
    return {"unit": unit, "threads": cv2.getNumThreads()}


@pytest.fixture
def callers_threads():
    before = cv2.getNumThreads()
    cv2.setNumThreads(CALLERS)
    yield
    cv2.setNumThreads(before)


def threads_seen(workers, executor="local"):
    seen = []
    run_units(opencv_threads_in_a_unit, "ok", range(3), workers=workers, on_result=seen.append, executor=executor)
    return sorted(r["threads"] for r in seen)


def test_one_worker_sets_the_threads_for_the_run_and_gives_the_callers_back(callers_threads):
    assert threads_seen(workers=1) == [WORKER_OPENCV_THREADS] * 3
    assert cv2.getNumThreads() == CALLERS
    with pytest.raises(Exception, match="this unit fails"):
        run_units(opencv_threads_in_a_unit, "fail", range(2), workers=1, on_result=lambda r: None)
    assert cv2.getNumThreads() == CALLERS  # a failed run gives it back too


def test_worker_processes_use_one_opencv_thread(callers_threads):
    assert threads_seen(workers=2) == [WORKER_OPENCV_THREADS] * 3
    assert cv2.getNumThreads() == CALLERS


def test_dask_workers_use_one_opencv_thread(callers_threads):
    pytest.importorskip("distributed")
    assert threads_seen(workers=1, executor="dask") == [WORKER_OPENCV_THREADS] * 3
    assert cv2.getNumThreads() == CALLERS
