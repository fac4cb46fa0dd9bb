"""Choose an owner for every assignable unit (an account or a family): greedy, then CP-SAT.

The problem decomposes: a unit can only go to the owners of its territory, so
users who never compete for the same unit are independent. Each component of
the user–candidate graph is solved on its own, with objectives in strict order:

1. hard: one owner per unit among its candidates, user capacities; a unit no
   candidate has room for stays unassigned (fewest such accounts first);
2. balance: every balance requirement within its band around the user's fair
   share (the weight's part of the component total); a band that cannot hold
   is relaxed with penalised slack, so locks never make a run fail;
3. continuity: fewest accounts moved, then least value moved;
4. affinity: least total per-pair cost (CRM fit, travel time, …).

A continuity-first greedy gives a feasible start; CP-SAT, hinted with it,
optimises each objective in turn with the earlier ones capped at their best
value, so the result is never worse than the greedy start. A phase whose hint
already meets its trivial lower bound is not solved. All model numbers are
integers: balance dimensions are scaled so the mean fair share is 1,000,000.
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from ortools.sat.python import cp_model

RESOLUTION = 1_000_000  # integer units per mean fair share
VALUE_STEPS = 1_000  # value moved is a tie-break in steps of 0.1 % of the component's value
_NO_CAP = np.iinfo(np.int64).max // 4


@dataclass
class LoadDim:
    """One load a user carries: per-unit values (or per pair) and per-user fixed load."""

    label: str
    unit_values: np.ndarray  # float, per unit
    fixed: np.ndarray  # float, per user (locked and excluded accounts)
    tolerance: float | None = None  # a balance band around the fair share
    capacity: np.ndarray | None = None  # float per user (inf = none): a hard cap
    pair_values: dict[tuple[int, int], float] | None = None  # (unit, user) → value, when it depends on the user


@dataclass
class Problem:
    """Units, their candidate users, loads and current owners, in index form."""

    user_ids: list[str]
    weight: np.ndarray  # per user, ≥ 0
    candidate_sets: list[tuple[int, ...]]  # distinct candidate user lists
    unit_set: np.ndarray  # per unit: index into candidate_sets
    unit_size: np.ndarray  # accounts per unit
    unit_value: np.ndarray  # value per unit (for value moved)
    current: list[dict[int, tuple[int, float]]]  # per unit: user → (accounts, value) it holds now
    dims: list[LoadDim]
    pair_cost: dict[tuple[int, int], float] | None = None  # (unit, user) → affinity cost
    pair_allowed: set[tuple[int, int]] | None = None  # when given, only these pairs are eligible
    objectives: list[str] = field(default_factory=lambda: ["balance", "continuity", "affinity"])  # order after "unassigned"
    time_limit: float = 10.0
    seed: int = 0

    @property
    def n_units(self) -> int:
        return len(self.unit_set)


@dataclass
class Objective:
    name: str  # unassigned, balance, continuity, affinity
    value: float
    bound: float
    greedy: float
    status: str  # OPTIMAL (proven), FEASIBLE, START (greedy kept)

    @property
    def gap(self) -> float:
        return 0.0 if self.value <= self.bound else (self.value - self.bound) / max(abs(self.value), 1e-9)


@dataclass
class ComponentResult:
    users: list[str]
    units: int
    pairs: int
    objectives: list[Objective]
    moves: int  # accounts moved
    moves_bound: int  # proven lower bound on accounts moved, given the earlier objectives
    seconds: float

    def objective(self, name: str) -> Objective | None:
        return next((o for o in self.objectives if o.name == name), None)

    @property
    def status(self) -> str:
        if not self.objectives:
            return "TRIVIAL"
        return "OPTIMAL" if all(o.status == "OPTIMAL" for o in self.objectives) else "FEASIBLE"


@dataclass
class Solution:
    owner: np.ndarray  # per unit: user index, -1 = unassigned (no eligible candidate or no capacity)
    fair: dict[str, np.ndarray]  # per balance dim label: fair share per user
    components: list[ComponentResult] = field(default_factory=list)


def components(problem: Problem) -> list[tuple[list[int], np.ndarray]]:
    """(users, units) of each independent part, in a deterministic order."""
    parent = list(range(len(problem.user_ids)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for s in np.unique(problem.unit_set):
        users = problem.candidate_sets[s]
        for u in users[1:]:
            a, b = find(users[0]), find(u)
            if a != b:
                parent[max(a, b)] = min(a, b)
    set_root = np.array([find(c[0]) if c else -1 for c in problem.candidate_sets] or [-1], dtype=np.int64)
    unit_root = set_root[problem.unit_set] if problem.n_units else np.empty(0, dtype=np.int64)
    order = np.argsort(unit_root, kind="stable")
    cuts = np.flatnonzero(np.diff(unit_root[order])) + 1
    by_root = {int(unit_root[chunk[0]]): chunk for chunk in np.split(order, cuts) if len(chunk)}
    groups: dict[int, list[int]] = {}
    for u in range(len(problem.user_ids)):
        groups.setdefault(find(u), []).append(u)
    empty = np.empty(0, dtype=np.int64)
    return [(users, np.sort(by_root.get(root, empty))) for root, users in sorted(groups.items())]


def solve(problem: Problem, workers: int = 1) -> Solution:
    """Solve every component; with ``workers`` > 1 the ones that need CP-SAT run in worker processes.

    Components are independent and each is solved by one deterministic CP-SAT
    worker, so the answer does not depend on ``workers`` or on scheduling.
    """
    owner = np.full(problem.n_units, -1, dtype=np.int64)
    fair = {d.label: np.zeros(len(problem.user_ids)) for d in problem.dims if d.tolerance is not None}
    parts = []
    for users, units in components(problem):
        part = Component(problem, users, units)
        for label, shares in part.fair.items():
            fair[label][users] = shares
        parts.append(part)
    heavy = [p for p in parts if p.needs_solver]
    if workers > 1 and len(heavy) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            solved = dict(zip(map(id, heavy), pool.map(_solve_part, heavy, chunksize=max(1, len(heavy) // (8 * workers)))))
    else:
        solved = {id(p): p.solve() for p in heavy}
    results = []
    for part in parts:
        chosen, result = solved[id(part)] if id(part) in solved else part.solve()
        owner[part.units] = chosen
        results.append(result)
    return Solution(owner, fair, results)


def _solve_part(part: Component) -> tuple[np.ndarray, ComponentResult]:
    return part.solve()


@dataclass
class _Dim:
    """A load dimension inside a component, as integers per candidate pair."""

    values: np.ndarray  # int64 per pair
    fixed: np.ndarray  # int64 per local user
    lo: np.ndarray | None = None  # band, per local user
    hi: np.ndarray | None = None
    cap: np.ndarray | None = None  # capacity, per local user


class Component:
    """One independent part. Pairs are stored flat: unit k owns pairs ``ptr[k]:ptr[k+1]``."""

    def __init__(self, problem: Problem, users: list[int], units: np.ndarray):
        self.users, self.units = users, units
        self.user_ids = [problem.user_ids[u] for u in users]
        self.seed, self.time_limit = problem.seed, problem.time_limit
        self.order = list(problem.objectives)
        local = {u: k for k, u in enumerate(users)}
        pair_unit: list[int] = []
        pair_user: list[int] = []
        allowed = problem.pair_allowed
        for k, unit in enumerate(units):
            for u in problem.candidate_sets[problem.unit_set[unit]]:
                if allowed is None or (int(unit), u) in allowed:
                    pair_unit.append(k)
                    pair_user.append(local[u])
        self.pair_unit = np.asarray(pair_unit, dtype=np.int64)
        self.pair_user = np.asarray(pair_user, dtype=np.int64)
        self.ptr = np.searchsorted(self.pair_unit, np.arange(len(units) + 1))
        self.size = problem.unit_size[units].astype(np.int64)
        global_unit = units[self.pair_unit] if len(units) else self.pair_unit
        global_user = np.asarray(users, dtype=np.int64)[self.pair_user] if users else self.pair_user
        keys = list(zip(global_unit.tolist(), global_user.tolist()))

        def per_pair(unit_values: np.ndarray, overrides: dict[tuple[int, int], float] | None) -> np.ndarray:
            values = unit_values[global_unit].astype(np.float64)
            if overrides:
                values = np.array([overrides.get(key, v) for key, v in zip(keys, values)], dtype=np.float64)
            return values

        weight = problem.weight[users]
        self.fair: dict[str, np.ndarray] = {}
        self.dims: list[_Dim] = []
        for d in problem.dims:
            values, fixed = per_pair(d.unit_values, d.pair_values), d.fixed[users]
            if d.capacity is not None and np.isfinite(d.capacity[users]).any():
                caps = d.capacity[users]
                integral = np.all(np.mod(values, 1) == 0) and np.all(np.mod(fixed, 1) == 0)
                scale = 1.0 if integral else 1e6 / max(float(np.max(np.where(np.isfinite(caps), caps, 0))), 1e-9)
                cap = np.where(np.isfinite(caps), np.floor(np.nan_to_num(caps, posinf=0) * scale), _NO_CAP).astype(np.int64)
                self.dims.append(_Dim(np.ceil(values * scale).astype(np.int64), np.ceil(fixed * scale).astype(np.int64), cap=cap))
            if d.tolerance is not None:
                # a unit's expected value is the mean over its candidates (equal unless it depends on the user)
                counts = np.maximum(np.diff(self.ptr), 1)
                total = float(np.add.reduceat(values, self.ptr[:-1]).dot(1 / counts) if len(values) else 0.0) + float(fixed.sum())
                share = weight / weight.sum() * total if weight.sum() > 0 else np.zeros(len(users))
                self.fair[d.label] = share
                if total > 0:
                    scale = RESOLUTION * len(users) / total
                    # each rounded value is off by ≤ 0.5 unit: shrink the band by the user's worst case, so an
                    # integer load inside it is a real load inside the tolerance
                    err = 0.5 * (np.bincount(self.pair_user, minlength=len(users)) + 1)
                    lo = np.ceil(share * (1 - d.tolerance) * scale + err).astype(np.int64)
                    hi = np.floor(share * (1 + d.tolerance) * scale - err).astype(np.int64)
                    self.dims.append(_Dim(np.round(values * scale).astype(np.int64), np.round(fixed * scale).astype(np.int64), lo=lo, hi=hi))
        # continuity: accounts moved per pair, and value moved as a tie-break
        moves = np.repeat(self.size, np.diff(self.ptr)).astype(np.int64)
        moved_value = problem.unit_value[global_unit].astype(np.float64)
        for p, (unit, user) in enumerate(keys):
            held = problem.current[unit].get(user)
            if held:
                moves[p] -= held[0]
                moved_value[p] -= held[1]
        total_value = float(problem.unit_value[units].sum())
        steps = np.round(moved_value / total_value * VALUE_STEPS).astype(np.int64) if total_value > 0 else np.zeros(len(keys), dtype=np.int64)
        self.moves = moves
        self.continuity = moves * (VALUE_STEPS + 1) + steps
        self.cost = np.zeros(len(keys), dtype=np.int64)
        if problem.pair_cost:
            raw = np.array([problem.pair_cost.get(key, 0.0) for key in keys], dtype=np.float64)
            integral = np.all(np.mod(raw, 1) == 0)
            self.cost = np.round(raw * (1.0 if integral else 1e6 / max(float(np.abs(raw).max()), 1e-9))).astype(np.int64)

    # -- evaluation ---------------------------------------------------------------

    @property
    def needs_solver(self) -> bool:
        """False when every unit has at most one candidate and no capacity can bind."""
        if not len(self.units):
            return False
        return bool(np.any(np.diff(self.ptr) > 1)) or any(d.cap is not None for d in self.dims)

    def loads(self, chosen: np.ndarray) -> list[np.ndarray]:
        """Per dim, the integer load of every local user for chosen pairs (-1 = unit unassigned)."""
        picked = chosen[chosen >= 0]
        return [d.fixed + np.bincount(self.pair_user[picked], weights=d.values[picked], minlength=len(self.users)).astype(np.int64) for d in self.dims]

    def scores(self, chosen: np.ndarray) -> dict[str, int]:
        picked = chosen[chosen >= 0]
        violation = 0
        for d, load in zip(self.dims, self.loads(chosen)):
            if d.lo is not None:
                violation += int(np.maximum(load - d.hi, 0).sum() + np.maximum(d.lo - load, 0).sum())
        return {
            "unassigned": int(self.size[chosen < 0].sum()),
            "balance": violation,
            "continuity": int(self.continuity[picked].sum()),
            "affinity": int(self.cost[picked].sum()),
        }

    # -- greedy ---------------------------------------------------------------------

    def greedy(self) -> np.ndarray:
        """Keep current owners where capacity allows, place the rest largest first, then repair bands."""
        n_units = len(self.units)
        load = [d.fixed.copy() for d in self.dims]
        chosen = np.full(n_units, -1, dtype=np.int64)
        caps = [(i, d.cap) for i, d in enumerate(self.dims) if d.cap is not None]
        bands = [(i, d) for i, d in enumerate(self.dims) if d.lo is not None]

        def fits(p: int) -> bool:
            c = self.pair_user[p]
            return all(load[i][c] + self.dims[i].values[p] <= cap[c] for i, cap in caps)

        def move(p: int, sign: int) -> None:
            c = self.pair_user[p]
            for i, d in enumerate(self.dims):
                load[i][c] += sign * d.values[p]

        pending = []
        for k in range(n_units):
            lo, hi = self.ptr[k], self.ptr[k + 1]
            if lo == hi:
                continue
            p = lo + int(np.argmin(self.moves[lo:hi]))
            if self.moves[p] < self.size[k] and fits(p):
                chosen[k] = p
                move(p, 1)
            else:
                pending.append(k)
        size_key = self.dims[bands[0][0]].values if bands else self.cost
        pending.sort(key=lambda k: (-int(size_key[self.ptr[k]:self.ptr[k + 1]].max(initial=0)), k))
        for k in pending:
            best, best_key = -1, None
            for p in range(self.ptr[k], self.ptr[k + 1]):
                if not fits(p):
                    continue
                c = self.pair_user[p]
                fill = max(((load[i][c] + d.values[p]) / max(int(d.hi[c]), 1) for i, d in bands), default=0.0)
                key = (fill, int(self.cost[p]), p)
                if best_key is None or key < best_key:
                    best, best_key = p, key
            if best >= 0:
                chosen[k] = best
                move(best, 1)
        if bands:
            self._repair(chosen, load, bands, fits, move)
        return chosen

    def _repair(self, chosen: np.ndarray, load: list[np.ndarray], bands, fits, move) -> None:
        """Move single units off users outside a band while that lowers the total violation."""

        def violation(c: int) -> int:
            return sum(max(int(load[i][c] - d.hi[c]), 0) + max(int(d.lo[c] - load[i][c]), 0) for i, d in bands)

        movable = [k for k in range(len(self.units)) if chosen[k] >= 0 and self.ptr[k + 1] - self.ptr[k] > 1]
        movable.sort(key=lambda k: (int(self.moves[chosen[k]]) == 0, k))  # units that move anyway first
        for _ in range(4):
            improved = False
            for k in movable:
                src = int(chosen[k])
                if violation(self.pair_user[src]) == 0:
                    continue
                best, gain = -1, 0
                for p in range(self.ptr[k], self.ptr[k + 1]):
                    if p == src:
                        continue
                    pair_users = (self.pair_user[src], self.pair_user[p])
                    before = sum(violation(c) for c in pair_users)
                    move(src, -1)
                    if fits(p):
                        move(p, 1)
                        after = sum(violation(c) for c in pair_users)
                        move(p, -1)
                        if before - after > gain:
                            best, gain = p, before - after
                    move(src, 1)
                if best >= 0:
                    move(src, -1)
                    move(best, 1)
                    chosen[k] = best
                    improved = True
            if not improved:
                break

    # -- CP-SAT -----------------------------------------------------------------------

    def solve(self) -> tuple[np.ndarray, ComponentResult]:
        start = time.perf_counter()
        chosen = self.greedy()
        objectives: list[Objective] = []
        if self.needs_solver:
            chosen, objectives = self._lexicographic(chosen)
        moves = int(self.moves[chosen[chosen >= 0]].sum())
        continuity = next((o for o in objectives if o.name == "continuity"), None)
        # continuity = moves × (VALUE_STEPS + 1) + value steps (≤ VALUE_STEPS): a bound on it bounds the moves
        moves_bound = moves if continuity is None else max(0, -(-(int(continuity.bound) - VALUE_STEPS) // (VALUE_STEPS + 1)))
        users = np.asarray(self.users, dtype=np.int64)
        owner = np.where(chosen >= 0, users[self.pair_user[np.maximum(chosen, 0)]] if len(self.pair_user) else -1, -1)
        result = ComponentResult(self.user_ids, len(self.units), len(self.pair_user), objectives, moves, min(moves_bound, moves), time.perf_counter() - start)
        return owner, result

    def lower_bounds(self) -> dict[str, int]:
        """Trivial bounds: a phase whose start value meets it needs no solving."""
        def per_unit_min(values: np.ndarray) -> int:
            return int(np.minimum.reduceat(values, self.ptr[:-1][np.diff(self.ptr) > 0]).sum()) if len(values) else 0

        return {"unassigned": 0, "balance": 0, "continuity": per_unit_min(self.continuity), "affinity": per_unit_min(self.cost)}

    def _lexicographic(self, start: np.ndarray) -> tuple[np.ndarray, list[Objective]]:
        """Optimise the objectives in order; first try placing every unit when the start could not.

        When capacities leave the greedy start with unassigned units, a model
        that must place every unit usually finds a full placement far faster
        than one that minimises unplaced units; only if it finds none in its
        budget is the relaxed model (with an 'unassigned' option per unit) solved.
        """
        greedy_scores = self.scores(start)
        if greedy_scores["unassigned"] and np.all(np.diff(self.ptr) > 0):
            strict = self._phases(start, greedy_scores, must_place=True)
            if strict is not None:
                return strict
        relaxed = self._phases(start, greedy_scores, must_place=False)
        assert relaxed is not None  # the start is a solution of the relaxed model
        return relaxed

    def _phases(self, start: np.ndarray, greedy_scores: dict[str, int], *, must_place: bool) -> tuple[np.ndarray, list[Objective]] | None:
        model = cp_model.CpModel()
        x = [model.new_bool_var("") for _ in range(len(self.pair_user))]
        has_caps = any(d.cap is not None for d in self.dims)
        unplaced_terms = []
        for k in range(len(self.units)):
            row = x[self.ptr[k]:self.ptr[k + 1]]
            if (has_caps and not must_place) or not row:
                none = model.new_bool_var("")
                model.add_exactly_one([*row, none])
                unplaced_terms.append((none, int(self.size[k])))
            else:
                model.add_exactly_one(row)
        by_user = np.argsort(self.pair_user, kind="stable")
        user_cuts = np.searchsorted(self.pair_user[by_user], np.arange(len(self.users) + 1))
        slack = []
        for d in self.dims:
            for c in range(len(self.users)):
                pairs = by_user[user_cuts[c]:user_cuts[c + 1]]
                pairs = pairs[d.values[pairs] != 0]
                expr = cp_model.LinearExpr.weighted_sum([x[p] for p in pairs], d.values[pairs].tolist()) + int(d.fixed[c])
                if d.cap is not None and d.cap[c] < _NO_CAP:
                    model.add(expr <= int(d.cap[c]))
                if d.lo is not None:
                    top = int(d.fixed[c] + d.values[pairs].sum())
                    over = model.new_int_var(0, max(top - int(d.hi[c]), 0), "")
                    under = model.new_int_var(0, max(int(d.lo[c]) - int(d.fixed[c]), 0), "")
                    model.add(expr - over <= int(d.hi[c]))
                    model.add(expr + under >= int(d.lo[c]))
                    slack += [over, under]
        exprs = {
            "unassigned": cp_model.LinearExpr.weighted_sum([v for v, _ in unplaced_terms], [s for _, s in unplaced_terms]),
            "balance": cp_model.LinearExpr.sum(slack),
            "continuity": cp_model.LinearExpr.weighted_sum(x, self.continuity.tolist()),
            "affinity": cp_model.LinearExpr.weighted_sum(x, self.cost.tolist()),
        }
        present = {"balance": bool(slack), "continuity": True, "affinity": bool(self.cost.any())}
        relevant = ["unassigned"] * bool(unplaced_terms) + [name for name in self.order if present[name]]
        bounds = self.lower_bounds()
        # with must_place the start (which leaves units out) is not a solution: no incumbent yet
        best, best_scores = (None, None) if must_place else (start, dict(greedy_scores))
        hint = start
        to_solve = [name for name in relevant if best_scores is None or best_scores[name] > bounds[name]]
        objectives = []
        solver = cp_model.CpSolver()
        solver.parameters.num_workers = 1
        solver.parameters.random_seed = self.seed
        solver.parameters.max_deterministic_time = self.time_limit / max(len(to_solve), 1)
        if must_place:
            objectives.append(Objective("unassigned", 0, 0, greedy_scores["unassigned"], "OPTIMAL"))
        for name in relevant:
            if best_scores is not None and best_scores[name] <= bounds[name]:  # at its trivial bound: proven
                objectives.append(Objective(name, best_scores[name], best_scores[name], greedy_scores[name], "OPTIMAL"))
                model.add(exprs[name] <= best_scores[name])
                continue
            model.clear_hints()
            hinted = np.zeros(len(x), dtype=bool)
            hinted[hint[hint >= 0]] = True
            for var, value in zip(x, hinted.tolist()):
                model.add_hint(var, value)
            model.minimize(exprs[name])
            status = solver.solve(model)
            if status == cp_model.MODEL_INVALID:  # a bug in this module, never a user error
                raise RuntimeError(f"invalid CP-SAT model: {model.validate()}")
            bound = float(bounds[name])
            state = "START"
            if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
                found = self._read(solver, x)
                scores = self.scores(found)
                if best_scores is None or _better(scores, best_scores, relevant):
                    best, best_scores, hint = found, scores, found
                    state = "OPTIMAL" if status == cp_model.OPTIMAL else "FEASIBLE"
                elif status == cp_model.OPTIMAL:
                    state = "OPTIMAL"
                bound = max(bound, float(solver.best_objective_bound))
            if best_scores is None:
                return None  # no full placement found in the budget
            objectives.append(Objective(name, best_scores[name], bound, greedy_scores[name], state))
            model.add(exprs[name] <= best_scores[name])
        return best, objectives

    def _read(self, solver: cp_model.CpSolver, x: list[cp_model.IntVar]) -> np.ndarray:
        values = np.fromiter((solver.boolean_value(v) for v in x), dtype=bool, count=len(x))
        chosen = np.full(len(self.units), -1, dtype=np.int64)
        picked = np.flatnonzero(values)
        chosen[self.pair_unit[picked]] = picked
        return chosen


def _better(a: dict[str, int], b: dict[str, int], order: list[str]) -> bool:
    return [a[n] for n in order] < [b[n] for n in order]
