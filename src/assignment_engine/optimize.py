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

import contextlib
import ctypes
import functools
import math
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
from ortools.sat.python import cp_model

from .errors import AssignmentEngineError, Finding, Location
from .relaxation import CapacityRows, relax

RESOLUTION = 1_000_000  # integer units per mean fair share
MAX_SEED = 2**31 - 1  # CP-SAT takes a 32-bit seed
CONTINUITY_GAP = 0.005  # a continuity phase may stop within 0.5 % of its proven bound
SUBMODEL_COST = 0.004  # deterministic seconds charged per neighbourhood model for building and setting it up
MAX_TRIPLES = 2_000  # the neighbourhood search re-solves every three users of a component with at most this many triples
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
class Holdings:
    """Current ownership per (unit, user): accounts and value held, sorted by ``unit × n_users + user``."""

    keys: np.ndarray
    accounts: np.ndarray
    value: np.ndarray
    n_users: int

    @classmethod
    def build(cls, unit: np.ndarray, user: np.ndarray, value: np.ndarray, n_users: int) -> Holdings:
        """From one entry per account (its unit, current user index ≥ 0, value)."""
        keys, inverse = np.unique(unit * n_users + user, return_inverse=True)
        return cls(keys, np.bincount(inverse, minlength=len(keys)), np.bincount(inverse, weights=value, minlength=len(keys)), n_users)

    def lookup(self, unit: np.ndarray, user: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Accounts and value that ``user`` holds of ``unit`` (elementwise; 0 where none)."""
        keys = unit * self.n_users + user
        at = np.minimum(np.searchsorted(self.keys, keys), max(len(self.keys) - 1, 0))
        hit = ((self.keys[at] == keys) if len(self.keys) else np.zeros(len(keys), dtype=bool)) & (user >= 0)
        return np.where(hit, self.accounts[at] if len(self.keys) else 0, 0), np.where(hit, self.value[at] if len(self.keys) else 0.0, 0.0)


@dataclass
class Problem:
    """Units, their candidate users, loads and current owners, in index form."""

    user_ids: list[str]
    weight: np.ndarray  # per user, ≥ 0
    candidate_sets: list[tuple[int, ...]]  # distinct candidate user lists
    unit_set: np.ndarray  # per unit: index into candidate_sets
    unit_size: np.ndarray  # accounts per unit
    unit_value: np.ndarray  # value per unit (for value moved)
    held: Holdings  # which user holds how much of each unit now
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
    parts, fair = _parts(problem)
    heavy = [p for p in parts if p.needs_solver]
    if workers > 1 and len(heavy) > 1:
        solved = dict(zip(map(id, heavy), _in_processes(heavy, min(workers, len(heavy)))))
    else:
        solved = {id(p): p.solve() for p in heavy}
    results = []
    for part in parts:
        chosen, result = solved[id(part)] if id(part) in solved else part.solve()
        owner[part.units] = chosen
        results.append(result)
    return Solution(owner, fair, results)


def replay(problem: Problem, owner: np.ndarray, results: list[ComponentResult]) -> Solution:
    """The solution of a saved plan: its owners per unit and solver results, with fair shares recomputed; no solving."""
    return Solution(owner, _parts(problem)[1], results)


def _parts(problem: Problem) -> tuple[list[Component], dict[str, np.ndarray]]:
    """The components, and every balance dimension's fair share per user (each component's own)."""
    fair = {d.label: np.zeros(len(problem.user_ids)) for d in problem.dims if d.tolerance is not None}
    parts = []
    for users, units in components(problem):
        part = Component(problem, users, units)
        for label, shares in part.fair.items():
            fair[label][users] = shares
        parts.append(part)
    return parts, fair


def _solve_part(part: Component) -> tuple[np.ndarray, ComponentResult]:
    return part.solve()


def _in_processes(parts: list[Component], workers: int) -> list[tuple[np.ndarray, ComponentResult]]:
    """Every part solved in worker processes, in order.

    A stop (SIGINT, SIGTERM) reaches the parent, which then ends every worker at
    once instead of waiting for their components; a worker that dies (killed,
    out of memory) fails the run with a message instead of leaving it waiting.
    """
    pool = ProcessPoolExecutor(workers, initializer=_worker_start)
    try:
        results = list(pool.map(_solve_part, parts, chunksize=max(1, len(parts) // (8 * workers))))
    except BrokenProcessPool:
        raise AssignmentEngineError([Finding(Location("workers"), "a worker process died (killed, or out of memory?); nothing was written. Try fewer workers")]) from None
    except BaseException:
        running = getattr(pool, "_processes", None) or {}  # Python 3.14's terminate_workers(), by hand
        for process in list(running.values()):
            process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)  # nothing left to wait for but the pool's own thread
        raise
    pool.shutdown()
    return results


def _worker_start() -> None:
    """Workers leave stops to the parent (a terminal's Ctrl-C reaches the whole group), end quietly and die with it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not a handler inherited from the parent
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


@dataclass
class _Dim:
    """A load dimension inside a component, as integers per candidate pair: a capacity or a band."""

    values: np.ndarray  # int64 per pair
    fixed: np.ndarray  # int64 per local user


@dataclass
class _Cap(_Dim):
    cap: np.ndarray  # capacity, per local user (_NO_CAP = none)


@dataclass
class _Band(_Dim):
    lo: np.ndarray  # band, per local user
    hi: np.ndarray
    mean_fair: float  # integer units in the mean fair share
    weight: int = 1  # objective weight of one unit of band slack


def _capacity(values: np.ndarray, fixed: np.ndarray, caps: np.ndarray) -> _Cap:
    """A capacity in integers: exact for whole numbers with small totals, else scaled to a million units per
    largest capacity, rounding only within 1e-9 of a value (an exact fit stays a fit).

    Loads above every capacity are clipped just above it: they cannot fit either way, and the model's sums
    stay far from CP-SAT's integer range (a thousand accounts of 10^15 each would overflow it).
    """
    finite = np.isfinite(caps)
    top = float(caps[finite].max())
    whole = bool(np.all(np.mod(values, 1) == 0) and np.all(np.mod(fixed, 1) == 0))
    if whole and float(values.sum()) + float(fixed.sum()) + top < 2**50:
        cap = np.where(finite, np.nan_to_num(caps, posinf=0), _NO_CAP).astype(np.int64)
        return _Cap(values.astype(np.int64), fixed.astype(np.int64), cap)
    scale = 1e6 / max(top, 1e-9)
    cap = np.where(finite, np.floor(np.nan_to_num(caps, posinf=0) * scale * (1 + 1e-9)), _NO_CAP).astype(np.int64)
    above = int(cap[finite].max()) + 1

    def load(x: np.ndarray) -> np.ndarray:
        return np.minimum(np.ceil(x * scale * (1 - 1e-9)), above).astype(np.int64)

    return _Cap(load(values), load(fixed), cap)


def _band(
    values: np.ndarray, fixed: np.ndarray, share: np.ndarray, tolerance: float, total: float, n_users: int, pair_user: np.ndarray
) -> _Band:
    """A balance band in integers: exact for whole numbers, else scaled with the rounding error kept inside.

    Whole-number values (counts, amounts in whole currency units) are used as
    they are, so a load exactly on the edge of the band is inside it. Other
    values are scaled to RESOLUTION units per mean fair share and the band is
    shrunk by each user's worst rounding error, so an integer load inside the
    band is a real load inside the tolerance.
    """
    if np.all(np.mod(values, 1) == 0) and np.all(np.mod(fixed, 1) == 0) and total < 2**50:
        eps = 1e-9 * share
        lo = np.ceil(share * (1 - tolerance) - eps)
        hi = np.floor(share * (1 + tolerance) + eps)
        return _Band(values.astype(np.int64), fixed.astype(np.int64), lo.astype(np.int64), hi.astype(np.int64), mean_fair=total / n_users)
    scale = RESOLUTION * n_users / total
    err = 0.5 * (np.bincount(pair_user, minlength=n_users) + 1)
    lo = np.ceil(share * (1 - tolerance) * scale + err)
    hi = np.floor(share * (1 + tolerance) * scale - err)
    return _Band(
        np.round(values * scale).astype(np.int64),
        np.round(fixed * scale).astype(np.int64),
        lo.astype(np.int64),
        hi.astype(np.int64),
        mean_fair=float(RESOLUTION),
    )


class Component:
    """One independent part. Pairs are stored flat: unit k owns pairs ``ptr[k]:ptr[k+1]``."""

    def __init__(self, problem: Problem, users: list[int], units: np.ndarray):
        self.users, self.units = users, units
        self.user_ids = [problem.user_ids[u] for u in users]
        self.seed, self.time_limit = problem.seed, problem.time_limit
        self.order = list(problem.objectives)
        self.lp_bounds: dict[str, float] = {}  # objective → LP relaxation bound over plans that place every unit
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
                self.dims.append(_capacity(values, fixed, d.capacity[users]))
            if d.tolerance is not None:
                # a unit's expected value is the mean over its candidates (equal unless it depends on the user)
                counts = np.maximum(np.diff(self.ptr), 1)
                total = float((np.bincount(self.pair_unit, weights=values, minlength=len(units)) / counts).sum()) + float(fixed.sum())
                share = weight / weight.sum() * total if weight.sum() > 0 else np.zeros(len(users))
                self.fair[d.label] = share
                if total > 0:
                    self.dims.append(_band(values, fixed, share, d.tolerance, total, len(users), self.pair_user))
        # band slack is weighed so one mean fair share of any dimension costs the same
        bands = [dim for dim in self.dims if isinstance(dim, _Band)]
        self.balance_unit = max((band.mean_fair for band in bands), default=1.0)
        for band in bands:
            band.weight = max(1, round(self.balance_unit / band.mean_fair))
        # continuity: accounts moved per pair, and value moved as a tie-break
        held_accounts, held_value = problem.held.lookup(global_unit, global_user)
        moves = np.repeat(self.size, np.diff(self.ptr)).astype(np.int64) - held_accounts
        moved_value = problem.unit_value[global_unit].astype(np.float64) - held_value
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
        return bool(np.any(np.diff(self.ptr) > 1)) or any(isinstance(d, _Cap) for d in self.dims)

    def loads(self, chosen: np.ndarray) -> list[np.ndarray]:
        """Per dim, the integer load of every local user for chosen pairs (-1 = unit unassigned)."""
        picked = chosen[chosen >= 0]
        return [d.fixed + np.bincount(self.pair_user[picked], weights=d.values[picked], minlength=len(self.users)).astype(np.int64) for d in self.dims]

    def scores(self, chosen: np.ndarray) -> dict[str, int]:
        picked = chosen[chosen >= 0]
        violation = 0
        for d, load in zip(self.dims, self.loads(chosen)):
            if isinstance(d, _Band):
                violation += d.weight * int(np.maximum(load - d.hi, 0).sum() + np.maximum(d.lo - load, 0).sum())
        return {
            "unassigned": int(self.size[chosen < 0].sum()),
            "balance": violation,
            "continuity": int(self.continuity[picked].sum()),
            "affinity": int(self.cost[picked].sum()),
        }

    # -- greedy ---------------------------------------------------------------------

    def greedy(self, room_first: bool = False) -> np.ndarray:
        """Keep current owners where capacity allows, place the rest largest first, then repair bands.

        ``room_first`` (capacities only, no bands) places the hardest unit first
        on the candidate whose capacity it takes the smallest part of, ignoring
        cost: on tight capacities it places every unit where cheapest-first
        leaves some out.
        """
        n_units = len(self.units)
        load = [d.fixed.copy() for d in self.dims]
        chosen = np.full(n_units, -1, dtype=np.int64)
        caps = [(i, d.cap) for i, d in enumerate(self.dims) if isinstance(d, _Cap)]
        bands = [(i, d) for i, d in enumerate(self.dims) if isinstance(d, _Band)]

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
        share = None  # per pair: the largest part of a capacity the unit takes (room_first)
        if room_first and caps and not bands:
            share = np.max([self.dims[i].values / np.maximum(cap[self.pair_user], 1) for i, cap in caps], axis=0)
            hardest = self.per_unit(np.minimum, share, empty=0.0)
            pending.sort(key=lambda k: (-float(hardest[k]), k))
        else:
            size_key = self.dims[bands[0][0]].values if bands else self.cost
            pending.sort(key=lambda k: (-int(size_key[self.ptr[k]:self.ptr[k + 1]].max(initial=0)), k))
        for k in pending:
            best, best_key = -1, None
            for p in range(self.ptr[k], self.ptr[k + 1]):
                if not fits(p):
                    continue
                c = self.pair_user[p]
                fill = max(((load[i][c] + d.values[p]) / max(int(d.hi[c]), 1) for i, d in bands), default=0.0) if share is None else float(share[p])
                key = (fill, int(self.cost[p]), p)
                if best_key is None or key < best_key:
                    best, best_key = p, key
            if best >= 0:
                chosen[k] = best
                move(best, 1)
        if bands:
            self._repair(chosen, load, bands, fits, move)
        return chosen

    def _repair(
        self,
        chosen: np.ndarray,
        load: list[np.ndarray],
        bands: list[tuple[int, _Band]],
        fits: Callable[[int], bool],
        move: Callable[[int, int], None],
    ) -> None:
        """Local search on band violations: best single move or swap for the worst user, until none helps.

        Candidate moves are scored in arrays: for the worst user s and each other
        user t, every unit of s that may go to t (a move) and every pair of such
        units of s and t (a swap). Ties prefer actions that move fewer accounts.
        """
        n_users = len(self.users)
        if len(self.units) * n_users > 5_000_000:
            return  # too large for a dense pair table; CP-SAT works from the greedy start as it is
        pair_of = np.full((len(self.units), n_users), -1, dtype=np.int64)
        pair_of[self.pair_unit, self.pair_user] = np.arange(len(self.pair_user))
        band_of = dict(bands)  # dim index → band
        band_index = list(band_of)
        cap_dims = [(i, d) for i, d in enumerate(self.dims) if isinstance(d, _Cap)]

        def viol(i: int, users: np.ndarray | int, new_load: np.ndarray) -> np.ndarray:
            d = band_of[i]
            return d.weight * (np.maximum(new_load - d.hi[users], 0) + np.maximum(d.lo[users] - new_load, 0))

        def user_violation() -> np.ndarray:
            return sum((viol(i, np.arange(n_users), load[i]) for i in band_index), np.zeros(n_users, dtype=np.int64))

        def caps_ok(users: int, delta: list[np.ndarray]) -> np.ndarray:
            ok = np.ones(delta[0].shape if delta else (), dtype=bool)
            for (i, d), change in zip(cap_dims, delta):
                ok &= load[i][users] + change <= d.cap[users]
            return ok

        unit_user = np.full(len(self.units), -1, dtype=np.int64)
        for _ in range(4 * len(self.units) + 50):
            placed = chosen >= 0
            unit_user[placed] = self.pair_user[chosen[placed]]
            unit_user[~placed] = -1
            per_user = user_violation()
            if per_user.sum() == 0:
                return
            acted = False
            for s in np.argsort(-per_user, kind="stable"):
                if per_user[s] == 0:
                    break
                at_s = np.flatnonzero(unit_user == s)
                best: tuple[int, int, str, tuple[int, ...]] | None = None  # (gain, -moves, kind, units and pairs)
                for t in range(n_users):
                    if t == s:
                        continue
                    base = sum(viol(i, s, load[i][s]) + viol(i, t, load[i][t]) for i in band_index)
                    movable = at_s[pair_of[at_s, t] >= 0]
                    if len(movable):
                        src, dst = chosen[movable], pair_of[movable, t]
                        after = sum(viol(i, s, load[i][s] - self.dims[i].values[src]) + viol(i, t, load[i][t] + self.dims[i].values[dst]) for i in band_index)
                        gain = base - after
                        gain = np.where(caps_ok(t, [d.values[dst] for _, d in cap_dims]), gain, -1)
                        extra = self.moves[dst] - self.moves[src]
                        k = int(np.lexsort((extra, -gain))[0])
                        if gain[k] > 0 and (best is None or (gain[k], -extra[k]) > best[:2]):
                            best = (int(gain[k]), -int(extra[k]), "move", (movable[k], dst[k]))
                for t in range(n_users) if best is None else ():  # swaps only when no single move helps
                    if t == s:
                        continue
                    base = sum(viol(i, s, load[i][s]) + viol(i, t, load[i][t]) for i in band_index)
                    at_t = np.flatnonzero(unit_user == t)
                    a_units = at_s[pair_of[at_s, t] >= 0]
                    b_units = at_t[pair_of[at_t, s] >= 0]
                    if len(a_units) and len(b_units) and len(a_units) * len(b_units) <= 250_000:
                        a_src, a_dst = chosen[a_units], pair_of[a_units, t]
                        b_src, b_dst = chosen[b_units], pair_of[b_units, s]
                        after = 0
                        for i in band_index:
                            v = self.dims[i].values
                            new_s = load[i][s] - v[a_src][:, None] + v[b_dst][None, :]
                            new_t = load[i][t] + v[a_dst][:, None] - v[b_src][None, :]
                            after = after + viol(i, s, new_s) + viol(i, t, new_t)
                        gain = base - after
                        for (ci, d) in cap_dims:
                            v = d.values
                            ok_t = load[ci][t] + v[a_dst][:, None] - v[b_src][None, :] <= d.cap[t]
                            ok_s = load[ci][s] - v[a_src][:, None] + v[b_dst][None, :] <= d.cap[s]
                            gain = np.where(ok_t & ok_s, gain, -1)
                        extra = (self.moves[a_dst] - self.moves[a_src])[:, None] + (self.moves[b_dst] - self.moves[b_src])[None, :]
                        flat = int(np.lexsort((extra.ravel(), -gain.ravel()))[0])
                        ia, ib = divmod(flat, len(b_units))
                        if gain[ia, ib] > 0 and (best is None or (gain[ia, ib], -extra[ia, ib]) > best[:2]):
                            best = (int(gain[ia, ib]), -int(extra[ia, ib]), "swap", (a_units[ia], a_dst[ia], b_units[ib], b_dst[ib]))
                if best is None:
                    continue
                if best[2] == "move":
                    k, dst = best[3]
                    move(chosen[k], -1)
                    move(dst, 1)
                    chosen[k] = dst
                else:
                    ka, da, kb, db = best[3]
                    move(chosen[ka], -1)
                    move(chosen[kb], -1)
                    move(da, 1)
                    move(db, 1)
                    chosen[ka], chosen[kb] = da, db
                acted = True
                break
            if not acted:
                return

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

    def lower_bounds(self, complete: bool = False) -> dict[str, int]:
        """Bounds a phase whose start value meets needs no solving: the cheapest pair of every unit,
        and for plans that place every unit (``complete``) the LP relaxation's bound when one was solved."""
        cheapest = {name: int(self.per_unit(np.minimum, values, empty=0).sum()) for name, values in (("continuity", self.continuity), ("affinity", self.cost))}
        bounds = {"unassigned": 0, "balance": 0, **cheapest}
        for name, bound in self.lp_bounds.items() if complete else ():
            bounds[name] = max(bounds[name], math.ceil(bound - 1e-6 * max(abs(bound), 1.0)))  # objectives are integers
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

    @property
    def capacity_only(self) -> bool:
        return any(isinstance(d, _Cap) for d in self.dims) and not any(isinstance(d, _Band) for d in self.dims)

    def _lp_guided(self, name: str) -> np.ndarray | None:
        """A start rounded from the LP relaxation of objective ``name`` (capacities only); records its bound.

        Units go in order of their largest LP value (the integral ones first, which
        always fit together), each to its highest-valued pair that fits, cheapest
        first among equals; units none of whose LP pairs fits then go to their
        cheapest pair that does (on GAP e801600: +1.69 % in one pass, +1.55 % in two).
        """
        target = {"continuity": self.continuity, "affinity": self.cost}[name]
        capacities = [CapacityRows(d.values, d.cap, d.cap < _NO_CAP, d.fixed) for d in self.dims if isinstance(d, _Cap)]
        relaxation = relax(self.ptr, self.pair_user, self.user_pairs, target, capacities, self.time_limit)
        if relaxation is None:
            return None
        self.lp_bounds[name] = relaxation.bound
        values = relaxation.values
        load = [c.fixed.copy() for c in capacities]
        chosen = np.full(len(self.units), -1, dtype=np.int64)
        units = np.arange(len(self.units))  # every unit has a pair (the caller checks)
        top = np.maximum.reduceat(values, self.ptr[:-1])
        for in_lp in (True, False):
            for k in units[np.lexsort((units, -top))].tolist():
                lo, hi = self.ptr[k], self.ptr[k + 1]
                if chosen[k] >= 0:
                    continue
                # first the LP's pairs by value; then, loads having only grown, by cost alone
                ranked = np.lexsort((target[lo:hi], -values[lo:hi])) if in_lp else np.argsort(target[lo:hi], kind="stable")
                for p in (lo + ranked).tolist():
                    if in_lp and values[p] <= 1e-9:
                        break
                    c = self.pair_user[p]
                    if all(l[c] + cap.values[p] <= cap.cap[c] for l, cap in zip(load, capacities)):
                        chosen[k] = p
                        for l, cap in zip(load, capacities):
                            l[c] += cap.values[p]
                        break
        return chosen

    def _lexicographic(self, start: np.ndarray) -> tuple[np.ndarray, list[Objective]]:
        """Optimise the objectives in order; when the start misses a hard goal, first try it as a constraint.

        A model that must place every unit within every band (when nothing shows
        that impossible) finds such a plan far faster than one that minimises
        unplaced units and band slack; only if it finds none within its budget
        is the relaxed model (an 'unassigned' option per unit, penalised slack on
        the bands) solved.
        """
        greedy_scores = self.scores(start)
        placeable = bool(np.all(np.diff(self.ptr) > 0))
        trivial = self.lower_bounds()
        guide = next((n for n in self.order if n in ("continuity", "affinity") and greedy_scores[n] > trivial[n]), None)
        if self.capacity_only and guide is not None and placeable:
            guided = self._lp_guided(guide)
            if guided is not None:
                guided_scores = self.scores(guided)
                if _better(guided_scores, greedy_scores, ["unassigned", *self.order]):
                    start, greedy_scores = guided, guided_scores
        if (greedy_scores["unassigned"] or greedy_scores["balance"]) and placeable and self.bands_may_hold():
            strict = self._phases(start, greedy_scores, strict=True)
            if strict is not None:
                return strict
        if greedy_scores["unassigned"] and any(isinstance(d, _Cap) for d in self.dims):
            # the relaxed model keeps what its start places: start from the placement that leaves fewer out
            alternative = self.greedy(room_first=True)
            if self.scores(alternative)["unassigned"] < greedy_scores["unassigned"]:
                start, greedy_scores = alternative, self.scores(alternative)
        if "balance" not in self.order or not any(isinstance(d, _Band) for d in self.dims):
            relaxed = self._phases(start, greedy_scores, strict=False)
            assert relaxed is not None  # the start is a solution of the relaxed model
            return relaxed
        # bands that cannot all hold: first the least slack, then, with every user's band widened just
        # to cover that plan (so no later plan has more slack), the later objectives as a strict model
        first = self._phases(start, greedy_scores, strict=False, until="balance")
        assert first is not None
        best, objectives = first
        if self.scores(best)["unassigned"] == 0 and placeable:
            loads = self.loads(best)
            widened = {
                i: (np.minimum(d.lo, load), np.maximum(d.hi, load))
                for i, (d, load) in enumerate(zip(self.dims, loads))
                if isinstance(d, _Band)
            }
            rest = self._phases(best, greedy_scores, strict=True, bands=widened)
            if rest is not None:
                return rest[0], objectives + [o for o in rest[1] if o.name not in ("unassigned", "balance")]
        relaxed = self._phases(best, greedy_scores, strict=False)
        assert relaxed is not None
        return relaxed[0], objectives + [o for o in relaxed[1] if o.name not in ("unassigned", "balance")]

    def bands_may_hold(self) -> bool:
        """False when a simple count shows some band cannot hold (then the strict model is skipped)."""
        for d in self.dims:
            if not isinstance(d, _Band):
                continue
            if np.any(d.fixed > d.hi) or np.any(d.lo > d.hi):
                return False
            smallest = self.per_unit(np.minimum, d.values, empty=0)
            if np.any(smallest > self.per_unit(np.maximum, d.hi[self.pair_user], empty=0)):
                return False  # a unit too big for every candidate's band
            low = int(d.fixed.sum() + smallest.sum())
            high = int(d.fixed.sum() + self.per_unit(np.maximum, d.values, empty=0).sum())
            if d.lo.sum() > high or d.hi.sum() < low:
                return False
        return True

    def _phases(
        self,
        start: np.ndarray,
        greedy_scores: dict[str, int],
        *,
        strict: bool,
        bands: dict[int, tuple[np.ndarray, np.ndarray]] | None = None,
        until: str | None = None,
    ) -> tuple[np.ndarray, list[Objective]] | None:
        """One CP-SAT model, its objectives solved in order (up to ``until``).

        ``strict``: every unit placed and every band held (``bands`` may widen
        them per dimension index). Otherwise: an 'unassigned' option per unit and
        penalised band slack. None when a strict model finds no solution.
        """
        model = cp_model.CpModel()
        x = [model.new_bool_var("") for _ in range(len(self.pair_user))]
        has_caps = any(isinstance(d, _Cap) for d in self.dims)
        unplaced_terms = []
        for k in range(len(self.units)):
            row = x[self.ptr[k]:self.ptr[k + 1]]
            if (has_caps and not strict) or not row:
                none = model.new_bool_var("")
                model.add_exactly_one([*row, none])
                unplaced_terms.append((none, int(self.size[k])))
            else:
                model.add_exactly_one(row)
        effective_bands = {i: (bands or {}).get(i, (d.lo, d.hi)) for i, d in enumerate(self.dims) if isinstance(d, _Band)}
        user_pairs = self.user_pairs
        slack = []
        for i, d in enumerate(self.dims):
            for c in range(len(self.users)):
                pairs = user_pairs[c]
                pairs = pairs[d.values[pairs] != 0]
                expr = cp_model.LinearExpr.weighted_sum([x[p] for p in pairs], d.values[pairs].tolist()) + int(d.fixed[c])
                if isinstance(d, _Cap) and d.cap[c] < _NO_CAP:
                    model.add(expr <= int(d.cap[c]))
                if isinstance(d, _Band) and strict:
                    lo, hi = effective_bands[i]
                    model.add_linear_constraint(expr, int(lo[c]), int(hi[c]))
                elif isinstance(d, _Band):
                    top = int(d.fixed[c] + d.values[pairs].sum())
                    over = model.new_int_var(0, max(top - int(d.hi[c]), 0), "")
                    under = model.new_int_var(0, max(int(d.lo[c]) - int(d.fixed[c]), 0), "")
                    model.add(expr - over <= int(d.hi[c]))
                    model.add(expr + under >= int(d.lo[c]))
                    slack += [(over, d.weight), (under, d.weight)]
        exprs = {
            "unassigned": cp_model.LinearExpr.weighted_sum([v for v, _ in unplaced_terms], [s for _, s in unplaced_terms]),
            "balance": cp_model.LinearExpr.weighted_sum([v for v, _ in slack], [w for _, w in slack]),
            "continuity": cp_model.LinearExpr.weighted_sum(x, self.continuity.tolist()),
            "affinity": cp_model.LinearExpr.weighted_sum(x, self.cost.tolist()),
        }
        present = {"balance": bool(slack), "continuity": True, "affinity": bool(self.cost.any())}
        relevant = ["unassigned"] * bool(unplaced_terms) + [name for name in self.order if present[name]]
        if until is not None:
            relevant = relevant[: relevant.index(until) + 1] if until in relevant else relevant
        # in the strict model the start (outside a band, or leaving units out) is no solution: no incumbent yet
        best, best_scores = (None, None) if strict else (start, dict(greedy_scores))
        bounds = self.lower_bounds(complete=strict or greedy_scores["unassigned"] == 0)
        hint = start
        to_solve = [name for name in relevant if best_scores is None or best_scores[name] > bounds[name]]
        objectives = []
        solver = _solver(self.seed)
        # the budget is shared by the phases to solve (a failed strict attempt costs one more budget)
        phase_budget = self.time_limit / max(len(to_solve), 1)
        if strict:
            objectives.append(Objective("unassigned", 0, 0, greedy_scores["unassigned"], "OPTIMAL"))
            if any(isinstance(d, _Band) for d in self.dims) and bands is None:
                objectives.append(Objective("balance", 0, 0, greedy_scores["balance"], "OPTIMAL"))

        def settle(name: str, value: int, bound: float, state: str) -> None:
            """Record the phase and cap its objective at ``value``, the best found, for the later phases."""
            objectives.append(Objective(name, value, bound, greedy_scores[name], state))
            model.add(exprs[name] <= value)

        if strict and not relevant:  # nothing to optimise: one solve for any plan that holds
            _hint(model, x, hint)
            solver.parameters.max_deterministic_time = self.time_limit
            if solver.solve(model) not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
                return None
            best = self._read(solver, x)
        for name in relevant:
            if best_scores is not None and best_scores["unassigned"] == 0:
                bounds = self.lower_bounds(complete=True)  # placing every unit is now a constraint
            if best_scores is not None and best_scores[name] <= bounds[name]:  # at its trivial or LP bound: proven
                settle(name, best_scores[name], best_scores[name], "OPTIMAL")
                continue
            earlier = [n for n in relevant[: relevant.index(name)] if n in ("continuity", "affinity")]
            budget, state = phase_budget, "START"
            # the exchange search needs a complete plan: before CP-SAT on the affinity of a capacity-only
            # component when the start is one, else after CP-SAT (a strict model's continuity, or its affinity)
            search_first = name == "affinity" and self.capacity_only and best_scores is not None and best_scores["unassigned"] == 0
            search_after = not search_first and (name == "continuity" and strict or name == "affinity" and self.capacity_only)
            if search_first:
                assert best is not None and best_scores is not None  # search_first needs the incumbent (both are set together)
                # generalized assignment: the exchange search first; it converges in a fraction of the budget
                # on small components and does all the improving on large ones, where a single CP-SAT worker
                # improves nothing (GAP 80 × 1600); CP-SAT gets the rest, to prove or improve its plan
                improved, spent = self._neighbourhood_search(best, name, earlier, effective_bands, budget / 2)
                budget -= spent
                if _better(self.scores(improved), best_scores, relevant):
                    best, best_scores, hint, state = improved, self.scores(improved), improved, "FEASIBLE"
                if best_scores[name] <= bounds[name]:
                    settle(name, best_scores[name], bounds[name], "OPTIMAL")
                    continue
            _hint(model, x, hint)
            model.minimize(exprs[name])
            _tune(solver, name)
            solver.parameters.max_deterministic_time = max(budget, 0.0)  # a search may overrun its share by one model
            status = solver.solve(model)
            if status == cp_model.MODEL_INVALID:  # a bug in this module, never a user error
                raise RuntimeError(f"invalid CP-SAT model: {model.validate()}")
            bound = float(bounds[name])
            if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
                found = self._read(solver, x)
                scores = self.scores(found)
                # a search stopped by the gap limit also reports OPTIMAL: only a met bound is a proof
                proven = status == cp_model.OPTIMAL and solver.objective_value <= solver.best_objective_bound
                if best_scores is None or _better(scores, best_scores, relevant):
                    best, best_scores, hint = found, scores, found
                    state = "OPTIMAL" if proven else "FEASIBLE"
                elif proven:
                    state = "OPTIMAL"
                bound = max(bound, float(solver.best_objective_bound))
            if best_scores is None:
                return None  # no full placement found in the budget
            assert best is not None  # set together with best_scores
            if search_after and best_scores["unassigned"] == 0 and state != "OPTIMAL" and best_scores[name] > bound * (1 + CONTINUITY_GAP):
                improved, _ = self._neighbourhood_search(best, name, earlier, effective_bands, self.time_limit)
                scores = self.scores(improved)
                if _better(scores, best_scores, relevant):
                    best, best_scores, hint = improved, scores, improved
                    state = "OPTIMAL" if best_scores[name] <= bound else "FEASIBLE"
            settle(name, best_scores[name], bound, state)
        for o in objectives:
            if o.name == "balance":  # report band slack in mean fair shares
                o.value, o.bound, o.greedy = (x / self.balance_unit for x in (o.value, o.bound, o.greedy))
        assert best is not None  # a strict model without a plan returned None above
        return best, objectives

    def _neighbourhood_search(self, chosen: np.ndarray, name: str, earlier: list[str], bands: dict[int, tuple[np.ndarray, np.ndarray]], budget: float) -> tuple[np.ndarray, float]:
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
        capacities are the only constraints and the plan is complete. Returns
        the plan and the budget spent.
        """
        n_users = len(self.users)
        if n_users < 3:
            return chosen, 0.0  # a pair would be the whole component, solved whole
        objective = {"continuity": self.continuity, "affinity": self.cost}
        target = objective[name]
        # three users hold more exchanges than two (GAP d20200: +1.30 % → +0.66 %); many users give too many triples
        size = 3 if n_users >= 4 and math.comb(n_users, 3) <= MAX_TRIPLES else 2
        groups = [np.array(g) for g in combinations(range(n_users), size)]
        if size == 2:  # many users: only pairs that exchange units at all
            shared = np.zeros((n_users, n_users), dtype=bool)
            for k in range(len(self.units)):
                users = self.pair_user[self.ptr[k]:self.ptr[k + 1]]
                shared[np.ix_(users, users)] = True
            groups = [g for g in groups if shared[g[0], g[1]]]
        chosen = chosen.copy()
        owner = self.pair_user[chosen]
        user_pairs = self.user_pairs
        member = np.zeros(n_users, dtype=bool)
        spent = 0.0
        solver = _solver(self.seed)
        solver.parameters.cp_model_probing_level = 0
        solver.parameters.max_deterministic_time = max(budget / 20, 0.05)
        improved = True
        while improved and spent < budget:
            improved = False
            for group in groups:
                member[:] = False
                member[group] = True
                in_group = member[owner]
                units = np.flatnonzero(in_group)
                pairs = np.sort(np.concatenate([up[in_group[self.pair_unit[up]]] for up in (user_pairs[c] for c in group.tolist())]))
                if len(pairs) == len(units):
                    continue  # nothing can move
                current = chosen[units]
                model = cp_model.CpModel()
                x = [model.new_bool_var("") for _ in range(len(pairs))]
                unit_of, user_of = self.pair_unit[pairs], self.pair_user[pairs]
                for chunk in np.split(np.arange(len(pairs)), np.flatnonzero(np.diff(unit_of)) + 1):
                    model.add_exactly_one([x[i] for i in chunk.tolist()])
                for i, d in enumerate(self.dims):
                    for c in group.tolist():
                        mine = np.flatnonzero(user_of == c)
                        mine = mine[d.values[pairs[mine]] != 0]
                        expr = cp_model.LinearExpr.weighted_sum([x[j] for j in mine.tolist()], d.values[pairs[mine]].tolist()) + int(d.fixed[c])
                        if isinstance(d, _Cap) and d.cap[c] < _NO_CAP:
                            model.add(expr <= int(d.cap[c]))
                        if i in bands:
                            model.add_linear_constraint(expr, int(bands[i][0][c]), int(bands[i][1][c]))
                for prior in earlier:
                    values = objective[prior]
                    model.add(cp_model.LinearExpr.weighted_sum(x, values[pairs].tolist()) <= int(values[current].sum()))
                model.minimize(cp_model.LinearExpr.weighted_sum(x, target[pairs].tolist()))
                for var, now in zip(x, np.isin(pairs, current).tolist()):
                    model.add_hint(var, now)
                status = solver.solve(model)
                # CP-SAT's deterministic time leaves out setting up a model, which dominates for models this small
                spent += solver.response_proto.deterministic_time + SUBMODEL_COST
                if status in (cp_model.OPTIMAL, cp_model.FEASIBLE) and solver.objective_value < int(target[current].sum()):
                    picked = pairs[[solver.boolean_value(var) for var in x]]
                    chosen[self.pair_unit[picked]] = picked
                    owner[self.pair_unit[picked]] = self.pair_user[picked]
                    improved = True
                if spent >= budget:
                    break
        return chosen, spent

    def _read(self, solver: cp_model.CpSolver, x: list[cp_model.IntVar]) -> np.ndarray:
        values = np.fromiter((solver.boolean_value(v) for v in x), dtype=bool, count=len(x))
        chosen = np.full(len(self.units), -1, dtype=np.int64)
        picked = np.flatnonzero(values)
        chosen[self.pair_unit[picked]] = picked
        return chosen


def _hint(model: cp_model.CpModel, x: list[cp_model.IntVar], chosen: np.ndarray) -> None:
    """Hint the plan ``chosen`` (pair per unit, -1 for none) to the model."""
    model.clear_hints()
    hinted = np.zeros(len(x), dtype=bool)
    hinted[chosen[chosen >= 0]] = True
    for var, value in zip(x, hinted.tolist()):
        model.add_hint(var, value)


def _solver(seed: int) -> cp_model.CpSolver:
    """One deterministic CP-SAT worker that leaves Ctrl-C to Python: CP-SAT would otherwise take SIGINT as
    "end this search" and the run would go on, ignoring the user's stop."""
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = seed
    solver.parameters.catch_sigint_signal = False
    return solver


def _tune(solver: cp_model.CpSolver, phase: str) -> None:
    """Parameters measured on the M benchmark's balance and continuity phases (about 500
    units × 5 users each): objective lower-bound search proves more components
    optimal and finds better plans, and probing during presolve costs more than it
    saves; closing the last 0.5 % of a continuity gap took a sixth of the time. On
    the generalized-assignment benchmark (unassigned, affinity) CP-SAT's defaults
    do better."""
    tuned = phase in ("balance", "continuity")
    solver.parameters.use_objective_lb_search = tuned
    solver.parameters.cp_model_probing_level = 0 if tuned else 2
    solver.parameters.relative_gap_limit = CONTINUITY_GAP if phase == "continuity" else 0.0


def _better(a: dict[str, int], b: dict[str, int], order: list[str]) -> bool:
    return [a[n] for n in order] < [b[n] for n in order]
