"""Choose an owner for every assignable unit (an account or a family): greedy, then CP-SAT.

The method, one step a file:

1. decompose (problem.py): a unit can only go to the owners of its territory,
   so users who never compete for the same unit are independent; each
   component of the user–candidate graph is solved on its own (component.py:
   its pairs, loads and objectives; limits.py: capacities and balance bands
   as integers), in this process or in worker processes (executors.py);
2. start (start.py): a continuity-first greedy gives a feasible start, its
   bands repaired by a local search; on components held only by capacities,
   a start rounded from the LP relaxation;
3. phases (phases.py): CP-SAT, hinted with the start, optimises each
   objective in turn with the earlier ones capped at their best value, so
   the result is never worse than the start. A phase whose plan already
   meets its lower bound is not solved;
4. neighbourhood search (neighbourhood.py): small groups of users re-solved
   exactly, the rest of the plan fixed, where one CP-SAT worker improves a
   whole component too slowly;
5. bounds (relaxation.py): on components held only by capacities, the LP
   relaxation's Lagrangian bound, beside the trivial bounds
   (Component.lower_bounds) and CP-SAT's own, so every objective is reported
   with a proven bound.

Objectives, in strict order:

1. hard: one owner per unit among its candidates, user capacities; a unit no
   candidate has room for stays unassigned (fewest such accounts first);
2. balance: every balance requirement within its band around the user's fair
   share (the weight's part of the component total); a band that cannot hold
   is relaxed with penalised slack, so locks never make a run fail;
3. continuity: fewest accounts moved, then least value moved;
4. affinity: least total per-pair cost (CRM fit, travel time, …).

All model numbers are integers: balance dimensions are scaled so the mean
fair share is 1,000,000. Every CP-SAT model runs on one deterministic worker
(cpsat.py).
"""

from .component import Component
from .executors import replay, solve
from .limits import Band  # tests build and read bands
from .problem import MAX_SEED, ComponentResult, Holdings, LoadDim, Objective, Problem, Solution, components

__all__ = [
    "MAX_SEED",
    "Band",
    "Component",
    "ComponentResult",
    "Holdings",
    "LoadDim",
    "Objective",
    "Problem",
    "Solution",
    "components",
    "replay",
    "solve",
]
