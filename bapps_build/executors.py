"""Running units of work (ranges of example indices) on this machine or on a Dask cluster.

A unit is a pure function `fn(context, unit_id, progress)` that writes its own files and
returns a small dict; any scheduler can run any unit, in any order, more than once. So the
output is the same byte for byte whichever executor runs it, and a unit lost with a dead
worker is simply run again. `progress(n)` reports n more examples done, from wherever the
unit runs, to the one progress bar of the driver.

- local (the default): a process pool ("spawn": no inherited state, the same on every
  platform); with one worker, everything runs in this process.
- dask: `dask.distributed`, on a `LocalCluster` or the scheduler given.
"""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import uuid
from typing import Callable, Iterable, Optional

from .errors import ConfigError, MissingExtra, WorkError

EXECUTORS = ("local", "dask")

_CONTEXT = None
_PROGRESS = None


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


# Each worker is one core's worth of work on small patches: OpenCV's own thread pool inside it
# would only oversubscribe the cores. Results do not depend on it (OpenCV splits work by rows).
WORKER_OPENCV_THREADS = 1


def _limit_opencv_threads() -> None:
    """In a worker process (pool or Dask), which runs nothing but units."""
    import cv2

    cv2.setNumThreads(WORKER_OPENCV_THREADS)


@contextlib.contextmanager
def _opencv_threads_for_the_run():
    """In the caller's process (one worker): the workers' OpenCV thread count while the units run,
    the caller's own afterwards (a notebook that builds keeps its OpenCV setting)."""
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(WORKER_OPENCV_THREADS)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def _init_worker(setup: Optional[Callable], context, progress_queue) -> None:
    global _CONTEXT, _PROGRESS
    _CONTEXT = context
    _PROGRESS = progress_queue
    _limit_opencv_threads()
    if setup is not None:
        _setup_once(setup, context)
    import gc

    gc.freeze()  # the modules and the context live for the whole run: keep them out of GC passes


def _report(n: int) -> None:
    if _PROGRESS is not None and n:
        _PROGRESS.put(n)


_SETUP_ERROR = None  # a worker whose setup failed reports that failure for every unit it is given


def _call(fn, context, unit, progress):
    """fn on one unit; an exception comes back as a WorkError (picklable: its type, message and
    traceback as text), whichever executor runs it. The driver adds which unit (_name_failure)."""
    if _SETUP_ERROR is not None:
        raise _SETUP_ERROR
    try:
        return fn(context, unit, progress)
    except Exception as exc:
        raise WorkError("", exc) from exc


def _setup_once(setup, context) -> None:
    global _SETUP_ERROR
    try:
        setup(context)
    except Exception as exc:
        _SETUP_ERROR = WorkError("the worker's setup (loading plugins, models)", exc)


def _name_failure(exc: WorkError, unit, unit_name) -> WorkError:
    return WorkError(unit_name(unit) if unit_name else f"unit {unit}", exc)


def _run_unit(fn, unit):
    return _call(fn, _CONTEXT, unit, _report)


