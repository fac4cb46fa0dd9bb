"""The Dask executor: components solved on a ``distributed`` cluster (the ``distributed`` extra).

``solve(problem, workers, executor="dask", scheduler=...)`` (executors.py)
sends every component that needs CP-SAT to a Dask scheduler: an address
(``tcp://host:8786``), a ``distributed.Client`` the caller holds, or none,
which starts a ``LocalCluster`` of ``workers`` single-threaded processes for
the run.

What travels is a :class:`Shipment`: the component's part of the problem in
index form, users and units numbered from 0 — per-unit and per-user numpy
arrays, and the per-pair tables of a pairs file as key and value arrays, each
whole-valued array pickled in the smallest integer type that holds it. A
worker builds the ``Component`` from it (component.py) and solves it; the
per-pair arrays a ``Component`` holds are several times larger than what it
is built from, so they are never sent (M book: 2.0 MiB shipped for 199
components, 28.8 MiB as built components). Largest components are submitted first
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
import dataclasses
import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import AssignmentEngineError, Finding, Location, OptionError
from .component import Component
from .problem import ComponentResult, Holdings, Problem

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
        import distributed  # noqa: F401
    except ImportError:
        raise OptionError([Finding(Location("executor"), f"the dask executor needs {MISSING}")]) from None


# -- what travels -------------------------------------------------------------------


@dataclass
class Shipment:
    """One component as a worker receives it: its part of the problem, users and units numbered from 0.

    Per-pair tables (affinity costs, eligible pairs, per-pair loads) travel as
    sorted keys (local unit × users + local user) and values, not as
    dictionaries of tuples; :meth:`component` rebuilds them on the worker.
    """

    problem: Problem  # without pair_cost, pair_allowed and per-pair loads
    pair_cost: tuple[np.ndarray, np.ndarray] | None
    pair_allowed: np.ndarray | None
    pair_values: list[tuple[np.ndarray, np.ndarray] | None]  # per load dimension
    settings: dict[str, object] = dataclasses.field(default_factory=dict)  # the part's own scalars (see :func:`ship`)

    def component(self) -> Component:
        """The ``Component`` the local executor builds from the whole problem, field for field."""
        p = self.problem
        n_users = len(p.user_ids)

        def table(keys: np.ndarray, values: np.ndarray) -> dict[tuple[int, int], float]:
            return dict(zip(zip((keys // n_users).tolist(), (keys % n_users).tolist()), values.tolist()))

        problem = dataclasses.replace(
            p,
            pair_cost=None if self.pair_cost is None else table(*self.pair_cost),
            pair_allowed=None if self.pair_allowed is None else set(zip((self.pair_allowed // n_users).tolist(), (self.pair_allowed % n_users).tolist())),
            dims=[dataclasses.replace(d, pair_values=None if pv is None else table(*pv)) for d, pv in zip(p.dims, self.pair_values)],
        )
        part = Component(problem, list(range(n_users)), np.arange(p.n_units, dtype=np.int64))
        for name, value in self.settings.items():
            setattr(part, name, value)
        return part

    def __getstate__(self) -> dict[str, object]:
        """Pickled with every whole-valued array in the smallest integer type that holds it (restored exactly)."""
        return {f.name: _packed(getattr(self, f.name), _narrow) for f in dataclasses.fields(self)}

    def __setstate__(self, state: dict[str, object]) -> None:
        for name, value in state.items():
            setattr(self, name, _packed(value, _widen))


@dataclass
class _Narrowed:
    """An array kept in a smaller integer type, and the type it is restored to."""

    values: np.ndarray
    dtype: str


_NARROW_TYPES = [(np.dtype(t), np.iinfo(t)) for t in (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.int64)]


def _narrow(a: np.ndarray) -> np.ndarray | _Narrowed:
    """``a`` in the smallest integer type that holds its values exactly (counts, indices, whole amounts), else as it is."""
    if a.ndim != 1 or not len(a) or a.dtype.kind not in "iuf":
        return a
    if a.dtype.kind == "f" and not (np.all(np.isfinite(a)) and np.all(np.mod(a, 1) == 0) and not np.any(np.signbit(a) & (a == 0))):
        return a  # fractions, infinities, NaN and -0.0 do not survive an integer type
    lo, hi = a.min(), a.max()
    for t, info in _NARROW_TYPES:
        if t.itemsize < a.dtype.itemsize and info.min <= lo and hi <= info.max:
            return _Narrowed(a.astype(t), a.dtype.str)
    return a


def _widen(a: object) -> object:
    return a.values.astype(np.dtype(a.dtype)) if isinstance(a, _Narrowed) else a


def _packed(obj: Any, convert: Any) -> Any:
    """``obj`` with ``convert`` applied to every array (or narrowed array) inside its dataclasses, lists and tuples."""
    if isinstance(obj, (np.ndarray, _Narrowed)):
        return convert(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: _packed(getattr(obj, f.name), convert) for f in dataclasses.fields(obj)})
    if isinstance(obj, list):
        return [_packed(x, convert) for x in obj]
    if isinstance(obj, tuple):
        return tuple(_packed(x, convert) for x in obj)
    return obj


class _PairTables:
    """A problem's per-pair dictionaries as arrays sorted by global key (unit × users + user), built once a run."""

    def __init__(self, problem: Problem):
        self.n_users = len(problem.user_ids)
        self.cost = None if problem.pair_cost is None else self._arrays(problem.pair_cost)
        self.allowed = None if problem.pair_allowed is None else np.unique(np.fromiter((u * self.n_users + c for u, c in problem.pair_allowed), dtype=np.int64, count=len(problem.pair_allowed)))
        self.values = [None if d.pair_values is None else self._arrays(d.pair_values) for d in problem.dims]

    def _arrays(self, table: dict[tuple[int, int], float]) -> tuple[np.ndarray, np.ndarray]:
        keys = np.fromiter((u * self.n_users + c for u, c in table), dtype=np.int64, count=len(table))
        values = np.fromiter(table.values(), dtype=np.float64, count=len(table))
        order = np.argsort(keys, kind="stable")
        return keys[order], values[order]


