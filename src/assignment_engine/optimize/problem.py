"""The problem in index form, what solving it returns, and its decomposition into independent components.

A unit can only go to the owners of its territory, so users who never
compete for the same unit are independent: ``components`` splits the problem
along the connected components of the user–candidate graph, and each is
solved on its own (component.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .clock import DEFAULT_EFFORT

MAX_SEED = 2**31 - 1  # CP-SAT takes a 32-bit seed


VALUE_STEPS = 1_000  # value moved is a tie-break in steps of 0.1 % of the component's value


def accounts_moved(continuity: float) -> int:
    """The accounts a plan moves, from its continuity (moves × (VALUE_STEPS + 1) + value steps ≤ VALUE_STEPS)."""
    return int(continuity) // (VALUE_STEPS + 1)


def accounts_moved_bound(continuity_bound: float) -> int:
    """A bound on the accounts moved, from a bound on continuity."""
    return max(0, -(-(int(continuity_bound) - VALUE_STEPS) // (VALUE_STEPS + 1)))


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
    effort: float | None = DEFAULT_EFFORT  # deterministic seconds per phase budget of a component (clock.py); None: none
    deadline: float | None = None  # time.time() by which solving ends (clock.py); None: none
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
    # optimal (every objective proven, or nothing to choose), effort, time_limit (the wall clock), or size (too large for a model)
    stopped_on: str = "optimal"

    def objective(self, name: str) -> Objective | None:
        return next((o for o in self.objectives if o.name == name), None)

    @property
    def status(self) -> str:
        if self.stopped_on == "size":
            return "GREEDY"  # too large for a model: the start, unproven
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
