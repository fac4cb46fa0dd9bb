"""The Dask executor: components solved on a ``distributed`` cluster (the ``distributed`` extra).

``solve(problem, workers, executor="dask", scheduler=...)`` (executors.py)
sends every component that needs CP-SAT to a Dask scheduler: an address
(``tcp://host:8786``), a ``distributed.Client`` the caller holds, or none,
which starts a ``LocalCluster`` of ``workers`` single-threaded processes for
the run.

What travels is a :class:`~.shipment.Shipment` (shipment.py), as to the
local executor's worker processes: a worker builds the ``Component`` from it
and solves it (M book: 2.0 MiB shipped for 199 components, 28.8 MiB as built
components). Largest components are submitted first
and with the highest priority (the run can end no sooner than its largest
component), and the results are gathered in submission order.

Each component is solved by one deterministic CP-SAT worker on a
deterministic budget (cpsat.py), so the plan is the one the local executor
makes, whatever the cluster. A task that fails, a worker that dies and a
scheduler that goes away end the run with an ``AssignmentEngineError``;
Ctrl-C (or SIGTERM in the CLI) cancels every submitted component.
"""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import AssignmentEngineError, Finding, Location, OptionError
from .component import Component
from .problem import ComponentResult, Problem
from .shipment import PairTables, Pending, global_owners, payload_bytes, ship, solve_shipment

__all__ = ["EXECUTORS", "check_executor", "dask_setup", "on_dask", "payload_bytes", "ship", "solve_shipment"]

if TYPE_CHECKING:
    from distributed import Client, Future

EXECUTORS = ("local", "dask")
MISSING = "the distributed extra: pip install 'assignment-engine[distributed]'"
CONNECT_TIMEOUT = "20s"  # to reach a scheduler given by address
WORKERS_TIMEOUT = 60  # seconds for a first worker to join a scheduler that has none


