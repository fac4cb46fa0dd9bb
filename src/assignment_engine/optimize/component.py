"""One independent component: its candidate pairs, loads, limits and objectives per pair, and how a plan scores.

A plan of a component is one chosen pair per unit (-1: unassigned). Every
step of the method takes the component and such plans: the start
(start.py), the lexicographic phases (phases.py) and the neighbourhood search
(neighbourhood.py). ``Component.solve`` runs them in that order; it is what a
worker process runs (executors.py), so a component carries all it needs and
pickles by value.
"""

from __future__ import annotations

import functools
import time

import numpy as np

from .clock import Clock
from .limits import Band, Cap, Dim, band_dim, capacity_dim
from .neighbourhood import neighbourhood_search
from .phases import bands_may_hold, lexicographic
from .problem import VALUE_STEPS, ComponentResult, Objective, Problem, accounts_moved_bound
from .relaxation import integral
from .start import greedy_start, lp_guided_start

# Past this many account–user pairs a CP-SAT model of the component would take gigabytes (about 1 KB a pair):
# the component keeps its greedy start, repaired, and says so (stopped_on "size"). 600k deals of one overlay
# team of 125 specialists (19M pairs) took 13 GB and the machine's memory before this limit.
MAX_MODEL_PAIRS = 2_000_000


