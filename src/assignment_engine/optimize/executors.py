"""Where components are solved: in this process, or in a pool of worker processes that a stop ends at once.

Only components that need CP-SAT go to the pool. Each worker receives a
shipment (shipment.py), builds the ``Component`` from it and runs its
``solve``; a stop reaches the parent, which ends every worker, and a
worker that dies fails the run with a message.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np

from ..errors import AssignmentEngineError, Finding, Location
from .clock import share_time, work
from .component import Component
from .problem import ComponentResult, Problem, Solution, components
from .shipment import PairTables, Pending, global_owners, ship, solve_shipment


def solve(problem: Problem, workers: int = 1, executor: str = "local", scheduler: Any = None) -> Solution:
    """Solve every component; with ``workers`` > 1 the ones that need CP-SAT run in worker processes.

    With ``executor="dask"`` they run on a Dask cluster instead (distributed.py):
    ``scheduler`` is its address or a ``distributed.Client``, or None for a
    local cluster of ``workers`` processes.

    Components are independent and each is solved by one deterministic CP-SAT
    worker, so the answer does not depend on ``workers``, the executor or scheduling.
    Each component is built once here, for its fair shares and its work, and solved at
    once when it needs no solver; one that goes to workers is dropped and travels as a
    shipment (shipment.py), to be built again there: the parent never holds every
    component's per-pair arrays (44M pairs in a book of ten million accounts).
    """
    owner = np.full(problem.n_units, -1, dtype=np.int64)
    fair = _no_shares(problem)
    here = executor == "local" and workers <= 1  # solved in this process: keep what was built
    results: list[ComponentResult | None] = []
    pending: list[Pending] = []
    for index, part in enumerate(_built(problem, fair)):
        if part.needs_solver:
            pending.append(Pending(index, part.users, part.units, part.pairs, work(part), part if here else None))
            results.append(None)
        else:
            chosen, result = part.solve()
            owner[part.units] = chosen
            results.append(result)
    if problem.deadline is not None:  # each its share of the time left, by its work; largest first (clock.py)
        pending = share_time(pending, problem.deadline, workers, weigh=lambda p: p.work)
    if executor == "dask":
        from .distributed import on_dask  # noqa: PLC0415  the distributed extra, imported only when asked for

        solved = on_dask(problem, pending, scheduler, workers)
    elif workers > 1 and len(pending) > 1:
        solved = _in_processes(problem, pending, min(workers, len(pending)))
    else:
        solved = [p.component(problem).solve() for p in pending]
    for p, (chosen, result) in zip(pending, solved, strict=True):
        owner[p.units] = chosen
        results[p.index] = result
    return Solution(owner, fair, [r for r in results if r is not None])


def replay(problem: Problem, owner: np.ndarray, results: list[ComponentResult]) -> Solution:
    """The solution of a saved plan: its owners per unit and solver results, with fair shares recomputed; no solving."""
    fair = _no_shares(problem)
    for _ in _built(problem, fair):  # each component built for its fair shares, and dropped
        pass
    return Solution(owner, fair, results)


def _parts(problem: Problem) -> tuple[list[Component], dict[str, np.ndarray]]:
    """Every component built, and every balance dimension's fair share per user (for tests and benchmarks
    that look inside components; ``solve`` builds them one at a time)."""
    fair = _no_shares(problem)
    return list(_built(problem, fair)), fair


def _no_shares(problem: Problem) -> dict[str, np.ndarray]:
    """Every balance dimension's fair share per user, zero until :func:`_built` writes each component's."""
    return {d.label: np.zeros(len(problem.user_ids)) for d in problem.dims if d.tolerance is not None}


def _built(problem: Problem, fair: dict[str, np.ndarray]) -> Iterator[Component]:
    """The components, built one at a time, each one's fair shares written into ``fair`` as it is built."""
    for users, units in components(problem):
        part = Component(problem, users, units)
        for label, shares in part.fair.items():
            fair[label][users] = shares
        yield part


def _in_processes(problem: Problem, pending: list[Pending], workers: int) -> list[tuple[np.ndarray, ComponentResult]]:
    """Every pending component shipped to worker processes and solved there, results in order.

    A stop (SIGINT, SIGTERM) reaches the parent, which then ends every worker at
    once instead of waiting for their components; a worker that dies (killed,
    out of memory) fails the run with a message instead of leaving it waiting.
    """
    tables = PairTables(problem)
    shipments = [ship(problem, p.users, p.units, tables, p) for p in pending]
    pool = ProcessPoolExecutor(workers, initializer=_worker_start)
    try:
        timed = any(p.deadline is not None for p in pending)  # one at a time, in order: each part's deadline assumes it
        solved = list(pool.map(solve_shipment, shipments, chunksize=1 if timed else max(1, len(pending) // (8 * workers))))
    except BrokenProcessPool:
        raise AssignmentEngineError(
            [Finding(Location("workers"), "a worker process died (killed, or out of memory?); nothing was written. Try fewer workers")]
        ) from None
    except BaseException:
        running = getattr(pool, "_processes", None) or {}  # Python 3.14's terminate_workers(), by hand
        for process in list(running.values()):
            process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)  # nothing left to wait for but the pool's own thread
        raise
    pool.shutdown()
    return [(global_owners(p.users, chosen), result) for p, (chosen, result) in zip(pending, solved, strict=True)]


def _worker_start() -> None:
    """Workers leave stops to the parent (a terminal's Ctrl-C reaches the whole group), end quietly and die with it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not a handler inherited from the parent
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1
