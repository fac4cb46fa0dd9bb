"""The LP relaxation of a component: a guide for the start and a proven bound.

On generalized-assignment-like components (capacities, no bands, a per-pair
cost) one CP-SAT worker barely improves a poor start and proves little in its
budget. The LP relaxation is nearly integral (a basic solution splits at most
one unit per load row), so rounding it gives a start within a few per cent
of the optimum, and its duals give a lower bound that needs no trust in the LP
solver: any non-negative prices on the rows give a valid Lagrangian bound.

With balance bands as two-sided rows it bounds the accounts moved in a strict
continuity phase in milliseconds, where CP-SAT needs its whole budget to prove
as much: a run stopped early by its time limit still reports a bound close
to the optimum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from ortools.linear_solver import linear_solver_pb2, pywraplp

from .limits import _NO_CAP, _Cap

if TYPE_CHECKING:
    from .component import Component


@dataclass
class Relaxation:
    values: np.ndarray  # per pair, the LP value in [0, 1]
    bound: float  # proven lower bound on the objective of every plan that places all units within capacity


@dataclass
class LoadRows:
    """One load per user: per-pair load, per-user cap (read only where ``capped``) and fixed load, and for a
    balance band a per-user floor (the band's low end) besides its cap (the high end)."""

    values: np.ndarray
    cap: np.ndarray
    capped: np.ndarray  # bool per user
    fixed: np.ndarray
    floor: np.ndarray | None = None


def relax(
    ptr: np.ndarray, pair_user: np.ndarray, user_pairs: list[np.ndarray], objective: np.ndarray, loads: list[LoadRows], effort: float, seconds: float = math.inf
) -> Relaxation | None:
    """Solve min objective·x, one pair per unit, within the load rows, with GLOP's dual simplex.

    Pairs are stored unit-major (unit k owns pairs ``ptr[k]:ptr[k+1]``, every
    unit at least one) and ``user_pairs[u]`` lists user u's pairs. None when the
    LP finds no optimum within ``effort`` deterministic seconds and ``seconds``
    of wall-clock time (either may be infinite) or has no solution (then no
    plan places every unit within the rows).
    """
    n_units = len(ptr) - 1
    model = linear_solver_pb2.MPModelProto()
    for cost in objective.tolist():
        model.variable.add(lower_bound=0.0, upper_bound=1.0, objective_coefficient=float(cost))
    for k in range(n_units):
        row = model.constraint.add(lower_bound=1.0, upper_bound=1.0)
        row.var_index.extend(range(int(ptr[k]), int(ptr[k + 1])))
        row.coefficient.extend([1.0] * int(ptr[k + 1] - ptr[k]))
    n_users = len(user_pairs)
    # a pair whose unit alone overfills its user's cap is in no plan: the LP may not split the unit into it
    # (a unit larger than every band but its holder's), nor may the bound price it
    barred = np.zeros(len(pair_user), dtype=bool)
    for load in loads:
        if np.all(load.values >= 0) and np.all(load.fixed >= 0):
            barred |= load.capped[pair_user] & (load.values + load.fixed[pair_user] > load.cap[pair_user])
    for p in np.flatnonzero(barred).tolist():
        model.variable[p].upper_bound = 0.0
    rows: list[tuple[int, int]] = []  # (load index, user) of each row, in row order
    for d, load in enumerate(loads):
        for u in np.flatnonzero(load.capped | (load.floor is not None)).tolist():
            mine = user_pairs[u]
            mine = mine[load.values[mine] != 0]
            high = float(load.cap[u] - load.fixed[u]) if load.capped[u] else np.inf
            low = float(load.floor[u] - load.fixed[u]) if load.floor is not None else -np.inf
            row = model.constraint.add(lower_bound=low, upper_bound=high)
            row.var_index.extend(mine.tolist())
            row.coefficient.extend(load.values[mine].astype(float).tolist())
            rows.append((d, u))
    request = linear_solver_pb2.MPModelRequest(
        model=model,
        solver_type=linear_solver_pb2.MPModelRequest.GLOP_LINEAR_PROGRAMMING,
        solver_specific_parameters="use_dual_simplex: true" + "".join(f" {name}: {limit}" for name, limit in (("max_deterministic_time", effort), ("max_time_in_seconds", seconds)) if math.isfinite(limit)),
    )
    response = linear_solver_pb2.MPSolutionResponse()
    pywraplp.Solver.SolveWithProto(request, response)
    if response.status != linear_solver_pb2.MPSOLVER_OPTIMAL:
        return None
    values = np.clip(np.asarray(response.variable_value, dtype=np.float64), 0.0, 1.0)
    prices, floor_prices = np.zeros((len(loads), n_users)), np.zeros((len(loads), n_users))
    for (d, u), dual in zip(rows, response.dual_value[n_units:]):
        prices[d, u] = max(-dual, 0.0)  # in a minimisation a binding ≤ side has a non-positive dual,
        floor_prices[d, u] = max(dual, 0.0)  # a binding ≥ side a non-negative one
    return Relaxation(values, lagrangian_bound(ptr, pair_user, objective, loads, prices, floor_prices, barred))


def lagrangian_bound(
    ptr: np.ndarray,
    pair_user: np.ndarray,
    objective: np.ndarray,
    loads: list[LoadRows],
    prices: np.ndarray,
    floor_prices: np.ndarray | None = None,
    barred: np.ndarray | None = None,
) -> float:
    """Σ over units of the cheapest priced pair − Σ prices × room above + Σ floor prices × room below:
    a lower bound for any prices ≥ 0 (a price on a cap or floor not in force counts as 0). ``barred``
    pairs, in no plan, are left out of the cheapest."""
    if len(ptr) < 2:
        return 0.0
    priced = objective.astype(np.float64)
    room = 0.0
    for d, load in enumerate(loads):
        price = np.where(load.capped, prices[d], 0.0)
        priced += price[pair_user] * load.values
        room += float((price * np.where(load.capped, load.cap - load.fixed, 0)).sum())
        if load.floor is not None and floor_prices is not None:
            price = floor_prices[d]
            priced -= price[pair_user] * load.values
            room -= float((price * (load.floor - load.fixed)).sum())
    if barred is not None:
        priced[barred] = np.inf
    return float(np.minimum.reduceat(priced, ptr[:-1]).sum()) - room



def strict_relaxation(part: Component, target: np.ndarray, bands: dict[int, tuple[np.ndarray, np.ndarray]]) -> Relaxation | None:
    """The LP of ``target`` over the plans that place every unit within the capacities and ``bands``
    (dimension index → low and high ends per user); None when it is cut short or has no plan."""
    if not np.all(np.diff(part.ptr) > 0):
        return None
    rows = []
    for i, d in enumerate(part.dims):
        if isinstance(d, _Cap):
            rows.append(LoadRows(d.values, d.cap, d.cap < _NO_CAP, d.fixed))
        elif i in bands:
            lo, hi = bands[i]
            rows.append(LoadRows(d.values, hi, np.ones(len(hi), dtype=bool), d.fixed, floor=lo))
    clock = part.clock
    return relax(part.ptr, part.pair_user, part.user_pairs, target, rows, clock.budget / 4, clock.left() / 4)


def integral(bound: float) -> int:
    """A bound on an integer objective, rounded up past the LP's tolerance."""
    return math.ceil(bound - 1e-6 * max(abs(bound), 1.0))
