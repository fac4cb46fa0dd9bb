"""Where components are solved: in this process, or in a pool of worker processes that a stop ends at once.

Only components that need CP-SAT go to the pool. Each worker receives a
``Component`` pickled (found again by its module path, component.py) and runs
its ``solve``; a stop reaches the parent, which ends every worker, and a
worker that dies fails the run with a message.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np

from ..errors import AssignmentEngineError, Finding, Location
from .clock import share_time
from .component import Component
from .problem import ComponentResult, Problem, Solution, components


def solve(problem: Problem, workers: int = 1, executor: str = "local", scheduler: Any = None) -> Solution:
    """Solve every component; with ``workers`` > 1 the ones that need CP-SAT run in worker processes.

    With ``executor="dask"`` they run on a Dask cluster instead (distributed.py):
    ``scheduler`` is its address or a ``distributed.Client``, or None for a
    local cluster of ``workers`` processes.

    Components are independent and each is solved by one deterministic CP-SAT
    worker, so the answer does not depend on ``workers``, the executor or scheduling.
    """
    owner = np.full(problem.n_units, -1, dtype=np.int64)
    parts, fair = _parts(problem)
    heavy = [p for p in parts if p.needs_solver]
    if problem.deadline is not None:  # each its share of the time left, by its size; largest first (clock.py)
        heavy = share_time(heavy, problem.deadline, workers)
    if executor == "dask":
        from .distributed import on_dask  # the distributed extra, imported only when asked for

        solved = dict(zip(map(id, heavy), on_dask(problem, heavy, scheduler, workers)))
    elif workers > 1 and len(heavy) > 1:
        solved = dict(zip(map(id, heavy), _in_processes(heavy, min(workers, len(heavy)))))
    else:
        solved = {id(p): p.solve() for p in heavy}
    results = []
    for part in parts:
        chosen, result = solved[id(part)] if id(part) in solved else part.solve()
        owner[part.units] = chosen
        results.append(result)
    return Solution(owner, fair, results)


def replay(problem: Problem, owner: np.ndarray, results: list[ComponentResult]) -> Solution:
    """The solution of a saved plan: its owners per unit and solver results, with fair shares recomputed; no solving."""
    return Solution(owner, _parts(problem)[1], results)


def _parts(problem: Problem) -> tuple[list[Component], dict[str, np.ndarray]]:
    """The components, and every balance dimension's fair share per user (each component's own)."""
    fair = {d.label: np.zeros(len(problem.user_ids)) for d in problem.dims if d.tolerance is not None}
    parts = []
    for users, units in components(problem):
        part = Component(problem, users, units)
        for label, shares in part.fair.items():
            fair[label][users] = shares
        parts.append(part)
    return parts, fair


def _solve_part(part: Component) -> tuple[np.ndarray, ComponentResult]:
    return part.solve()


def _in_processes(parts: list[Component], workers: int) -> list[tuple[np.ndarray, ComponentResult]]:
    """Every part solved in worker processes, in order.

    A stop (SIGINT, SIGTERM) reaches the parent, which then ends every worker at
    once instead of waiting for their components; a worker that dies (killed,
    out of memory) fails the run with a message instead of leaving it waiting.
    """
    pool = ProcessPoolExecutor(workers, initializer=_worker_start)
    try:
        timed = any(p.deadline is not None for p in parts)  # one at a time, in order: each part's deadline assumes it
        results = list(pool.map(_solve_part, parts, chunksize=1 if timed else max(1, len(parts) // (8 * workers))))
    except BrokenProcessPool:
        raise AssignmentEngineError([Finding(Location("workers"), "a worker process died (killed, or out of memory?); nothing was written. Try fewer workers")]) from None
    except BaseException:
        running = getattr(pool, "_processes", None) or {}  # Python 3.14's terminate_workers(), by hand
        for process in list(running.values()):
            process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)  # nothing left to wait for but the pool's own thread
        raise
    pool.shutdown()
    return results


def _worker_start() -> None:
    """Workers leave stops to the parent (a terminal's Ctrl-C reaches the whole group), end quietly and die with it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not a handler inherited from the parent
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1