def check_executor(executor: str, scheduler: object = None) -> None:
    """:class:`OptionError` for an unknown executor, a scheduler without the Dask executor, or the Dask
    executor without its extra: checked before a run, which would otherwise read and match for nothing."""
    if executor not in EXECUTORS:
        raise OptionError([Finding(Location("executor"), f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")])
    if executor != "dask":
        if scheduler is not None:
            raise OptionError([Finding(Location("scheduler"), "a scheduler is only used by the dask executor (--executor dask)")])
        return
    try:
        import distributed  # noqa: F401, PLC0415  the distributed extra, checked before a run
    except ImportError:
        raise OptionError([Finding(Location("executor"), f"the dask executor needs {MISSING}")]) from None


# -- what travels -------------------------------------------------------------------


def on_dask(
    problem: Problem, parts: Sequence[Component | Pending], scheduler: str | Client | None = None, workers: int = 1
) -> list[tuple[np.ndarray, ComponentResult]]:
    """Every part solved on a Dask cluster, results in the order of ``parts`` (owners as global user indices).

    ``scheduler``: an address, a ``distributed.Client``, or None for a
    ``LocalCluster`` of ``workers`` processes started for this call.
    """
    if not parts:
        return []
    check_executor("dask", scheduler)
    tables = PairTables(problem)
    order = sorted(range(len(parts)), key=lambda i: (-parts[i].pairs, -len(parts[i].units), i))  # largest first
    run = uuid.uuid4().hex[:8]
    with _client(scheduler, workers) as (client, where):
        futures: list[Future] = []
        try:
            for rank, i in enumerate(order):
                shipment = ship(problem, parts[i].users, parts[i].units, tables, parts[i])
                futures.append(
                    client.submit(solve_shipment, shipment, key=f"assignment-component-{i}-{run}", priority=len(order) - rank, pure=False)
                )
            gathered = _gather(client, futures, [parts[i] for i in order], where)
        except BaseException:
            with contextlib.suppress(Exception):
                client.cancel(futures, force=True)
            raise
    results: list[tuple[np.ndarray, ComponentResult]] = [None] * len(parts)  # type: ignore[list-item]
    for i, (chosen, result) in zip(order, gathered, strict=True):
        results[i] = (global_owners(parts[i].users, chosen), result)
    return results


def _gather(
    client: Client, futures: list[Future], parts: Sequence[Component | Pending], where: str
) -> list[tuple[np.ndarray, ComponentResult]]:
    """Results in submission order, read as they complete (a failure ends the run at once, not when its turn
    comes); every failure as an ``AssignmentEngineError`` that says what happened where.

    The futures are tracked on ``client``'s own event loop. ``as_completed`` would otherwise use the loop of
    the process's default client, which is another one when the caller holds a client of its own (``with
    Client(...)``) and gave an address: a result then set from one loop's thread on an event another loop
    waits for can be missed, and the run waits forever (seen once in about 30 runs)."""
    from distributed import as_completed  # noqa: PLC0415  the distributed extra
    from distributed.client import FutureCancelledError  # noqa: PLC0415  the distributed extra
    from distributed.scheduler import KilledWorker  # noqa: PLC0415  the distributed extra

    lost = f"lost the Dask scheduler at {where} while solving; nothing was written. Is it still running?"
    position = {future.key: k for k, future in enumerate(futures)}
    results: list[Any] = [None] * len(futures)
    try:
        for future, result in as_completed(futures, loop=client.loop, with_results=True, raise_errors=False):
            k = position[future.key]
            if future.status == "finished":
                results[k] = result
                continue
            if future.status != "error":  # cancelled: the connection to the scheduler went, or the scheduler did
                raise _error(lost)
            failure = result[1]  # (type, exception, traceback)
            what = f"a component of {len(parts[k].units):,} units and {len(parts[k].users):,} users"
            if isinstance(failure, KilledWorker):
                raise _error(f"a Dask worker died while solving {what} (killed, or out of memory?); nothing was written")
            raise _error(
                f"{what} failed on a Dask worker: {type(failure).__name__}: {failure} "
                "(every worker needs the assignment-engine version of this process installed)"
            )
    except (FutureCancelledError, OSError, TimeoutError):
        raise _error(lost) from None
    return results


@contextlib.contextmanager
def _client(scheduler: str | Client | None, workers: int) -> Iterator[tuple[Client, str]]:
    """The client to submit with and a name for its scheduler; what this call started, it closes."""
    from distributed import Client, LocalCluster  # noqa: PLC0415  the distributed extra

    if isinstance(scheduler, Client):
        yield scheduler, str(getattr(scheduler.scheduler, "address", None) or "the client's scheduler")
        return
    if scheduler is None:
        # no fixed dashboard port to collide on; each worker runs dask_setup below
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0", preload=[__name__])
        try:
            with Client(cluster) as client:
                yield client, f"a local cluster of {workers} workers"
        except BaseException:
            # a stop (or a failure) ends the workers at once: a closing worker would first finish its CP-SAT call
            for nanny in list(cluster.workers.values()):
                with contextlib.suppress(Exception):
                    os.kill(nanny.pid, signal.SIGKILL)
            raise
        finally:
            cluster.close()
        return
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as exc:
        raise _error(f"cannot reach the Dask scheduler at {scheduler}: {exc}", "scheduler") from None
    try:
        if not client.scheduler_info().get("workers"):
            try:
                client.wait_for_workers(1, timeout=WORKERS_TIMEOUT)
            except TimeoutError:
                raise _error(
                    f"the Dask scheduler at {scheduler} has no workers (none joined within {WORKERS_TIMEOUT} s)", "scheduler"
                ) from None
        yield client, str(scheduler)
    finally:
        with contextlib.suppress(Exception):
            client.close()


def dask_setup(worker: object) -> None:
    """Run by every worker of a local cluster started here (its preload): a terminal's Ctrl-C reaches the
    whole process group, and the run's process, not each worker, handles it (it ends the workers)."""
    with contextlib.suppress(ValueError):  # signal handlers can only be set from a process's main thread
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _error(message: str, where: str = "executor") -> AssignmentEngineError:
    return AssignmentEngineError([Finding(Location(where), message)])
