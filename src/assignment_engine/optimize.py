"""Choose an owner for every assignable unit (an account or a family): greedy, then CP-SAT.

The problem decomposes: a unit can only go to the owners of its territory, so
users who never compete for the same unit are independent. Each component of
the user–candidate graph is solved on its own, in this order of objectives:

1. hard: one owner per unit among its candidates, user capacities (a unit no
   candidate has room for stays unassigned, with the reason);
2. balance: every balance requirement within its band around the user's fair
   share (weight's part of the component total); a band that cannot hold is
   relaxed with penalised slack, so locks never make a run fail;
3. continuity: fewest accounts moved, then least value moved.

A continuity-first greedy gives a feasible start; CP-SAT, hinted with it, first
minimises band violations, then, with violations capped at the best found,
minimises moves. The result is never worse than the greedy start. All numbers
in the model are integers: each dimension is scaled so the mean fair share is
10,000 (a resolution of 0.01 % of a fair share).
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from ortools.sat.python import cp_model

RESOLUTION = 10_000  # integer units per mean fair share
_NO_CAP = np.iinfo(np.int64).max // 4


@dataclass
class LoadDim:
    """One load a user carries: per-unit values and per-user fixed load (locked accounts)."""

    label: str
    unit_values: np.ndarray  # float, per unit
    fixed: np.ndarray  # float, per user
    tolerance: float | None = None  # a balance band
    capacity: np.ndarray | None = None  # float per user (inf = none): a hard cap


@dataclass
class Problem:
    """Units, their candidate users, loads and current owners, in index form."""

    user_ids: list[str]
    weight: np.ndarray  # per user, ≥ 0
    candidate_sets: list[tuple[int, ...]]  # distinct candidate user lists
    unit_set: np.ndarray  # per unit: index into candidate_sets
    unit_size: np.ndarray  # accounts per unit
    unit_value: np.ndarray  # value per unit (for value moved)
    current: list[dict[int, tuple[int, float]]]  # per unit: user → (accounts, value) currently held
    dims: list[LoadDim]
    time_limit: float = 10.0
    seed: int = 0

    @property
    def n_units(self) -> int:
        return len(self.unit_set)


@dataclass
class ComponentResult:
    users: list[str]
    units: int
    pairs: int
    status: str  # TRIVIAL, OPTIMAL, FEASIBLE (CP-SAT improved or kept greedy), GREEDY
    violation: float  # sum of band violations, in fair shares
    moves: int
    moves_bound: float
    greedy_moves: int
    greedy_violation: float
    seconds: float

    @property
    def gap(self) -> float:
        return 0.0 if self.moves <= self.moves_bound else (self.moves - self.moves_bound) / max(self.moves, 1)


@dataclass
class Solution:
    owner: np.ndarray  # per unit: user index, -1 = no candidate had capacity
    fair: dict[str, np.ndarray]  # per balance dim label: fair share per user
    components: list[ComponentResult] = field(default_factory=list)


def components(problem: Problem) -> list[tuple[list[int], np.ndarray]]:
    """(users, units) of each independent part, deterministic order."""
    parent = list(range(len(problem.user_ids)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    used_sets = np.unique(problem.unit_set)
    for s in used_sets:
        users = problem.candidate_sets[s]
        for u in users[1:]:
            a, b = find(users[0]), find(u)
            if a != b:
                parent[max(a, b)] = min(a, b)
    set_root = np.array([find(problem.candidate_sets[s][0]) if problem.candidate_sets[s] else -1 for s in range(len(problem.candidate_sets))], dtype=np.int64)
    unit_root = set_root[problem.unit_set] if problem.n_units else np.empty(0, dtype=np.int64)
    order = np.argsort(unit_root, kind="stable")
    bounds = np.flatnonzero(np.diff(unit_root[order])) + 1
    by_root = {int(unit_root[chunk[0]]): chunk for chunk in np.split(order, bounds) if len(chunk)}
    groups: dict[int, list[int]] = {}
    for u in range(len(problem.user_ids)):
        groups.setdefault(find(u), []).append(u)
    out = []
    for root, users in sorted(groups.items()):
        out.append((users, np.sort(by_root.get(root, np.empty(0, dtype=np.int64)))))
    if -1 in by_root:
        out.append(([], np.sort(by_root[-1])))
    return out


def solve(problem: Problem, workers: int = 1) -> Solution:
    """Solve every component; with ``workers`` > 1 the ones that need CP-SAT run in worker processes.

    Components are independent and each is solved with one deterministic CP-SAT
    worker, so the answer does not depend on ``workers`` or on scheduling.
    """
    owner = np.full(problem.n_units, -1, dtype=np.int64)
    fair = {d.label: np.zeros(len(problem.user_ids)) for d in problem.dims if d.tolerance is not None}
    parts = []
    for users, units in components(problem):
        if not users:
            continue  # units without any candidate stay unassigned
        part = _Component(problem, users, units)
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


def _solve_part(part: _Component) -> tuple[np.ndarray, ComponentResult]:
    return part.solve()


class _Component:
    """One independent part, with loads as scaled integers."""

    def __init__(self, problem: Problem, users: list[int], units: np.ndarray):
        self.users, self.units = users, units
        self.user_ids = [problem.user_ids[u] for u in users]
        self.seed, self.time_limit = problem.seed, problem.time_limit
        local = {u: k for k, u in enumerate(users)}
        self.cands = [[local[u] for u in problem.candidate_sets[s]] for s in problem.unit_set[units]]
        self.size = problem.unit_size[units]
        self.value = problem.unit_value[units]
        weight = problem.weight[users]
        total_weight = weight.sum()
        self.fair: dict[str, np.ndarray] = {}
        self.dims: list[tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]] = []
        for d in problem.dims:
            values, fixed = d.unit_values[units], d.fixed[users]
            total = float(values.sum() + fixed.sum())
            lo = hi = cap = None
            if d.tolerance is not None:
                share = weight / total_weight * total if total_weight > 0 else np.zeros(len(users))
                self.fair[d.label] = share
            if d.capacity is not None and np.isfinite(d.capacity[users]).any():
                scale = 1.0 if np.all(np.mod(values, 1) == 0) and np.all(np.mod(fixed, 1) == 0) else 1e6 / max(float(np.nanmax(np.where(np.isfinite(d.capacity[users]), d.capacity[users], 0))), 1e-9)
                ivalues = np.ceil(values * scale).astype(np.int64)
                ifixed = np.ceil(fixed * scale).astype(np.int64)
                caps = d.capacity[users]
                cap = np.where(np.isfinite(caps), np.floor(np.where(np.isfinite(caps), caps, 0) * scale), _NO_CAP).astype(np.int64)
                self.dims.append((ivalues, ifixed, None, None, cap))
            if d.tolerance is not None and total > 0:
                scale = RESOLUTION * len(users) / total
                ivalues = np.round(values * scale).astype(np.int64)
                ifixed = np.round(fixed * scale).astype(np.int64)
                lo = np.floor(self.fair[d.label] * (1 - d.tolerance) * scale).astype(np.int64)
                hi = np.ceil(self.fair[d.label] * (1 + d.tolerance) * scale).astype(np.int64)
                self.dims.append((ivalues, ifixed, lo, hi, None))
        self.moves_to: list[list[int]] = []
        self.value_moved_to: list[list[float]] = []
        for k, unit in enumerate(units):
            held = problem.current[unit]
            moves, moved = [], []
            for c in self.cands[k]:
                kept_accounts, kept_value = held.get(users[c], (0, 0.0))
                moves.append(int(self.size[k]) - kept_accounts)
                moved.append(float(self.value[k]) - kept_value)
            self.moves_to.append(moves)
            self.value_moved_to.append(moved)

    # -- evaluation -------------------------------------------------------------

    def loads(self, choice: Sequence[int]) -> list[np.ndarray]:
        """Per dim, integer load per local user (choice: local user per unit, -1 = none)."""
        choice = np.asarray(choice)
        placed = choice >= 0
        out = []
        for values, fixed, *_ in self.dims:
            load = fixed.copy()
            np.add.at(load, choice[placed], values[placed])
            out.append(load)
        return out

    def violation(self, loads: list[np.ndarray]) -> int:
        total = 0
        for load, (_, _, lo, hi, _) in zip(loads, self.dims):
            if lo is not None:
                total += int(np.maximum(load - hi, 0).sum() + np.maximum(lo - load, 0).sum())
        return total

    def max_violation(self) -> int:
        """An upper bound of ``violation``: every load at 0 or at the whole total."""
        return sum(int(values.sum() + fixed.sum() + np.maximum(lo, 0).sum()) * 2 for values, fixed, lo, _, _ in self.dims if lo is not None)

    def moves(self, choice: Sequence[int]) -> int:
        return sum(self.moves_to[k][self.cands[k].index(c)] if c >= 0 else int(self.size[k]) for k, c in enumerate(choice))

    def score(self, choice: Sequence[int]) -> tuple[int, int, int]:
        unassigned = int(sum(int(self.size[k]) for k, c in enumerate(choice) if c < 0))
        return (unassigned, self.violation(self.loads(choice)), self.moves(choice))

    # -- greedy -----------------------------------------------------------------

    def greedy(self) -> list[int]:
        """Keep current owners where capacity allows, place the rest largest first, then repair bands."""
        load = [fixed.copy() for _, fixed, *_ in self.dims]
        caps = [cap for *_, cap in self.dims]
        choice = [-1] * len(self.units)

        def fits(k: int, c: int) -> bool:
            return all(cap is None or load[d][c] + self.dims[d][0][k] <= cap[c] for d, cap in enumerate(caps))

        def place(k: int, c: int, sign: int = 1) -> None:
            for d in range(len(self.dims)):
                load[d][c] += sign * self.dims[d][0][k]

        pending = []
        for k in range(len(self.units)):
            moves = self.moves_to[k]
            best = min(range(len(moves)), key=lambda i: (moves[i], i))
            c = self.cands[k][best]
            if moves[best] < self.size[k] and fits(k, c):
                choice[k] = c
                place(k, c)
            else:
                pending.append(k)
        primary = self.dims[0][0] if self.dims else np.zeros(len(self.units), dtype=np.int64)
        pending.sort(key=lambda k: (-int(primary[k]), k))
        band_dims = [d for d, dim in enumerate(self.dims) if dim[3] is not None]
        for k in pending:
            options = [c for c in self.cands[k] if fits(k, c)]
            if options:
                c = min(options, key=lambda c: (self._fill(load, band_dims, c, k), c))
                choice[k] = c
                place(k, c)
        self._repair(choice, load, band_dims, fits, place)
        return choice

    def _fill(self, load: list[np.ndarray], band_dims: list[int], c: int, k: int) -> float:
        """How full user c would be with unit k: the worst ratio to its band's upper end."""
        worst = 0.0
        for d in band_dims:
            values, _, _, hi, _ = self.dims[d]
            worst = max(worst, (load[d][c] + values[k]) / max(int(hi[c]), 1))
        return worst

    def _repair(self, choice: list[int], load: list[np.ndarray], band_dims: list[int], fits, place) -> None:
        """Move single units from users over a band to users under it while that lowers the violation."""
        if not band_dims:
            return

        def user_violation(c: int) -> int:
            v = 0
            for d in band_dims:
                _, _, lo, hi, _ = self.dims[d]
                v += max(int(load[d][c] - hi[c]), 0) + max(int(lo[c] - load[d][c]), 0)
            return v

        movable = [k for k in range(len(self.units)) if len(self.cands[k]) > 1 and choice[k] >= 0]
        for _ in range(4):
            improved = False
            for k in sorted(movable, key=lambda k: (min(self.moves_to[k]) == 0, k)):  # units that move anyway first
                src = choice[k]
                if user_violation(src) == 0:
                    continue
                best, gain = None, 0
                for dst in self.cands[k]:
                    if dst == src:
                        continue
                    base = user_violation(src) + user_violation(dst)
                    place(k, src, -1)
                    if fits(k, dst):
                        place(k, dst)
                        gain_here = base - (user_violation(src) + user_violation(dst))
                        place(k, dst, -1)
                        if gain_here > gain:
                            best, gain = dst, gain_here
                    place(k, src)
                if best is not None:
                    place(k, src, -1)
                    place(k, best)
                    choice[k] = best
                    improved = True
            if not improved:
                break

    # -- CP-SAT -----------------------------------------------------------------

    @property
    def needs_solver(self) -> bool:
        """False when every unit has one candidate and no capacity can bind: the greedy is the answer."""
        return bool(len(self.units)) and (any(len(c) > 1 for c in self.cands) or any(cap is not None for *_, cap in self.dims))

    def solve(self) -> tuple[np.ndarray, ComponentResult]:
        start = time.perf_counter()
        start_choice = self.greedy()
        g_unassigned, g_violation, g_moves = self.score(start_choice)
        pairs = sum(len(c) for c in self.cands)
        status, choice, bound = "TRIVIAL", start_choice, float(g_moves)
        if self.needs_solver:
            status, choice, bound = self._cp_sat(start_choice, (g_unassigned, g_violation, g_moves))
        _, violation, moves = self.score(choice)
        result = ComponentResult(
            users=self.user_ids,
            units=len(self.units),
            pairs=pairs,
            status=status,
            violation=violation / RESOLUTION,
            moves=moves,
            moves_bound=bound,
            greedy_moves=g_moves,
            greedy_violation=g_violation / RESOLUTION,
            seconds=time.perf_counter() - start,
        )
        users = np.asarray(self.users, dtype=np.int64)
        chosen = np.asarray(choice, dtype=np.int64)
        return np.where(chosen >= 0, users[np.maximum(chosen, 0)], -1), result

    def _cp_sat(self, hint: list[int], hint_score: tuple[int, int, int]) -> tuple[str, list[int], float]:
        model = cp_model.CpModel()
        x: list[list[cp_model.IntVar]] = []
        unplaced = []
        has_caps = any(cap is not None for *_, cap in self.dims)
        for k, cands in enumerate(self.cands):
            row = [model.new_bool_var(f"x{k}_{c}") for c in cands]
            x.append(row)
            if has_caps:
                none = model.new_bool_var(f"none{k}")
                model.add_exactly_one([*row, none])
                unplaced.append((none, int(self.size[k])))
            else:
                model.add_exactly_one(row)
        slack_terms = []
        for values, fixed, lo, hi, cap in self.dims:
            terms: list[list[tuple[int, cp_model.IntVar]]] = [[] for _ in self.users]
            for k, cands in enumerate(self.cands):
                if values[k]:
                    for c, var in zip(cands, x[k]):
                        terms[c].append((int(values[k]), var))
            for c in range(len(self.users)):
                expr = sum(v * var for v, var in terms[c]) + int(fixed[c])
                if cap is not None and cap[c] < _NO_CAP:
                    model.add(expr <= int(cap[c]))
                if lo is not None:
                    top = int(fixed[c] + sum(v for v, _ in terms[c]))
                    over = model.new_int_var(0, max(top - int(hi[c]), 0), "")
                    under = model.new_int_var(0, max(int(lo[c]) - int(fixed[c]), 0), "")
                    model.add(expr - over <= int(hi[c]))
                    model.add(expr + under >= int(lo[c]))
                    slack_terms += [over, under]
        unplaced_expr = sum(size * var for var, size in unplaced)
        violation_expr = sum(slack_terms)
        moves_expr = sum(m * var for k in range(len(x)) for m, var in zip(self.moves_to[k], x[k]) if m)
        for k, cands in enumerate(self.cands):
            for c, var in zip(cands, x[k]):
                model.add_hint(var, hint[k] == c)
            if has_caps:
                model.add_hint(unplaced[k][0], hint[k] < 0)

        solver = cp_model.CpSolver()
        solver.parameters.num_workers = 1
        solver.parameters.random_seed = self.seed
        solver.parameters.max_deterministic_time = self.time_limit / 2

        best = hint
        best_score = hint_score
        if hint_score[0] or hint_score[1]:
            model.minimize(unplaced_expr * (self.max_violation() + 1) + violation_expr)
            status = solver.solve(model)
            if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
                found = self._read(solver, x)
                if self.score(found) < best_score:
                    best, best_score = found, self.score(found)
            model.clear_hints()
            for k, cands in enumerate(self.cands):
                for c, var in zip(cands, x[k]):
                    model.add_hint(var, best[k] == c)
        model.add(unplaced_expr <= best_score[0])
        model.add(violation_expr <= best_score[1])
        model.minimize(moves_expr)
        status = solver.solve(model)
        bound = float(best_score[2])
        name = "FEASIBLE"
        if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            found = self._read(solver, x)
            if self.score(found) <= best_score:
                best = found
            bound = solver.best_objective_bound
            name = "OPTIMAL" if status == cp_model.OPTIMAL else "FEASIBLE"
        return name, best, bound

    def _read(self, solver: cp_model.CpSolver, x: list[list[cp_model.IntVar]]) -> list[int]:
        out = []
        for k, cands in enumerate(self.cands):
            chosen = -1
            for c, var in zip(cands, x[k]):
                if solver.boolean_value(var):
                    chosen = c
                    break
            out.append(chosen)
        return out
