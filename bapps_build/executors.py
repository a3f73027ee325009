"""Running units of work (ranges of example indices) on the cores of this machine.

The unit is a pure function of (context, unit id) that writes its own files and returns a
small dict; any scheduler can run any unit in any order. The default is a local process
pool; with one worker everything runs in this process.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from typing import Callable, Iterable, Optional

_CONTEXT = None


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _init_worker(setup: Optional[Callable], context) -> None:
    global _CONTEXT
    _CONTEXT = context
    if setup is not None:
        setup(context)


def _run_unit(args):
    fn, unit = args
    return fn(_CONTEXT, unit)


def run_local(fn: Callable, context, units: Iterable[int], workers: int,
              on_result: Callable[[dict], None], setup: Optional[Callable] = None) -> None:
    """Run fn(context, unit) for every unit; on_result gets each result as it arrives.

    Workers are started with the "spawn" method: nothing of this process's state (threads,
    open files, a half-initialised library) is inherited, on every platform alike. The
    context is sent once per worker, not once per unit.
    """
    units = list(units)
    if not units:
        return
    if workers <= 1 or len(units) == 1:
        _init_worker(setup, context)
        for u in units:
            on_result(fn(context, u))
        return
    ctx = mp.get_context("spawn")
    pool = ctx.Pool(processes=min(workers, len(units)), initializer=_init_worker, initargs=(setup, context))
    try:
        for result in pool.imap_unordered(_run_unit, [(fn, u) for u in units]):
            on_result(result)
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
