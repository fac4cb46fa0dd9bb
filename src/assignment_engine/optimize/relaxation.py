"""The LP relaxation of a component held only by capacities: a guide for the start and a proven bound.

On generalized-assignment-like components (capacities, no bands, a per-pair
cost) one CP-SAT worker barely improves a poor start and proves little in its
budget. The LP relaxation is nearly integral (a basic solution splits at most
one unit per capacity row), so rounding it gives a start within a few per cent
of the optimum, and its duals give a lower bound that needs no trust in the LP
solver: any non-negative capacity prices give a valid Lagrangian bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from ortools.linear_solver import linear_solver_pb2, pywraplp


@dataclass
class Relaxation:
    values: np.ndarray  # per pair, the LP value in [0, 1]
    bound: float  # proven lower bound on the objective of every plan that places all units within capacity


@dataclass
class CapacityRows:
    """One capacity: per-pair load, per-user cap (read only where ``capped``) and fixed load."""

    values: np.ndarray
    cap: np.ndarray
    capped: np.ndarray  # bool per user
    fixed: np.ndarray


def relax(
    ptr: np.ndarray, pair_user: np.ndarray, user_pairs: list[np.ndarray], objective: np.ndarray, capacities: list[CapacityRows], effort: float, seconds: float = math.inf
) -> Relaxation | None:
    """Solve min objective·x, one pair per unit, within capacities, with GLOP's dual simplex.

    Pairs are stored unit-major (unit k owns pairs ``ptr[k]:ptr[k+1]``, every
    unit at least one) and ``user_pairs[u]`` lists user u's pairs. None when the
    LP finds no optimum within ``effort`` deterministic seconds and ``seconds``
    of wall-clock time (either may be infinite) or has no solution (then no
    plan places every unit).
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
    rows: list[tuple[int, int]] = []  # (capacity index, user) of each capacity row, in row order
    for d, capacity in enumerate(capacities):
        for u in np.flatnonzero(capacity.capped).tolist():
            mine = user_pairs[u]
            mine = mine[capacity.values[mine] != 0]
            row = model.constraint.add(lower_bound=-np.inf, upper_bound=float(capacity.cap[u] - capacity.fixed[u]))
            row.var_index.extend(mine.tolist())
            row.coefficient.extend(capacity.values[mine].astype(float).tolist())
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
    prices = np.zeros((len(capacities), n_users))
    for (d, u), dual in zip(rows, response.dual_value[n_units:]):
        prices[d, u] = max(-dual, 0.0)  # a ≤ row of a minimisation has a non-positive dual
    return Relaxation(values, lagrangian_bound(ptr, pair_user, objective, capacities, prices))


def lagrangian_bound(ptr: np.ndarray, pair_user: np.ndarray, objective: np.ndarray, capacities: list[CapacityRows], prices: np.ndarray) -> float:
    """Σ over units of the cheapest priced pair − Σ prices × room: a lower bound for any prices ≥ 0."""
    if len(ptr) < 2:
        return 0.0
    priced = objective.astype(np.float64)
    room = 0.0
    for capacity, price in zip(capacities, prices):
        price = np.where(capacity.capped, price, 0.0)
        priced += price[pair_user] * capacity.values
        room += float((price * (capacity.cap - capacity.fixed)).sum())
    return float(np.minimum.reduceat(priced, ptr[:-1]).sum()) - room