class Component:
    """One independent part. Pairs are stored flat: unit k owns pairs ``ptr[k]:ptr[k+1]``."""

    def __init__(self, problem: Problem, users: list[int], units: np.ndarray):
        self.users, self.units = users, units
        self.user_ids = [problem.user_ids[u] for u in users]
        self.seed, self.effort = problem.seed, problem.effort
        self.deadline = problem.deadline  # a time.time() instant; executors.solve may give the component an earlier one (clock.share_time)
        self.clock = Clock.starting(self.effort, self.deadline)  # started again by solve
        self.order = list(problem.objectives)
        self.lp_bounds: dict[str, float] = {}  # objective → LP relaxation bound over plans that place every unit
        self.pair_unit, global_user = _candidate_pairs(problem, units)
        local = np.full(len(problem.user_ids), -1, dtype=np.int64)
        local[users] = np.arange(len(users))
        self.pair_user = local[global_user]
        self.ptr = np.searchsorted(self.pair_unit, np.arange(len(units) + 1))
        self.size = problem.unit_size[units].astype(np.int64)
        global_unit = units[self.pair_unit] if len(units) else self.pair_unit
        keyed = problem.pair_cost or any(d.pair_values for d in problem.dims)  # a pairs file: values per (unit, user)
        keys = list(zip(global_unit.tolist(), global_user.tolist(), strict=True)) if keyed else []

        def per_pair(unit_values: np.ndarray, overrides: dict[tuple[int, int], float] | None) -> np.ndarray:
            values = unit_values[global_unit].astype(np.float64)
            if overrides:
                values = np.array([overrides.get(key, v) for key, v in zip(keys, values, strict=True)], dtype=np.float64)
            return values

        weight = problem.weight[users]
        self.fair: dict[str, np.ndarray] = {}
        self.dims: list[Dim] = []
        for d in problem.dims:
            values, fixed = per_pair(d.unit_values, d.pair_values), d.fixed[users]
            if d.capacity is not None and np.isfinite(d.capacity[users]).any():
                self.dims.append(capacity_dim(values, fixed, d.capacity[users]))
            if d.tolerance is not None:
                # a unit's expected value is the mean over its candidates (equal unless it depends on the user)
                counts = np.maximum(np.diff(self.ptr), 1)
                total = float((np.bincount(self.pair_unit, weights=values, minlength=len(units)) / counts).sum()) + float(fixed.sum())
                share = weight / weight.sum() * total if weight.sum() > 0 else np.zeros(len(users))
                self.fair[d.label] = share
                if total > 0:
                    self.dims.append(band_dim(values, fixed, share, d.tolerance, total, len(users), self.pair_user))
        # band slack is weighed so one mean fair share of any dimension costs the same
        bands = [dim for dim in self.dims if isinstance(dim, Band)]
        self.balance_unit = max((band.mean_fair for band in bands), default=1.0)
        for band in bands:
            band.weight = max(1, round(self.balance_unit / band.mean_fair))
        # continuity: accounts moved per pair, and value moved as a tie-break
        held_accounts, held_value = problem.held.lookup(global_unit, global_user)
        moves = np.repeat(self.size, np.diff(self.ptr)).astype(np.int64) - held_accounts
        moved_value = problem.unit_value[global_unit].astype(np.float64) - held_value
        total_value = float(problem.unit_value[units].sum())
        steps = (
            np.round(moved_value / total_value * VALUE_STEPS).astype(np.int64)
            if total_value > 0
            else np.zeros(len(global_unit), dtype=np.int64)
        )
        self.moves = moves
        self.continuity = moves * (VALUE_STEPS + 1) + steps
        self.cost = np.zeros(len(global_unit), dtype=np.int64)
        if problem.pair_cost:
            raw = np.array([problem.pair_cost.get(key, 0.0) for key in keys], dtype=np.float64)
            integral = np.all(np.mod(raw, 1) == 0)
            self.cost = np.round(raw * (1.0 if integral else 1e6 / max(float(np.abs(raw).max()), 1e-9))).astype(np.int64)

    # -- evaluation ---------------------------------------------------------------

    @property
    def pairs(self) -> int:
        return len(self.pair_user)

    @property
    def needs_solver(self) -> bool:
        """False when every unit has at most one candidate and no capacity can bind."""
        if not len(self.units):
            return False
        return bool(np.any(np.diff(self.ptr) > 1)) or any(isinstance(d, Cap) for d in self.dims)

    @functools.cached_property
    def bands_may_hold(self) -> bool:
        """False when a simple count shows some band cannot hold (phases.bands_may_hold)."""
        return bands_may_hold(self)

    @property
    def capacity_only(self) -> bool:
        return any(isinstance(d, Cap) for d in self.dims) and not any(isinstance(d, Band) for d in self.dims)

    def loads(self, chosen: np.ndarray) -> list[np.ndarray]:
        """Per dim, the integer load of every local user for chosen pairs (-1 = unit unassigned)."""
        picked = chosen[chosen >= 0]
        return [
            d.fixed + np.bincount(self.pair_user[picked], weights=d.values[picked], minlength=len(self.users)).astype(np.int64)
            for d in self.dims
        ]

    def scores(self, chosen: np.ndarray) -> dict[str, int]:
        picked = chosen[chosen >= 0]
        violation = 0
        for d, load in zip(self.dims, self.loads(chosen), strict=True):
            if isinstance(d, Band):
                violation += d.weight * int(np.maximum(load - d.hi, 0).sum() + np.maximum(d.lo - load, 0).sum())
        return {
            "unassigned": int(self.size[chosen < 0].sum()),
            "balance": violation,
            "continuity": int(self.continuity[picked].sum()),
            "affinity": int(self.cost[picked].sum()),
        }

    def lower_bounds(self, complete: bool = False) -> dict[str, int]:
        """Bounds a phase whose start value meets needs no solving: the cheapest pair of every unit,
        and for plans that place every unit (``complete``) the LP relaxation's bound when one was solved."""
        cheapest = {
            name: int(self.per_unit(np.minimum, values, empty=0).sum())
            for name, values in (("continuity", self.continuity), ("affinity", self.cost))
        }
        bounds = {"unassigned": 0, "balance": 0, **cheapest}
        for name, bound in self.lp_bounds.items() if complete else ():
            bounds[name] = max(bounds[name], integral(bound))
        return bounds

    def per_unit(self, reduce: np.ufunc, values: np.ndarray, empty: float) -> np.ndarray:
        """``reduce`` (np.minimum, np.maximum) of per-pair ``values`` over each unit's pairs; ``empty`` for a
        unit with no eligible pair (``reduceat`` alone would read a neighbour's pair, or past the end)."""
        out = np.full(len(self.units), empty, dtype=np.result_type(values.dtype, type(empty)))
        has_pairs = np.diff(self.ptr) > 0
        if len(values):
            out[has_pairs] = reduce.reduceat(values, self.ptr[:-1][has_pairs])
        return out

    @functools.cached_property
    def user_pairs(self) -> list[np.ndarray]:
        """Per local user, the indices of their pairs in increasing order."""
        by_user = np.argsort(self.pair_user, kind="stable")
        return np.split(by_user, np.searchsorted(self.pair_user[by_user], np.arange(1, len(self.users))))

    # -- the method -----------------------------------------------------------------

    def solve(self) -> tuple[np.ndarray, ComponentResult]:
        """The greedy start, then the lexicographic phases when there is a choice to make: owners per unit, and the report."""
        start = time.perf_counter()
        self.clock = Clock.starting(self.effort, self.deadline, len(self.pair_user))
        chosen = self.greedy()
        objectives: list[Objective] = []
        too_large = len(self.pair_user) > MAX_MODEL_PAIRS
        if self.needs_solver and not too_large:
            chosen, objectives = lexicographic(self, chosen)
        proven = all(o.status == "OPTIMAL" for o in objectives) and not (too_large and self.needs_solver)
        stopped_on = "optimal" if proven else "size" if too_large else "time_limit" if self.clock.cut else "effort"
        moves = int(self.moves[chosen[chosen >= 0]].sum())
        continuity = next((o for o in objectives if o.name == "continuity"), None)
        moves_bound = moves if continuity is None else accounts_moved_bound(continuity.bound)
        users = np.asarray(self.users, dtype=np.int64)
        owner = np.where(chosen >= 0, users[self.pair_user[np.maximum(chosen, 0)]] if len(self.pair_user) else -1, -1)
        result = ComponentResult(
            self.user_ids,
            len(self.units),
            len(self.pair_user),
            objectives,
            moves,
            min(moves_bound, moves),
            time.perf_counter() - start,
            stopped_on,
        )
        return owner, result

    # the steps, also as methods: a component's tests and callers need not know which file holds each

    def greedy(self, room_first: bool = False) -> np.ndarray:
        """The greedy start (start.greedy_start)."""
        return greedy_start(self, room_first)

    def _lp_guided(self, name: str) -> np.ndarray | None:
        """The start rounded from the LP relaxation (start.lp_guided_start)."""
        return lp_guided_start(self, name)

    def _neighbourhood_search(
        self, chosen: np.ndarray, name: str, earlier: list[str], bands: dict[int, tuple[np.ndarray, np.ndarray]], budget: float
    ) -> tuple[np.ndarray, float]:
        """Re-solving small groups of users exactly (neighbourhood.neighbourhood_search)."""
        return neighbourhood_search(self, chosen, name, earlier, bands, budget)


