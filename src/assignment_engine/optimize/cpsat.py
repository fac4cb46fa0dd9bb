"""The CP-SAT worker every model of the method runs on: the phases' and each neighbourhood's.

One worker per model, seeded, so a plan depends only on the inputs and the
seed, never on ``--workers`` or on scheduling (executors.py); and Ctrl-C
stays with Python, so a stop ends the run (executors.py ends the workers).
"""

from __future__ import annotations

from ortools.sat.python import cp_model


def _solver(seed: int) -> cp_model.CpSolver:
    """One deterministic CP-SAT worker that leaves Ctrl-C to Python: CP-SAT would otherwise take SIGINT as
    "end this search" and the run would go on, ignoring the user's stop."""
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = seed
    solver.parameters.catch_sigint_signal = False
    return solver
