"""A component as it travels to a worker: its part of the problem in index form, not its per-pair arrays.

A :class:`Shipment` holds the component's users and units numbered from 0: per-unit and per-user numpy
arrays, and the per-pair tables of a pairs file as key and value arrays, each whole-valued array pickled in
the smallest integer type that holds it. A worker builds the ``Component`` from it (component.py) and solves
it. The per-pair arrays a ``Component`` holds are several times larger than what it is built from, so the
parent keeps only what it needs to schedule a component (a :class:`Pending`) and its shipment: the local
pool (executors.py) and the Dask executor (distributed.py) both send shipments.
"""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np

from .component import Component
from .problem import ComponentResult, Holdings, Problem


@dataclass
class Pending:
    """A component that needs CP-SAT, as the parent holds it until it is solved: where it is in the problem,
    its size and estimated work (clock.work), the deadline the executor gives it, and, when it is solved in
    this process, the component itself."""

    index: int  # its place among the problem's components
    users: list[int]
    units: np.ndarray
    pairs: int
    work: float
    part: Component | None = None
    deadline: float | None = None

    def component(self, problem: Problem) -> Component:
        """The component, built again when it was not kept, with the deadline given to it."""
        part = self.part or Component(problem, self.users, self.units)
        if self.deadline is not None:
            part.deadline = self.deadline
        return part


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
    deadline: float | None = None  # the one the executor gave the component (clock.share_time)

    def component(self) -> Component:
        """The ``Component`` the local executor builds from the whole problem, field for field."""
        p = self.problem
        n_users = len(p.user_ids)

        def table(keys: np.ndarray, values: np.ndarray) -> dict[tuple[int, int], float]:
            return dict(zip(zip((keys // n_users).tolist(), (keys % n_users).tolist(), strict=True), values.tolist(), strict=True))

        problem = dataclasses.replace(
            p,
            pair_cost=None if self.pair_cost is None else table(*self.pair_cost),
            pair_allowed=None
            if self.pair_allowed is None
            else set(zip((self.pair_allowed // n_users).tolist(), (self.pair_allowed % n_users).tolist(), strict=True)),
            dims=[
                dataclasses.replace(d, pair_values=None if pv is None else table(*pv))
                for d, pv in zip(p.dims, self.pair_values, strict=True)
            ],
        )
        part = Component(problem, list(range(n_users)), np.arange(p.n_units, dtype=np.int64))
        if self.deadline is not None:
            part.deadline = self.deadline
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


class PairTables:
    """A problem's per-pair dictionaries as arrays sorted by global key (unit × users + user), built once a run."""

    def __init__(self, problem: Problem):
        self.n_users = len(problem.user_ids)
        self.cost = None if problem.pair_cost is None else self._arrays(problem.pair_cost)
        self.allowed = (
            None
            if problem.pair_allowed is None
            else np.unique(
                np.fromiter((u * self.n_users + c for u, c in problem.pair_allowed), dtype=np.int64, count=len(problem.pair_allowed))
            )
        )
        self.values = [None if d.pair_values is None else self._arrays(d.pair_values) for d in problem.dims]

    def _arrays(self, table: dict[tuple[int, int], float]) -> tuple[np.ndarray, np.ndarray]:
        keys = np.fromiter((u * self.n_users + c for u, c in table), dtype=np.int64, count=len(table))
        values = np.fromiter(table.values(), dtype=np.float64, count=len(table))
        order = np.argsort(keys, kind="stable")
        return keys[order], values[order]


def ship(
    problem: Problem, users: list[int], units: np.ndarray, tables: PairTables | None = None, part: Component | Pending | None = None
) -> Shipment:
    """The component ``(users, units)`` of ``problem`` (as ``components`` gives them: both sorted) as a :class:`Shipment`.

    With ``part`` (that component, or its :class:`Pending`), the deadline an executor gave it travels too."""
    tables = tables or PairTables(problem)
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
        dataclasses.replace(
            d,
            unit_values=d.unit_values[units],
            fixed=d.fixed[user_index],
            capacity=None if d.capacity is None else d.capacity[user_index],
            pair_values=None,
        )
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
    return Shipment(sub, pairs(tables.cost), allowed, [pairs(pv) for pv in tables.values], None if part is None else part.deadline)


def solve_shipment(shipment: Shipment) -> tuple[np.ndarray, ComponentResult]:
    """What a worker runs: the component built and solved; owners as local user indices (-1: unassigned)."""
    return shipment.component().solve()


def global_owners(users: list[int], chosen: np.ndarray) -> np.ndarray:
    """A shipped component's owners (local user indices, -1: unassigned) as the problem's user indices."""
    index = np.asarray(users, dtype=np.int64)
    return np.where(chosen >= 0, index[np.maximum(chosen, 0)] if len(index) else -1, -1)


# -- the cluster --------------------------------------------------------------------


def payload_bytes(problem: Problem, parts: list[Component]) -> tuple[int, int]:
    """Pickled bytes of every part as shipped and as a whole ``Component`` (what the benchmark prints)."""
    tables = PairTables(problem)
    shipped = sum(len(pickle.dumps(ship(problem, p.users, p.units, tables), protocol=5)) for p in parts)
    whole = sum(len(pickle.dumps(p, protocol=5)) for p in parts)
    return shipped, whole
