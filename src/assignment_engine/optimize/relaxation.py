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

from .limits import NO_CAP, Cap

if TYPE_CHECKING:
    from .component import Component


@dataclass
class Relaxation:
    values: np.ndarray  # per pair, the LP value in [0, 1]
    bound: float  # proven lower bound on the objective of every plan that places all units within capacity
    prices: Prices | None = None  # the LP's prices on its load rows, to bound another objective over the same plans


@dataclass
class Prices:
    """Non-negative prices on the load rows of an LP (``lagrangian_bound``'s arguments but the objective)."""

    ptr: np.ndarray
    pair_user: np.ndarray
    loads: list[LoadRows]
    caps: np.ndarray
    floors: np.ndarray
    barred: np.ndarray

    def bound(self, objective: np.ndarray) -> float:
        """A lower bound on ``objective`` over the LP's plans: valid for any prices, tight for the LP's own."""
        return lagrangian_bound(self.ptr, self.pair_user, objective, self.loads, self.caps, self.floors, self.barred)


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
    ptr: np.ndarray,
    pair_user: np.ndarray,
    user_pairs: list[np.ndarray],
    objective: np.ndarray,
    loads: list[LoadRows],
    effort: float,
    seconds: float = math.inf,
    excluded: np.ndarray | None = None,
    status: list[int] | None = None,
    elastic: bool = False,
) -> Relaxation | None:
    """Solve min objective·x, one pair per unit, within the load rows, with GLOP's dual simplex.

    Pairs are stored unit-major (unit k owns pairs ``ptr[k]:ptr[k+1]``, every
    unit at least one) and ``user_pairs[u]`` lists user u's pairs. None when the
    LP finds no optimum within ``effort`` deterministic seconds and ``seconds``
    of wall-clock time (either may be infinite) or has no solution (then no
    plan places every unit within the rows). ``excluded`` pairs (bool per
    pair) are in none of the plans bounded: a branch of a disjunction.
    ``status`` receives GLOP's status. ``elastic``: each load row gets a
    slack on either side at a cost of 1 a unit (a phase one: ``objective``
    should be zero), so the LP always has a solution and its prices bound
    the slack of every plan (``feasible``).
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
    barred = overfilling(pair_user, loads)
    if excluded is not None:
        barred |= excluded
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
            if elastic:
                for side in (-1.0, 1.0):
                    row.var_index.append(len(model.variable))
                    row.coefficient.append(side)
                    model.variable.add(lower_bound=0.0, upper_bound=np.inf, objective_coefficient=1.0)
            rows.append((d, u))
    request = linear_solver_pb2.MPModelRequest(
        model=model,
        solver_type=linear_solver_pb2.MPModelRequest.GLOP_LINEAR_PROGRAMMING,
        solver_specific_parameters="use_dual_simplex: true"
        + "".join(
            f" {name}: {limit}"
            for name, limit in (("max_deterministic_time", effort), ("max_time_in_seconds", seconds))
            if math.isfinite(limit)
        ),
    )
    response = linear_solver_pb2.MPSolutionResponse()
    pywraplp.Solver.SolveWithProto(request, response)
    if status is not None:
        status.append(response.status)
    if response.status != linear_solver_pb2.MPSOLVER_OPTIMAL:
        return None
    values = np.clip(np.asarray(response.variable_value[: len(pair_user)], dtype=np.float64), 0.0, 1.0)
    prices, floor_prices = np.zeros((len(loads), n_users)), np.zeros((len(loads), n_users))
    for (d, u), dual in zip(rows, response.dual_value[n_units:], strict=True):
        prices[d, u] = max(-dual, 0.0)  # in a minimisation a binding ≤ side has a non-positive dual,
        floor_prices[d, u] = max(dual, 0.0)  # a binding ≥ side a non-negative one
    priced = Prices(ptr, pair_user, loads, prices, floor_prices, barred)
    return Relaxation(values, priced.bound(objective), priced)


def overfilling(pair_user: np.ndarray, loads: list[LoadRows]) -> np.ndarray:
    """Per pair, whether its unit alone overfills its user's cap (then it is in no plan)."""
    barred = np.zeros(len(pair_user), dtype=bool)
    for load in loads:
        if np.all(load.values >= 0) and np.all(load.fixed >= 0):
            barred |= load.capped[pair_user] & (load.values + load.fixed[pair_user] > load.cap[pair_user])
    return barred


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


