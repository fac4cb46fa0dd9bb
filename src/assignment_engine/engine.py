"""The pipeline: match → families → rank → optimize → plan. No files, no terminal.

:class:`Engine` holds compiled rules and nothing else, so one instance serves
any number of calls (batch runs, or one account on every CRM save).
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .errors import Finding, Location, OptionError, RuleFileError
from .matching.families import build_families
from .matching.match import TIED, Matches, match_accounts, rule_trace
from .matching.rank import balance_scope, balance_values, measure_values, rank_tiers
from .matching.segments import derive as derive_segments
from .optimize import MAX_SEED, Holdings, LoadDim, Problem, solve
from .optimize.clock import effort_in_force, solving_deadline
from .optimize.distributed import check_executor
from .plan.deals import DealTable, deal_measures
from .plan.result import REPLAN_WHY, Baseline, Incremental, Plan, Prepared, Status, account_fingerprints, fingerprint_fields
from .routing.router import Router, State
from .rules.compile import CompiledRules, load_rules
from .rules.ruleset import MAX_SECONDS, Assignment
from .tables.cells import owner_index
from .tables.table import AccountTable, PairTable, User, check_records

Progress = Callable[[str], None]


@dataclass(frozen=True)
class TerritoryMatch:
    """Where one account belongs by the rules, before any balancing."""

    territories: list[str]  # every territory it is in (deepest per branch), file order
    owning: list[str]  # the owning territory, or the tied ones (empty: matched nothing)
    candidates: list[str]  # users who may own it (owner members of ``owning``)
    trace: list[str]  # per territory: which rules held or failed, and why


class Engine:
    """Compiled rules plus the operations on them."""

    def __init__(self, rules: CompiledRules):
        self.rules = rules

    @classmethod
    def from_file(cls, path: str | Path) -> Engine:
        return cls(load_rules(path))

    # -- one account --------------------------------------------------------------

    def table(self, records: Sequence[Mapping[str, Any]], source: str = "<accounts>") -> AccountTable:
        """Typed table from plain dicts (as a CRM integration holds records), checked by :func:`check_records`.

        A caller's record is held to more than a file's row: a misspelt or
        missing key, or a value of the wrong type, would otherwise just match
        nothing. Errors are at ``source:position:key``.
        """
        check_records(records, self.rules.field_types, source)
        return AccountTable.from_records(records, self.rules.field_types, source=source)

    def match(self, record: Mapping[str, Any], as_of: dt.date | None = None) -> TerritoryMatch:
        """Territories and candidate owners of one account, with the rule trace; errors are at ``<record>:1:key``.

        ``as_of`` is the run date relative conditions count from (default: the rule file's, else today)."""
        table = derive_segments(self.rules, self.table([record], source="<record>"), as_of)
        matches = match_accounts(self.rules, table)
        ids = matches.territory_ids
        owning = [ids[t] for t in matches.owning_candidates(0)]
        nodes = self.rules.territories
        candidates = list(dict.fromkeys(u for t in owning for u in nodes[t].owners))
        return TerritoryMatch([ids[t] for t in matches.territories_of(0)], owning, candidates, rule_trace(self.rules, table, 0))

    def router(self, plan: Plan | str | Path, state: State | None = None) -> Router:
        """A :class:`Router` for records arriving after ``plan`` (a :class:`Plan`, or a saved plan directory).

        The rules are the plan's own (a saved plan's rule file, verified unchanged), so this engine's rules only
        serve when ``plan`` is in memory."""
        return Router.from_plan(plan, state) if isinstance(plan, Plan) else Router.from_directory(plan, state)

    # -- a whole book -------------------------------------------------------------

    def assign(
        self,
        accounts: AccountTable,
        users: Sequence[User],
        *,
        workers: int = 1,
        progress: Progress | None = None,
        executor: str = "local",
        scheduler: Any = None,
        **options: Any,
    ) -> Plan:
        """Assign every account of ``accounts`` to a territory and an owner among ``users``.

        ``options`` are those of :meth:`prepare`. ``workers`` > 1 solves
        independent components in that many processes; the plan is the same
        for any number of workers. ``executor="dask"`` solves them on a Dask
        cluster instead (the ``distributed`` extra): ``scheduler`` is its address
        or a ``distributed.Client``, or None for a local cluster of ``workers``
        processes; the plan is the same again.
        """
        say = progress or (lambda _msg: None)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise OptionError([Finding(Location("workers"), f"workers must be a whole number ≥ 1, got {workers!r}")])
        check_executor(executor, scheduler)
        prepared = self.prepare(accounts, users, progress=say, **options)
        say(f"optimizing {prepared.problem.n_units:,} units over {len(users)} users")
        solution = solve(prepared.problem, workers, executor, scheduler)
        say("building the plan")
        return Plan.build(prepared, solution)

    def prepare(
        self,
        accounts: AccountTable,
        users: Sequence[User],
        *,
        seed: int | None = None,
        time_limit: float | None = None,
        effort: float | None = None,
        started: float | None = None,
        on_hierarchy_error: Literal["raise", "independent"] = "raise",
        progress: Progress | None = None,
        users_source: str = "users file",
        pairs: PairTable | None = None,
        deals: DealTable | None = None,
        as_of: dt.date | None = None,
        baseline: Baseline | None = None,
    ) -> Prepared:
        """Every stage before the optimizer: segments, match, families, ranking, and the optimization problem.

        ``as_of`` is the run date relative conditions count from (default: the rule file's, else today).
        With ``baseline`` (a saved plan's decisions, :func:`saved.read_baseline`) the run is incremental: only
        accounts that changed since that plan are units of the problem (see :func:`_replan`); the others keep
        the plan's owner and count as fixed load, like locked accounts, with status ``unchanged``.

        ``time_limit`` (default: the rule file's) is wall-clock seconds for the run that started at ``started``
        (``time.time()``; default: now), solving ending in time to build and write the plan; ``effort`` (default:
        the rule file's) is the solver's deterministic work per component (optimize/clock.py)."""
        say = progress or (lambda _msg: None)
        rules = self.rules
        policy = rules.policy
        _check_solver_options(seed, time_limit, effort)
        started = time.time() if started is None else started
        self.check_members(users, users_source)
        derive_segments(rules, accounts, as_of)
        user_ids = [u.id for u in users]
        user_index = {u: i for i, u in enumerate(user_ids)}
        active = {u.id for u in users if u.active}

        say(f"matching {len(accounts):,} accounts to {len(rules.territories)} territories")
        matches = match_accounts(rules, accounts)
        say("building account families")
        families = build_families(accounts, on_hierarchy_error)
        root = families.root if policy.hierarchy == "follow_ultimate_parent" else np.arange(len(accounts))
        values = measure_values(rules, accounts)
        values.update(deal_measures(rules, accounts, deals))
        tier, tier_names = rank_tiers(rules, accounts, values, ~accounts.excluded)

        n = len(accounts)
        status = np.full(n, Status.ASSIGNED, dtype=np.int8)
        status[accounts.excluded] = Status.EXCLUDED
        status[accounts.locked & ~accounts.excluded] = Status.LOCKED
        rooted = root != np.arange(n)
        pinned_root = (status[root] != Status.ASSIGNED) & rooted & (status == Status.ASSIGNED)
        status[pinned_root] = Status.PINNED
        incremental = None
        if baseline is not None:
            incremental = _replan(rules, accounts, matches, root, status, baseline, users)
            status[incremental.kept_owner >= 0] = Status.UNCHANGED
        free = status == Status.ASSIGNED

        # units: one per distinct root of a free account
        unit_roots, unit_of_free = np.unique(root[free], return_inverse=True)
        unit = np.full(n, -1, dtype=np.int64)
        unit[free] = unit_of_free
        nodes = [rules.territories[t] for t in matches.territory_ids]
        set_index: dict[tuple[int, ...], int] = {}
        candidate_sets: list[tuple[int, ...]] = []
        pair_territory: dict[tuple[int, int], int] = {}  # (candidate set, user) → territory index
        unit_set = np.empty(len(unit_roots), dtype=np.int64)
        for k, r in enumerate(unit_roots):
            owning = matches.owning_candidates(int(r))
            s = set_index.get(owning)
            if s is None:
                s = set_index[owning] = len(candidate_sets)
                users_here: dict[int, int] = {}
                for t in owning:
                    for u in nodes[t].owners:
                        if u in active:
                            users_here.setdefault(user_index[u], t)
                candidate_sets.append(tuple(users_here))
                pair_territory.update({(s, u): t for u, t in users_here.items()})
            unit_set[k] = s

        value_measure = self.value_measure()
        value = values[value_measure] if value_measure else np.ones(n)
        owner_at = owner_index(accounts.owner_ids, users)
        fixed_rows = np.flatnonzero(~free)  # locked, excluded, pinned (and unchanged) accounts stay where they are
        fixed_owner = np.where(status == Status.PINNED, owner_at[root], owner_at)
        if incremental is not None:
            fixed_owner = np.where(status == Status.UNCHANGED, incremental.kept_owner, fixed_owner)

        def per_unit(v: np.ndarray) -> np.ndarray:
            return np.bincount(unit_of_free, weights=v[free], minlength=len(unit_roots))

        def per_user_fixed(v: np.ndarray) -> np.ndarray:
            rows = fixed_rows[fixed_owner[fixed_rows] >= 0]
            return np.bincount(fixed_owner[rows], weights=v[rows], minlength=len(users))

        pair_measures = {name for name, m in rules.measures.items() if m.pair is not None}
        n_users = len(users)
        if pairs is not None:
            listed = free[pairs.account]
            pair_key = unit[pairs.account[listed]] * n_users + pairs.user[listed]
            keys, key_of_pair = np.unique(pair_key, return_inverse=True)
            fixed_listed = np.flatnonzero(~listed & (pairs.user == fixed_owner[pairs.account]))

        def pair_values(pairs: PairTable, v: np.ndarray, in_scope: np.ndarray) -> tuple[dict[tuple[int, int], float], np.ndarray]:
            """Per (unit, user) loads where the pairs file gives a workload, and the fixed-load corrections."""
            workload = pairs.workload
            account = pairs.account
            given = ~np.isnan(workload) & in_scope[account]
            delta = np.where(given, np.nan_to_num(workload) - v[account], 0.0)
            per_key = np.bincount(key_of_pair, weights=delta[listed], minlength=len(keys))
            base = per_unit(v)
            overrides = {
                (int(q // n_users), int(q % n_users)): float(base[q // n_users] + d)
                for q, d in zip(keys.tolist(), per_key.tolist(), strict=True)
                if d
            }
            fixed_delta = np.bincount(pairs.user[fixed_listed], weights=delta[fixed_listed], minlength=n_users)
            return overrides, fixed_delta

        def dim(label: str, measure: str, v: np.ndarray, in_scope: np.ndarray, **kind: Any) -> LoadDim:
            d = LoadDim(label, per_unit(v), per_user_fixed(v), **kind)
            if pairs is not None and measure in pair_measures:
                d.pair_values, fixed_delta = pair_values(pairs, v, in_scope)
                d.fixed = d.fixed + fixed_delta
            return d

        everywhere = np.ones(n, dtype=bool)
        dims = []
        for spec in rules.balance:
            scope = balance_scope(spec, accounts, tier, tier_names)
            dims.append(
                dim(
                    spec.label,
                    spec.measure,
                    balance_values(spec, values, scope),
                    everywhere if scope is None else scope,
                    tolerance=spec.tolerance,
                )
            )
        for key in sorted({k for u in users for k in u.capacity}):
            v = np.ones(n) if key == "accounts" and key not in values else values[key]
            caps = np.array([u.capacity.get(key, np.inf) for u in users], dtype=np.float64)
            dims.append(dim(f"max_{key}", key, v, everywhere, capacity=caps))
        pair_cost = pair_allowed = None
        if pairs is not None:
            cost = np.bincount(key_of_pair, weights=pairs.cost[listed], minlength=len(keys))
            pair_cost = {(int(q // n_users), int(q % n_users)): float(c) for q, c in zip(keys.tolist(), cost.tolist(), strict=True) if c}
            if policy.pair_eligibility == "listed":
                members_listed = np.bincount(key_of_pair, minlength=len(keys))
                unit_size = np.bincount(unit_of_free, minlength=len(unit_roots))
                pair_allowed = {
                    (int(q // n_users), int(q % n_users))
                    for q, c in zip(keys.tolist(), members_listed.tolist(), strict=True)
                    if c == unit_size[q // n_users]
                }

        holders = free & (owner_at >= 0)
        held = Holdings.build(unit[holders], owner_at[holders], value[holders], n_users)

        problem = Problem(
            user_ids=user_ids,
            weight=np.array([u.weight if u.active else 0.0 for u in users], dtype=np.float64),
            candidate_sets=candidate_sets,
            unit_set=unit_set,
            unit_size=np.bincount(unit_of_free, minlength=len(unit_roots)),
            unit_value=per_unit(value),
            held=held,
            dims=dims,
            pair_cost=pair_cost,
            pair_allowed=pair_allowed,
            objectives=list(policy.objectives),
            **_limits(policy, time_limit, effort, started, len(accounts)),
            seed=policy.seed if seed is None else seed,
        )
        if incremental is not None:
            incremental.fair = _fair_shares(problem, rules, matches, root[status == Status.UNCHANGED], active, user_index)
        return Prepared(
            rules=rules,
            accounts=accounts,
            users=list(users),
            matches=matches,
            families=families,
            root=root,
            status=status,
            unit=unit,
            unit_set=unit_set,
            candidate_sets=candidate_sets,
            pair_territory=pair_territory,
            values=values,
            tier=tier,
            tier_names=tier_names,
            value_measure=value_measure,
            problem=problem,
            incremental=incremental,
        )

    def value_measure(self) -> str | None:
        """The measure that 'value moved' is counted in: the tier ranking's, else the first field measure."""
        if self.rules.model.tiers is not None:
            return self.rules.model.tiers.by
        return next((name for name, m in self.rules.measures.items() if m.field is not None), None)

    def check_members(self, users: Sequence[User], users_source: str) -> None:
        """Every member of every territory must be a user; report each at its rule-file line."""
        known = {u.id for u in users}
        findings = [
            Finding(m.location, f"user '{m.user}' is not in the {users_source}")
            for node in self.rules.territories.values()
            for m in node.members
            if m.user not in known
        ]
        if findings:
            raise RuleFileError(findings, self.rules.lines)


def _check_solver_options(seed: int | None, time_limit: float | None, effort: float | None) -> None:
    """The run's own seed, time limit and effort (the rule file's are checked when it loads)."""
    findings = []
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED):
        findings.append(Finding(Location("seed"), f"seed must be a whole number from 0 to {MAX_SEED}, got {seed!r}"))
    for name, seconds in (("time_limit", time_limit), ("effort", effort)):
        if seconds is not None and (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float))
            or not (math.isfinite(seconds) and 0 < seconds <= MAX_SECONDS)
        ):
            findings.append(
                Finding(Location(name), f"{name} must be a positive, finite number of seconds up to {MAX_SECONDS:,}, got {seconds!r}")
            )
    if findings:
        raise OptionError(findings)


def _limits(policy: Assignment, time_limit: float | None, effort: float | None, started: float, accounts: int) -> dict[str, float | None]:
    """The problem's effort and solving deadline: the run's, else the rule file's (optimize/clock.py)."""
    time_limit = policy.time_limit if time_limit is None else time_limit
    return {
        "effort": effort_in_force(policy.effort if effort is None else effort, time_limit),
        "deadline": None if time_limit is None else solving_deadline(started, time_limit, accounts),
    }


def _replan(
    rules: CompiledRules,
    accounts: AccountTable,
    matches: Matches,
    root: np.ndarray,
    status: np.ndarray,
    baseline: Baseline,
    users: Sequence[User],
) -> Incremental:
    """Which free accounts an incremental run replans, and why; every other free account keeps the plan's owner.

    Replanned, under the first reason that holds (:data:`REPLAN_WHY`): an account not in the plan (``new``);
    its fingerprint differs (``fields_changed``); its owner in the book is neither the plan's owner nor the
    owner the plan found (``owner_changed``: someone reassigned it since); the plan's owner is no longer an
    active owner member of the plan's territory (``owner_left``); the plan's territory is no longer its
    owning one, or one of the tied ones, under these rules (``territory_changed``); it had no owner in the
    plan and now has a candidate (``unassigned``); and every other account of a family (a unit) with one of
    these, or whose members the plan split, or which followed a locked parent there (``family``). Locked,
    excluded and pinned accounts are handled as in any run; an account still without a candidate stays a
    unit (unassigned with its reason) without counting as replanned.
    """
    n = len(accounts)
    ids = matches.territory_ids
    user_index = {u.id: k for k, u in enumerate(users)}
    free = status == Status.ASSIGNED
    t_index = {t: k for k, t in enumerate(ids)}
    plan_owner = np.array([user_index.get(o, -1) if o else -1 for o in baseline.owner], dtype=np.int64)
    plan_t = np.array([t_index.get(t, -1) if t else -1 for t in baseline.territory], dtype=np.int64)
    owned = plan_owner >= 0
    if baseline.why is not None:  # a saved incremental plan: its own record of what it replanned
        why = np.where(free, baseline.why, 0).astype(np.int8)
    else:
        # owner[t, u]: user u is an owner member of territory t; active[u]
        owner = np.zeros((len(ids), len(users)), dtype=bool)
        for t, tid in enumerate(ids):
            owner[t, [user_index[u] for u in rules.territories[tid].owners if u in user_index]] = True
        active = np.array([u.active for u in users], dtype=bool)
        staffed = (owner & active).any(axis=1)  # a territory with an active owner member
        in_plan = baseline.in_plan
        owning = matches.owning[root]
        in_territory = (owning == plan_t) & (plan_t >= 0)
        has_candidate = np.zeros(n, dtype=bool)
        has_candidate[owning >= 0] = staffed[owning[owning >= 0]]
        for i in np.flatnonzero(owning == TIED).tolist():
            tied = matches.ties[int(root[i])]
            in_territory[i] = int(plan_t[i]) in tied
            has_candidate[i] = bool(staffed[list(tied)].any())
        current = accounts.owner_ids
        reassigned = np.array([c != o and c != p for c, o, p in zip(current, baseline.owner, baseline.previous, strict=True)], dtype=bool)
        named = np.array([o is not None for o in baseline.owner], dtype=bool)  # the plan names an owner (a user or not)
        left = named & ~owned
        left[owned] = ~active[plan_owner[owned]]
        member = in_territory & owned
        member[member] = owner[plan_t[member], plan_owner[member]]
        tests = [
            ~in_plan,
            in_plan & (account_fingerprints(accounts, fingerprint_fields(rules)) != baseline.fingerprint),
            in_plan & reassigned,
            left | (named & in_territory & ~member),
            named & ~in_territory,
            in_plan & ~named & has_candidate,
        ]
        why = np.zeros(n, dtype=np.int8)
        for code, hit in enumerate(tests, start=1):
            why[(why == 0) & hit & free] = code
        # families move as one unit: a member replanned, members the plan split, or members pinned there
        was_free = np.array([s in (None, "assigned", "unchanged", "unassigned") for s in baseline.status], dtype=bool)
        touched = np.zeros(n, dtype=bool)
        touched[root[free & ((why > 0) | ~was_free)]] = True
        steady = free & (why == 0)
        low = np.full(n, np.iinfo(np.int64).max)
        high = np.full(n, -2, dtype=np.int64)
        np.minimum.at(low, root[steady], plan_owner[steady])
        np.maximum.at(high, root[steady], plan_owner[steady])
        touched |= (high >= -1) & (low != high)
        why[steady & touched[root]] = REPLAN_WHY.index("family")
    kept = free & (why == 0) & owned
    return Incremental(
        from_plan=baseline.plan_id,
        why=why,
        kept_owner=np.where(kept, plan_owner, -1),
        kept_territory=np.where(kept, plan_t, -1),
        removed=baseline.removed,
        fair={},
    )


def _fair_shares(
    problem: Problem, rules: CompiledRules, matches: Matches, kept_roots: np.ndarray, active: set[str], user_index: dict[str, int]
) -> dict[str, np.ndarray]:
    """Fair shares over the whole book's components, as a full run computes them (for the summary).

    The optimizer sees only the replanned units, so users who compete for none of them would each be a
    component of their own, their fair share their own load. Here users are joined by the candidates of
    kept units too, and each component's total (fixed load, kept load included, plus the replanned units'
    values) is shared by weight.
    """
    n_users = len(problem.user_ids)
    parent = np.arange(n_users)

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = int(parent[x])
        return x

    def join(users: Sequence[int]) -> None:
        for u in users[1:]:
            a, b = find(users[0]), find(u)
            if a != b:
                parent[max(a, b)] = min(a, b)

    nodes = [rules.territories[t] for t in matches.territory_ids]
    owning = np.unique(matches.owning[np.unique(kept_roots)]) if len(kept_roots) else np.empty(0, dtype=np.int64)
    groups: list[tuple[int, ...]] = list(problem.candidate_sets)
    groups += [tuple(user_index[u] for u in nodes[t].owners if u in active) for t in owning.tolist() if t >= 0]
    if TIED in owning:
        for r in np.unique(kept_roots[matches.owning[kept_roots] == TIED]).tolist():
            groups.append(tuple(user_index[u] for t in matches.ties[r] for u in nodes[t].owners if u in active))
    for users in groups:
        join(users)
    component = np.array([find(u) for u in range(n_users)], dtype=np.int64)
    set_component = np.array([component[c[0]] if c else -1 for c in problem.candidate_sets] or [-1], dtype=np.int64)
    unit_component = set_component[problem.unit_set] if problem.n_units else np.empty(0, dtype=np.int64)
    placed = unit_component >= 0
    weight_total = np.bincount(component, weights=problem.weight, minlength=n_users)
    fair = {}
    for d in problem.dims:
        if d.tolerance is None:
            continue
        unit_values = d.unit_values.astype(np.float64)
        if d.pair_values:  # a unit's expected value is the mean over its candidates, as the optimizer takes it
            sizes = np.array([len(c) for c in problem.candidate_sets] or [0])[problem.unit_set] if problem.n_units else np.zeros(0)
            unit_values = unit_values.copy()
            for (k, _u), v in d.pair_values.items():
                unit_values[k] += (v - d.unit_values[k]) / max(int(sizes[k]), 1)
        total = np.bincount(component, weights=d.fixed, minlength=n_users) + np.bincount(
            unit_component[placed], weights=unit_values[placed], minlength=n_users
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            fair[d.label] = np.where(
                weight_total[component] > 0,
                problem.weight * total[component] / np.where(weight_total[component] > 0, weight_total[component], 1),
                0.0,
            )
    return fair
