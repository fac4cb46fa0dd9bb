"""The CP-SAT worker every model of the method runs on, and the model that re-places some units.

One worker per model, seeded, so a plan depends only on the inputs and the
seed, never on ``--workers`` or on scheduling (executors.py); and Ctrl-C
stays with Python, so a stop ends the run (executors.py ends the workers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from ortools.sat.python import cp_model

from .limits import NO_CAP, Cap

if TYPE_CHECKING:
    from .component import Component


def new_solver(seed: int) -> cp_model.CpSolver:
    """One deterministic CP-SAT worker that leaves Ctrl-C to Python: CP-SAT would otherwise take SIGINT as
    "end this search" and the run would go on, ignoring the user's stop."""
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = seed
    solver.parameters.catch_sigint_signal = False
    return solver


def placement_model(
    part: Component, pairs: np.ndarray, users: Sequence[int], base: Sequence[np.ndarray], bands: dict[int, tuple[np.ndarray, np.ndarray]]
) -> tuple[cp_model.CpModel, list[cp_model.IntVar]]:
    """A model that re-places the units of ``pairs`` (sorted, so each unit's pairs are together), the rest of
    the plan fixed: one variable per pair, one pair per unit, and each of ``users``' loads (``base[i]`` per
    dimension i, plus its chosen pairs) within its cap and, for the dimensions of ``bands``, its band."""
    model = cp_model.CpModel()
    x = [model.new_bool_var("") for _ in range(len(pairs))]
    unit_of, user_of = part.pair_unit[pairs], part.pair_user[pairs]
    for chunk in np.split(np.arange(len(pairs)), np.flatnonzero(np.diff(unit_of)) + 1):
        model.add_exactly_one([x[i] for i in chunk.tolist()])
    for i, d in enumerate(part.dims):
        for c in users:
            mine = np.flatnonzero(user_of == c)
            mine = mine[d.values[pairs[mine]] != 0]
            expr = cp_model.LinearExpr.weighted_sum([x[j] for j in mine.tolist()], d.values[pairs[mine]].tolist()) + int(base[i][c])
            if isinstance(d, Cap) and d.cap[c] < NO_CAP:
                model.add(expr <= int(d.cap[c]))
            if i in bands:
                model.add_linear_constraint(expr, int(bands[i][0][c]), int(bands[i][1][c]))
    return model, x