def ship(problem: Problem, users: list[int], units: np.ndarray, tables: _PairTables | None = None, part: Component | None = None) -> Shipment:
    """The component ``(users, units)`` of ``problem`` (as ``components`` gives them: both sorted) as a :class:`Shipment`.

    With ``part`` (that component, built here), its scalar attributes travel too and are set on the
    worker's copy: whatever an executor set on the part after building it (a deadline of its own) holds there."""
    tables = tables or _PairTables(problem)
    n = len(problem.user_ids)
    m = len(users)
    user_index = np.asarray(users, dtype=np.int64)
    local_user = np.full(n, -1, dtype=np.int64)
    local_user[user_index] = np.arange(m)

    def restrict(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions of the sorted global ``keys`` on this component's units and users, and their local keys."""
        lo = np.searchsorted(keys, units * n)
        hi = np.searchsorted(keys, (units + 1) * n)
        counts = hi - lo
        at = np.repeat(lo - (np.cumsum(counts) - counts), counts) + np.arange(int(counts.sum()))
        unit = np.repeat(np.arange(len(units), dtype=np.int64), counts)
        user = local_user[keys[at] % n] if len(at) else np.empty(0, dtype=np.int64)
        keep = user >= 0
        return at[keep], unit[keep] * m + user[keep]

    # candidate sets: the ones this component's units use, renumbered in order, their users local
    used, unit_set = np.unique(problem.unit_set[units], return_inverse=True)
    candidate_sets = [tuple(int(local_user[u]) for u in problem.candidate_sets[s]) for s in used.tolist()]
    at, keys = restrict(problem.held.keys)
    held = Holdings(keys, problem.held.accounts[at], problem.held.value[at], m)  # keys stay sorted: the renumbering keeps order
    dims = [
        dataclasses.replace(d, unit_values=d.unit_values[units], fixed=d.fixed[user_index], capacity=None if d.capacity is None else d.capacity[user_index], pair_values=None)
        for d in problem.dims
    ]

    def pairs(table: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray] | None:
        if table is None:
            return None
        at, keys = restrict(table[0])
        return keys, table[1][at]

    sub = dataclasses.replace(
        problem,
        user_ids=[problem.user_ids[u] for u in users],
        weight=problem.weight[user_index],
        candidate_sets=candidate_sets,
        unit_set=unit_set.astype(np.int64).reshape(-1),
        unit_size=problem.unit_size[units],
        unit_value=problem.unit_value[units],
        held=held,
        dims=dims,
        pair_cost=None,
        pair_allowed=None,
    )
    allowed = None if tables.allowed is None else restrict(tables.allowed)[1]
    settings: dict[str, object] = {k: v for k, v in vars(part).items() if isinstance(v, (bool, int, float, str, type(None)))} if part is not None else {}
    return Shipment(sub, pairs(tables.cost), allowed, [pairs(pv) for pv in tables.values], settings)


def solve_shipment(shipment: Shipment) -> tuple[np.ndarray, ComponentResult]:
    """What a Dask worker runs: the component built and solved; owners as local user indices (-1: unassigned)."""
    return shipment.component().solve()


# -- the cluster --------------------------------------------------------------------


def on_dask(problem: Problem, parts: list[Component], scheduler: str | Client | None = None, workers: int = 1) -> list[tuple[np.ndarray, ComponentResult]]:
    """Every part solved on a Dask cluster, results in the order of ``parts`` (owners as global user indices).

    ``scheduler``: an address, a ``distributed.Client``, or None for a
    ``LocalCluster`` of ``workers`` processes started for this call.
    """
    if not parts:
        return []
    check_executor("dask", scheduler)
    tables = _PairTables(problem)
    order = sorted(range(len(parts)), key=lambda i: (-len(parts[i].pair_user), -len(parts[i].units), i))  # largest first
    run = uuid.uuid4().hex[:8]
    with _client(scheduler, workers) as (client, where):
        futures: list[Future] = []
        try:
            for rank, i in enumerate(order):
                shipment = ship(problem, parts[i].users, parts[i].units, tables, parts[i])
                futures.append(client.submit(solve_shipment, shipment, key=f"assignment-component-{i}-{run}", priority=len(order) - rank, pure=False))
            gathered = _gather(futures, [parts[i] for i in order], where)
        except BaseException:
            with contextlib.suppress(Exception):
                client.cancel(futures, force=True)
            raise
    results: list[tuple[np.ndarray, ComponentResult]] = [None] * len(parts)  # type: ignore[list-item]
    for i, (chosen, result) in zip(order, gathered):
        users = np.asarray(parts[i].users, dtype=np.int64)
        results[i] = (np.where(chosen >= 0, users[np.maximum(chosen, 0)], -1), result)
    return results


def _gather(futures: list[Future], parts: list[Component], where: str) -> list[tuple[np.ndarray, ComponentResult]]:
    """Results in submission order, read as they complete (a failure ends the run at once, not when its turn
    comes); every failure as an ``AssignmentEngineError`` that says what happened where."""
    from distributed import as_completed
    from distributed.client import FutureCancelledError
    from distributed.scheduler import KilledWorker

    lost = f"lost the Dask scheduler at {where} while solving; nothing was written. Is it still running?"
    position = {future.key: k for k, future in enumerate(futures)}
    results: list[Any] = [None] * len(futures)
    try:
        for future, result in as_completed(futures, with_results=True, raise_errors=False):
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
    from distributed import Client, LocalCluster

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
                raise _error(f"the Dask scheduler at {scheduler} has no workers (none joined within {WORKERS_TIMEOUT} s)", "scheduler") from None
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


def payload_bytes(problem: Problem, parts: list[Component]) -> tuple[int, int]:
    """Pickled bytes of every part as shipped and as a whole ``Component`` (what the benchmark prints)."""
    import pickle

    tables = _PairTables(problem)
    shipped = sum(len(pickle.dumps(ship(problem, p.users, p.units, tables), protocol=5)) for p in parts)
    whole = sum(len(pickle.dumps(p, protocol=5)) for p in parts)
    return shipped, whole