def run_units(fn: Callable, context, units: Iterable[int], *, workers: int, on_result: Callable[[dict], None],
              on_progress: Callable[[int], None] = lambda n: None, setup: Optional[Callable] = None,
              executor: str = "local", scheduler: Optional[str] = None,
              unit_name: Optional[Callable[[int], str]] = None) -> None:
    """Run fn(context, unit, progress) for every unit; on_result gets each result as it arrives.

    A unit that raises stops the run with a WorkError: the cause's type and message, and the unit
    (unit_name(unit), a module-level function or picklable callable, says it for people)."""
    if executor == "dask":
        return run_dask(fn, context, units, workers=workers, on_result=on_result, on_progress=on_progress,
                        setup=setup, scheduler=scheduler, unit_name=unit_name)
    if executor != "local":
        raise ConfigError(f"--executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if scheduler:
        raise ConfigError("--scheduler goes with --executor dask")
    return run_local(fn, context, units, workers=workers, on_result=on_result, on_progress=on_progress,
                     setup=setup, unit_name=unit_name)


def run_local(fn, context, units, *, workers, on_result, on_progress=lambda n: None, setup=None,
              unit_name=None) -> None:
    units = list(units)
    if not units:
        return
    if workers <= 1 or len(units) == 1:
        global _CONTEXT, _PROGRESS, _SETUP_ERROR
        _CONTEXT, _PROGRESS, _SETUP_ERROR = context, None, None
        if setup is not None:
            _setup_once(setup, context)
        try:
            with _opencv_threads_for_the_run():
                for u in units:
                    try:
                        result = _call(fn, context, u, on_progress)
                    except WorkError as exc:
                        raise _name_failure(exc, u, unit_name) from exc
                    on_result(result)
        finally:
            _SETUP_ERROR = None
        return
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = mp.get_context("spawn")
    progress_queue = ctx.Queue()
    # ProcessPoolExecutor, not Pool: a worker that dies (killed, out of memory) breaks the
    # pool with an error instead of leaving its unit pending for ever
    pool = ProcessPoolExecutor(max_workers=min(workers, len(units)), mp_context=ctx,
                               initializer=_init_worker, initargs=(setup, context, progress_queue))
    try:
        unit_of = {pool.submit(_run_unit, fn, u): u for u in units}
        pending = set(unit_of)
        while pending:
            finished, pending = wait(pending, timeout=0.05, return_when=FIRST_COMPLETED)
            _drain(progress_queue, on_progress)
            for future in finished:
                try:
                    result = future.result()
                except WorkError as exc:
                    raise _name_failure(exc, unit_of[future], unit_name) from exc
                on_result(result)
        pool.shutdown(wait=True)
    except BaseException:
        # the workers, taken before shutdown() (which sets the pool's table to None): a failure
        # must surface as itself, not as an AttributeError from the clean-up
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in processes:
            try:
                proc.terminate()
            except Exception:
                pass
        raise
    finally:
        progress_queue.close()


def _drain(q, on_progress) -> None:
    while True:
        try:
            on_progress(q.get_nowait())
        except queue.Empty:
            return


# ---------------------------------------------------------------------------- dask

_SET_UP = set()  # per worker process: the contexts whose setup already ran


def _dask_unit(fn, context, token, setup, topic, unit):
    from distributed import get_worker

    worker = get_worker()
    if token not in _SET_UP:
        _limit_opencv_threads()
        if setup is not None:
            try:
                setup(context)
            except Exception as exc:
                raise WorkError("the worker's setup (loading plugins, models)", exc) from exc
        # A Dask worker holds far more long-lived objects than a pool worker; the garbage
        # collector would walk them all again and again while the patches churn.
        import gc

        gc.freeze()
        _SET_UP.add(token)

    def progress(n):
        if n:
            worker.log_event(topic, {"n": int(n)})
    return _call(fn, context, unit, progress)


def LOCAL_CLUSTER_CONFIG() -> dict:
    """Dask settings for the LocalCluster this module starts (a cluster of yours keeps its own).

    Dask's workers start with MALLOC_TRIM_THRESHOLD_=65536, which makes glibc hand memory back
    to the kernel whenever 64 KB are free at the top of the heap: a patch pipeline allocates
    and frees arrays of about that size all the time, and the trimming tripled the system
    time of a build (measured: 4 s -> 11-15 s for 20,000 triplets). The monitors that wake
    every 20 to 500 ms (event-loop ticks, system and memory monitors) are slowed down too:
    on a small machine they take CPU and the GIL from the work.
    """
    import dask

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    return {"distributed.nanny.pre-spawn-environ": environ, "distributed.admin.tick.interval": "500ms",
            "distributed.admin.system-monitor.interval": "2s", "distributed.worker.memory.monitor-interval": "1s"}


def run_dask(fn, context, units, *, workers, on_result, on_progress=lambda n: None, setup=None,
             scheduler=None, unit_name=None) -> None:
    """Each unit is one Dask task. A task lost with its worker is rescheduled by Dask and
    rewrites the same files (atomically), so nothing is lost and nothing differs."""
    try:
        import dask
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise MissingExtra("--executor dask needs dask.distributed: pip install 'bapps-build[dask]'") from None
    units = list(units)
    if not units:
        return
    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        with dask.config.set(LOCAL_CLUSTER_CONFIG()):
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None, silence_logs=40)
        client = Client(cluster)
    topic = f"bapps-progress-{uuid.uuid4().hex}"
    token = uuid.uuid4().hex
    try:
        client.subscribe_topic(topic, lambda event: on_progress(event[1]["n"]))
        [ctx_future] = client.scatter([context], broadcast=True)
        unit_of = {client.submit(_dask_unit, fn, ctx_future, token, setup, topic, u, pure=False,
                                 key=f"bapps-unit-{token}-{u}"): u for u in units}
        for future in as_completed(list(unit_of)):
            try:
                result = future.result()
            except WorkError as exc:
                raise _name_failure(exc, unit_of[future], unit_name) from exc
            on_result(result)
        client.unsubscribe_topic(topic)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