def strict_relaxation(
    part: Component,
    target: np.ndarray,
    bands: dict[int, tuple[np.ndarray, np.ndarray]],
    excluded: np.ndarray | None = None,
    status: list[int] | None = None,
    elastic: bool = False,
) -> Relaxation | None:
    """The LP of ``target`` over the plans that place every unit within the capacities and ``bands``
    (dimension index → low and high ends per user), and in no ``excluded`` pair; None when it is cut short
    or has no plan (``status``, ``elastic``: as for ``relax``)."""
    if not np.all(np.diff(part.ptr) > 0):
        return None
    clock = part.clock
    rows = _strict_rows(part, bands)
    return relax(part.ptr, part.pair_user, part.user_pairs, target, rows, clock.budget / 4, clock.left() / 4, excluded, status, elastic)


def _strict_rows(part: Component, bands: dict[int, tuple[np.ndarray, np.ndarray]]) -> list[LoadRows]:
    rows = []
    for i, d in enumerate(part.dims):
        if isinstance(d, Cap):
            rows.append(LoadRows(d.values, d.cap, d.cap < NO_CAP, d.fixed))
        elif i in bands:
            lo, hi = bands[i]
            rows.append(LoadRows(d.values, hi, np.ones(len(hi), dtype=bool), d.fixed, floor=lo))
    return rows


# A unit the LP splits whose load on some band is this many times the width of every candidate's band or more
# (an account of nearly a whole fair share of revenue, in a territory of five sellers whose revenue band is
# ±5 %) is branched on: its holder must shed almost all else, which the LP, splitting the unit, never has to.
# On the M book one LP per candidate raised the bound on accounts moved from 57 to 94 on one such component
# (CP-SAT found 108; the branches' rounded plans 96) and proved the bands of another unable to hold.
BRANCH_WIDTH = 1.0


def branched(
    part: Component, target: np.ndarray, bands: dict[int, tuple[np.ndarray, np.ndarray]], relaxation: Relaxation
) -> list[Relaxation] | None:
    """The LPs of ``target`` (as ``strict_relaxation``), one for each place of the split unit largest against
    its candidates' bands (at least BRANCH_WIDTH band widths), each over the plans that put the unit there;
    places in no plan are left out, so every plan is in one of the LPs and the least of their bounds is a
    bound. An empty list: no plan holds the bands. None when no unit is branched on, or an LP was cut
    short or its place could not be shown to be in no plan."""
    if not bands:
        return None
    whole = relaxation.values >= 1 - 1e-6
    split = ~np.bincount(part.pair_unit[whole], minlength=len(part.units)).astype(bool)
    ratio = np.zeros(len(part.pair_user))  # per pair, the most band widths its unit takes on any band
    for i, (lo, hi) in bands.items():
        ratio = np.maximum(ratio, np.abs(part.dims[i].values) / np.maximum(hi - lo, 1)[part.pair_user])
    size = np.where(split, part.per_unit(np.minimum, ratio, empty=0.0), 0.0)  # least over the unit's candidates
    if not len(size) or size.max() < BRANCH_WIDTH:
        return None
    k = int(np.argmax(size))
    rows = _strict_rows(part, bands)
    barred = overfilling(part.pair_user, rows)
    out = []
    for p in range(int(part.ptr[k]), int(part.ptr[k + 1])):
        if barred[p]:
            continue  # in no plan
        excluded = np.zeros(len(part.pair_user), dtype=bool)
        excluded[part.ptr[k] : part.ptr[k + 1]] = True
        excluded[p] = False
        status: list[int] = []
        branch = strict_relaxation(part, target, bands, excluded, status)
        if branch is not None:
            out.append(branch)
        elif not (status and status[0] == linear_solver_pb2.MPSOLVER_INFEASIBLE and _no_plan(part, bands, excluded)):
            return None
    return out


def _no_plan(part: Component, bands: dict[int, tuple[np.ndarray, np.ndarray]], excluded: np.ndarray) -> bool:
    """Is it proven that no plan within the capacities and ``bands`` avoids the ``excluded`` pairs? By the
    prices of the LP that minimises the rows' overflow (a phase one): the Lagrangian bound of a problem with
    no objective is at most 0 for any prices when it has a plan, so a positive one proves it has none
    without trusting the LP's own verdict. Loads are whole numbers, so half a unit is a safe margin."""
    relaxation = strict_relaxation(part, np.zeros(len(part.pair_user)), bands, excluded, elastic=True)
    return relaxation is not None and relaxation.bound > 0.5


def integral(bound: float) -> int:
    """A bound on an integer objective, rounded up past the LP's tolerance."""
    return math.ceil(bound - 1e-6 * max(abs(bound), 1.0))