def _candidate_pairs(problem: Problem, units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (unit, candidate) pair of ``units``, unit by unit in candidate order, as the local unit index and
    the user index of each pair; pairs ``problem.pair_allowed`` leaves out are dropped. Built on arrays: the
    strategic team of a ten-million-account book has 17M pairs."""
    sets, inverse = np.unique(problem.unit_set[units], return_inverse=True)
    members = [np.asarray(problem.candidate_sets[s], dtype=np.int64) for s in sets.tolist()]
    sizes = np.array([len(m) for m in members], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    count = sizes[inverse]  # candidates per unit
    pair_unit = np.repeat(np.arange(len(units), dtype=np.int64), count)
    within = np.arange(len(pair_unit), dtype=np.int64) - np.repeat(np.cumsum(count) - count, count)
    pair_user = np.concatenate(members)[starts[inverse][pair_unit] + within] if members else np.empty(0, dtype=np.int64)
    if problem.pair_allowed is not None:
        allowed = problem.pair_allowed
        keep = np.fromiter(
            ((u, user) in allowed for u, user in zip(units[pair_unit].tolist(), pair_user.tolist(), strict=True)),
            dtype=bool,
            count=len(pair_unit),
        )
        pair_unit, pair_user = pair_unit[keep], pair_user[keep]
    return pair_unit, pair_user
