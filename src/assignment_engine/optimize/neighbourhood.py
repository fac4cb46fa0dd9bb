"""Large-neighbourhood search: re-solve small groups of users exactly, the rest of the plan fixed.

A single CP-SAT worker runs no neighbourhood search of its own and improves a
whole component slowly; the phases (phases.py) call this on a complete plan,
after CP-SAT on a strict continuity phase, and before it on the affinity of a
component held only by capacities.
"""

from __future__ import annotations

import math
import time
from itertools import combinations
from typing import TYPE_CHECKING

import numpy as np
from ortools.sat.python import cp_model

from .cpsat import new_solver, placement_model

if TYPE_CHECKING:
    from .component import Component

SUBMODEL_COST = 0.004  # deterministic seconds charged per neighbourhood model for building and setting it up
MAX_TRIPLES = 2_000  # the neighbourhood search re-solves every three users of a component with at most this many triples


def neighbourhood_search(
    part: Component,
    chosen: np.ndarray,
    name: str,
    earlier: list[str],
    bands: dict[int, tuple[np.ndarray, np.ndarray]],
    budget: float,
    until: float = math.inf,
) -> tuple[np.ndarray, float]:
    """Large-neighbourhood search on a complete plan: re-solve small groups of users exactly.

    A single CP-SAT worker improves a whole component slowly; a group of two
    or three users with every unit they now own is small enough to solve to
    optimality in milliseconds. Units of the group may be redistributed
    inside it, everything else stays, so bands, capacities and the earlier
    objectives (which only count the group's units) keep holding. Groups are
    visited in a fixed order until a pass improves nothing or ``budget``
    deterministic seconds are spent (each model charged SUBMODEL_COST more
    for its set-up, so the budget tracks wall time), so the result is
    reproducible. Used on strict continuity phases, and on affinity when
    capacities are the only constraints and the plan is complete. It also
    stops at ``until`` (``time.monotonic()``) or at the component's wall-clock
    end (part.clock), whichever comes first: a stop on the wall clock is noted
    there. Returns the plan and the budget spent.
    """
    n_users = len(part.users)
    if n_users < 3:
        return chosen, 0.0  # a pair would be the whole component, solved whole
    objective = {"continuity": part.continuity, "affinity": part.cost}
    target = objective[name]
    # three users hold more exchanges than two (GAP d20200: +1.30 % → +0.66 %); many users give too many triples
    size = 3 if n_users >= 4 and math.comb(n_users, 3) <= MAX_TRIPLES else 2
    groups = [np.array(g) for g in combinations(range(n_users), size)]
    if size == 2:  # many users: only pairs that exchange units at all
        shared = np.zeros((n_users, n_users), dtype=bool)
        for k in range(len(part.units)):
            users = part.pair_user[part.ptr[k] : part.ptr[k + 1]]
            shared[np.ix_(users, users)] = True
        groups = [g for g in groups if shared[g[0], g[1]]]
    chosen = chosen.copy()
    owner = part.pair_user[chosen]
    user_pairs = part.user_pairs
    member = np.zeros(n_users, dtype=bool)
    spent = 0.0
    solver = new_solver(part.seed)
    solver.parameters.cp_model_probing_level = 0
    per_model = max(budget / 20, 0.05) if math.isfinite(budget) else 1.0
    clock = part.clock
    until = min(until, clock.end if clock.end is not None else math.inf)
    improved, timed = True, False
    while improved and spent < budget and not timed:
        improved = False
        for group in groups:
            if time.monotonic() >= until:
                timed = True
                break
            member[:] = False
            member[group] = True
            in_group = member[owner]
            units = np.flatnonzero(in_group)
            pairs = np.sort(np.concatenate([up[in_group[part.pair_unit[up]]] for up in (user_pairs[c] for c in group.tolist())]))
            if len(pairs) == len(units):
                continue  # nothing can move
            current = chosen[units]
            model, x = placement_model(part, pairs, group.tolist(), [d.fixed for d in part.dims], bands)
            for prior in earlier:
                values = objective[prior]
                model.add(cp_model.LinearExpr.weighted_sum(x, values[pairs].tolist()) <= int(values[current].sum()))
            model.minimize(cp_model.LinearExpr.weighted_sum(x, target[pairs].tolist()))
            for var, now in zip(x, np.isin(pairs, current).tolist(), strict=True):
                model.add_hint(var, now)
            clock.limit(solver, per_model, until)
            status = solver.solve(model)
            # CP-SAT's deterministic time leaves out setting up a model, which dominates for models this small
            spent += solver.response_proto.deterministic_time + SUBMODEL_COST
            if status in (cp_model.OPTIMAL, cp_model.FEASIBLE) and solver.objective_value < int(target[current].sum()):
                picked = pairs[[solver.boolean_value(var) for var in x]]
                chosen[part.pair_unit[picked]] = picked
                owner[part.pair_unit[picked]] = part.pair_user[picked]
                improved = True
            if spent >= budget:
                break
    clock.cut |= timed  # stopped on the wall clock in the middle of a pass
    return chosen, spent
