"""Opportunities: every deal gets a territory and an owner by rules, never an empty tie.

After accounts are planned, each open deal follows its account's new owner,
unless it is closed (never reassigned), locked, excluded, or protected by the
rule file's ``keep_owner`` (late stage, closing soon): those keep their owner.
Its territory is the account's highest-priority territory; a tie between
equal priorities is settled by the declared ``territory_tie`` policy and said
in the reason. Overlay territories are matched per deal (deal fields joined
with the account's) and give each matching deal one specialist per overlay
territory, chosen by the same optimizer that balances account owners.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, Finding, Location
from ..files.readers import file_names, named_as_in_file, read_mapped
from ..matching.match import Matches, match_accounts, rule_trace
from ..optimize import Holdings, LoadDim, Problem, Solution, solve
from ..optimize.clock import effort_in_force
from ..rules.compile import CompiledRules
from ..rules.inputs import DEAL_INPUT_COLUMNS
from ..tables.cells import EPOCH, NumericColumn, StringColumn, as_text, bound_findings, owner_index, shown
from ..tables.table import AccountTable
from .result import Plan, deviation, extreme, outside_band, solver_summary

NO_ACCOUNT = -1  # the account index of a deal without an account
DEAL_COLUMNS = [
    "opportunity_id",
    "account_id",
    "owner_id",
    "territory_id",
    "overlay_owner_ids",
    "previous_owner_id",
    "moved",
    "status",
    "reason",
]


@dataclass
class DealTable:
    """Opportunities: a typed table (deal fields) plus the index of each deal's account."""

    table: AccountTable
    account: np.ndarray  # index into the accounts table
    previous_overlay: list[tuple[str, ...]]  # overlay owners before the run (column overlay_owner_ids)

    def __len__(self) -> int:
        return len(self.table)


def deals_from_columns(
    columns: Mapping[str, Sequence[Any]],
    rules: CompiledRules,
    accounts: AccountTable,
    *,
    source: str = "<opportunities>",
    rows: Sequence[int] | None = None,
) -> DealTable:
    """Deals from raw columns; an unknown ``account_id`` or a deal measure out of bounds is an error at its row.

    An empty ``account_id`` is a deal without an account yet (an early prospect):
    its account index is :data:`NO_ACCOUNT` and it keeps its owner.

    An ``owner_id`` that is not a user is kept, as an account's is: closed
    deals of a rep who left are history, not a mistake (see :func:`assign_deals`).
    """
    n = len(columns.get("id", ()))
    columns = dict(columns)
    deals = rules.model.opportunities
    for builtin in (deals.stage_field, deals.close_date_field):
        columns.setdefault(builtin, [None] * n)
    table = AccountTable.from_columns(columns, rules.deal_field_types, source=source, rows=rows, noun="opportunity")
    if "account_id" not in columns:
        raise DataError([Finding(Location(source, 1), "missing required column 'account_id'")])
    account = np.empty(n, dtype=np.int64)
    findings = []
    loads = {m.deals: name for name, m in rules.measures.items() if m.deals} | {
        m.field: name for name, m in deals.measures.items() if m.field
    }
    for field_name, measure in loads.items():
        column = table.fields[field_name]
        assert isinstance(column, NumericColumn)
        findings += bound_findings(column.values, f"measure '{measure}'", partial(table.location, column=field_name))
    keys = ["" if raw is None else as_text(raw).strip() for raw in columns["account_id"]]
    account[:] = accounts.ids.positions(keys)  # -1: unknown, or NO_ACCOUNT where the key is empty
    findings += [
        Finding(table.location(i, "account_id"), f"unknown account {shown(columns['account_id'][i])}")
        for i in np.flatnonzero(account < 0).tolist()
        if keys[i]
    ]
    if findings:
        raise DataError(findings[:50])
    raw_overlay = columns.get("overlay_owner_ids", [None] * n)
    previous = [tuple(u for u in as_text(v).split(";") if u.strip()) if v else () for v in raw_overlay]
    return DealTable(table, account, [tuple(u.strip() for u in p) for p in previous])


def open_mask(rules: CompiledRules, deals: DealTable) -> np.ndarray:
    """Deals not in a closed stage (stage compared ignoring case)."""
    closed = {s.casefold() for s in rules.model.opportunities.closed_stages}
    stage = deals.table.fields[rules.model.opportunities.stage_field]
    assert isinstance(stage, StringColumn)
    return stage.gather(np.array([c.casefold() not in closed for c in stage.categories], dtype=bool), missing=True)


def deal_measures(rules: CompiledRules, accounts: AccountTable, deals: DealTable | None) -> dict[str, np.ndarray]:
    """Account measures that sum a deal field over the account's open deals (pipeline)."""
    out: dict[str, np.ndarray] = {}
    for name, m in rules.measures.items():
        if m.deals is None:
            continue
        if deals is None:
            out[name] = np.zeros(len(accounts))
            continue
        column = deals.table.fields[m.deals]
        assert isinstance(column, NumericColumn)
        counted = open_mask(rules, deals) & (deals.account >= 0)
        out[name] = np.bincount(deals.account[counted], weights=np.nan_to_num(column.values[counted]), minlength=len(accounts))
    return out


def joined(deals: DealTable, accounts: AccountTable) -> AccountTable:
    """Deals with their account's fields alongside their own, for overlay rules."""
    fields = dict(deals.table.fields)
    for name, column in accounts.fields.items():  # a sentinel row at the end, read by deals without an account (index -1)
        if isinstance(column, StringColumn):
            fields[name] = StringColumn(np.append(column.codes, -1)[deals.account], column.categories)
        else:
            fields[name] = NumericColumn(np.append(column.values, np.nan)[deals.account], column.kind)
    t = deals.table
    return AccountTable(
        t.ids, t.names, t.parent_ids, t.owner_ids, t.locked, t.excluded, fields, t.source, t.rows, t.headers, as_of=accounts.as_of
    )


class DealStatus:
    FOLLOWS = "follows_account"
    KEPT = "kept"  # keep_owner policy, or the account is unassigned
    NO_ACCOUNT = "no_account"  # no account yet: keeps its owner
    CLOSED = "closed"
    LOCKED = "locked"
    EXCLUDED = "excluded"


@dataclass
class DealPlan:
    rules: CompiledRules
    plan: Plan
    deals: DealTable
    owner_ids: list[str | None]
    territory: np.ndarray
    status: list[str]
    reasons: list[str]
    overlay_owners: list[list[str]]
    overlay_matches: Matches
    overlay_solution: Solution | None
    overlay_fair: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def moved(self) -> np.ndarray:
        return np.array([o != p for o, p in zip(self.owner_ids, self.deals.table.owner_ids, strict=True)], dtype=bool)

    def rows(self) -> Iterator[dict[str, Any]]:
        ids = self.overlay_matches.territory_ids
        moved = self.moved
        t = self.deals.table
        for i, deal_id in enumerate(t.ids):
            k = int(self.territory[i])
            yield {
                "opportunity_id": deal_id,
                "account_id": self.plan.accounts.ids[self.deals.account[i]] if self.deals.account[i] >= 0 else "",
                "owner_id": self.owner_ids[i] or "",
                "territory_id": ids[k] if k >= 0 else "",
                "overlay_owner_ids": self.overlay_owners[i],
                "previous_owner_id": t.owner_ids[i] or "",
                "moved": bool(moved[i]),
                "status": self.status[i],
                "reason": self.reasons[i],
            }

    def summary(self) -> dict[str, Any]:
        users = self.plan.users
        index = {u.id: k for k, u in enumerate(users)}
        amount = self.amount()
        is_open = open_mask(self.rules, self.deals)

        def pipeline(owners: Sequence[str | None]) -> np.ndarray:
            who = owner_index(owners, users)
            held = (who >= 0) & is_open
            return np.bincount(who[held], weights=amount[held], minlength=len(users))

        before, after = pipeline(self.deals.table.owner_ids), pipeline(self.owner_ids)
        moved = self.moved
        counts: dict[str, int] = {}
        for s in self.status:
            counts[s] = counts.get(s, 0) + 1
        strangers: dict[str, int] = {}  # owners after the run who are not users: deals kept by someone who left
        for o in self.owner_ids:
            if o is not None and o not in index:
                strangers[o] = strangers.get(o, 0) + 1
        overlay = []
        if self.overlay_solution is not None:
            for spec in self.rules.overlay_balance:
                fair = self.overlay_solution.fair[spec.label]
                load = self.overlay_loads()[spec.label]
                dev = deviation(load, fair)
                overlay.append(
                    {
                        "balance": spec.label,
                        "tolerance": spec.tolerance,
                        "max_deviation": extreme(dev, np.nanmax),
                        "min_deviation": extreme(dev, np.nanmin),
                        "users_outside_tolerance": [users[k].id for k in np.flatnonzero(outside_band(dev, spec.tolerance))],
                        "per_user": {users[k].id: {"load": float(load[k]), "fair_share": float(fair[k])} for k in np.flatnonzero(fair > 0)},
                    }
                )
        return {
            "opportunities": len(self.deals),
            "status_counts": counts,
            "owners_not_users": strangers,
            "moved": {"opportunities": int(moved.sum()), "amount": float(amount[moved].sum())},
            "pipeline": {
                u.id: {"before": float(before[k]), "after": float(after[k])} for k, u in enumerate(users) if before[k] or after[k]
            },
            "overlay_balance": overlay,
            "overlay_solver": solver_summary(self.overlay_solution) if self.overlay_solution else None,
        }

    def amount(self) -> np.ndarray:
        deals = self.rules.model.opportunities
        name = next((m.field for m in deals.measures.values() if m.field), None)
        if name is None:
            return np.zeros(len(self.deals))
        column = self.deals.table.fields[name]
        assert isinstance(column, NumericColumn)
        return np.nan_to_num(column.values)

    def overlay_loads(self) -> dict[str, np.ndarray]:
        users = self.plan.users
        index = {u.id: k for k, u in enumerate(users)}
        values = overlay_values(self.rules, self.deals)
        out = {}
        for spec in self.rules.overlay_balance:
            load = np.zeros(len(users))
            for i, owners in enumerate(self.overlay_owners):
                for o in owners:
                    if o in index:
                        load[index[o]] += values[spec.measure][i]
            out[spec.label] = load
        return out

    def explain(self, deal_id: str) -> list[str]:
        i = self.deals.table.position(deal_id)
        if i is None:
            raise KeyError(deal_id)
        row = next(r for k, r in enumerate(self.rows()) if k == i)
        one = joined(
            DealTable(
                AccountTable.from_records([self.deals.table.record(i)], self.rules.deal_field_types), self.deals.account[i : i + 1], []
            ),
            self.plan.accounts,
        )
        return explain_deal(self.rules, one, row)


def explain_deal(rules: CompiledRules, deal: AccountTable, row: dict[str, Any]) -> list[str]:
    """The explanation of one deal from its overlay-ready record (:func:`joined`, one row) and its plan ``row``;
    shared by a deal plan in memory and a saved one."""
    lines = [f"opportunity {row['opportunity_id']} of account {row['account_id']}", "", "overlay rules:"]
    lines += [f"  {line}" for line in rule_trace(rules, deal, 0, overlay=True)] or ["  (no overlay territories)"]
    lines += [
        "",
        f"status: {row['status']}",
        f"territory: {row['territory_id'] or 'none'}",
        f"owner: {row['owner_id'] or 'none'} (previously {row['previous_owner_id'] or 'none'}{', moved' if row['moved'] else ', kept'})",
        f"overlay specialists: {', '.join(row['overlay_owner_ids']) or 'none'}",
        f"reason: {row['reason']}",
    ]
    return lines


def overlay_values(rules: CompiledRules, deals: DealTable) -> dict[str, np.ndarray]:
    out = {}
    for name, m in rules.model.opportunities.measures.items():
        if m.field is None:
            out[name] = np.full(len(deals), float(m.constant or 0.0))
        else:
            column = deals.table.fields[m.field]
            assert isinstance(column, NumericColumn)
            out[name] = np.nan_to_num(column.values)
    return out


def assign_deals(
    plan: Plan,
    deals: DealTable,
    *,
    as_of: dt.date | None = None,
    workers: int = 1,
    progress: Callable[[str], None] | None = None,
) -> DealPlan:
    """Owner, territory and overlay specialists of every deal, given the account plan."""
    say = progress or (lambda _m: None)
    rules, accounts = plan.rules, plan.accounts
    policy = rules.model.opportunities
    n = len(deals)
    t = deals.table
    ids = plan.matches.territory_ids
    nodes = [rules.territories[x] for x in ids]
    is_open = open_mask(rules, deals)
    keep = np.zeros(n, dtype=bool)
    if rules.keep_owner is not None:
        keep |= rules.keep_owner.mask(joined(deals, accounts))
    protect_days = policy.keep_owner.closing_within_days if policy.keep_owner else None
    if protect_days is not None:
        today = rules.run_date(as_of)
        close = t.fields[policy.close_date_field]
        assert isinstance(close, NumericColumn)
        days = (today - EPOCH).days
        with np.errstate(invalid="ignore"):
            keep |= (close.values >= days) & (close.values <= days + protect_days)

    owner_ids: list[str | None] = list(t.owner_ids)
    territory = np.full(n, -1, dtype=np.int64)
    status: list[str] = [""] * n
    reasons: list[str] = [""] * n
    tie_policy = policy.territory_tie
    known = {u.id for u in plan.users}
    for i in range(n):
        a = int(deals.account[i])
        current = t.owner_ids[i]
        if a == NO_ACCOUNT:
            status[i] = DealStatus.EXCLUDED if t.excluded[i] else DealStatus.NO_ACCOUNT
            reasons[i] = f"{'excluded; ' if t.excluded[i] else ''}no account yet: keeps owner {current or '(none)'}"
            if current is not None and current not in known:
                reasons[i] += f"; owner {current} is not among the users"
            continue
        account_owner = plan.owner_ids[a]
        options = _top_territories(plan, a)
        if t.excluded[i]:
            status[i], reasons[i] = DealStatus.EXCLUDED, f"excluded: keeps owner {current or '(none)'}"
        elif not is_open[i]:
            stage = t.fields[policy.stage_field].value(i)
            status[i], reasons[i] = DealStatus.CLOSED, f"closed ({stage}): never reassigned"
        elif t.locked[i]:
            status[i], reasons[i] = DealStatus.LOCKED, f"locked: keeps owner {current or '(none)'}"
        elif keep[i]:
            status[i], reasons[i] = (
                DealStatus.KEPT,
                f"protected by keep_owner ({_protection(rules, t, i, protect_days)}): stays with {current or '(none)'}",
            )
        elif account_owner is None:
            status[i], reasons[i] = (
                DealStatus.KEPT,
                f"account {accounts.ids[a]} has no owner ({plan.reason(a)}): keeps owner {current or '(none)'}",
            )
        else:
            owner_ids[i] = account_owner
            status[i] = DealStatus.FOLLOWS
            reasons[i] = f"follows account {accounts.ids[a]} to {account_owner}"
        territory[i], why = _choose_territory(options, nodes, ids, owner_ids[i], current, int(plan.territory[a]), tie_policy)
        if why:
            reasons[i] += f"; {why}"
        if owner_ids[i] is not None and owner_ids[i] not in known:  # kept (a closed deal of a rep who left), as an account's owner is
            reasons[i] += f"; owner {owner_ids[i]} is not among the users"
    say(f"matching {n:,} opportunities to overlay territories")
    overlay_matches = match_accounts(rules, joined(deals, accounts), overlay=True)
    overlay_owners, solution = _assign_overlays(plan, deals, overlay_matches, is_open & ~t.locked & ~t.excluded, workers)
    for x, rows in enumerate(overlay_matches.members):
        team = overlay_matches.territory_ids[x]
        for i in rows.tolist():
            kept = "kept" if set(overlay_owners[i]) & set(deals.previous_overlay[i]) else "balanced"
            reasons[i] += f"; overlay {team} ({kept})"
    return DealPlan(rules, plan, deals, owner_ids, territory, status, reasons, overlay_owners, overlay_matches, solution)


def _protection(rules: CompiledRules, t: AccountTable, i: int, days: int | None) -> str:
    policy = rules.model.opportunities
    parts = [f"stage {t.fields[policy.stage_field].value(i)}"]
    close = t.fields[policy.close_date_field].value(i)
    if days is not None and isinstance(close, dt.date):
        parts.append(f"closes {close.isoformat()}")
    return ", ".join(parts)


def _top_territories(plan: Plan, account: int) -> list[int]:
    """The account's owning-type territories of the highest priority, file order."""
    options = plan.matches.territories_of(account)
    nodes = plan.rules.territories
    ids = plan.matches.territory_ids
    options = [x for x in options if not nodes[ids[x]].overlay]
    if not options:
        return []
    best = min(nodes[ids[x]].priority for x in options)
    return [x for x in options if nodes[ids[x]].priority == best]


def _choose_territory(
    options: list[int], nodes, ids: list[str], owner: str | None, current: str | None, account_territory: int, policy: str
) -> tuple[int, str]:
    if not options:
        return -1, "the account matched no territory"
    if len(options) == 1:
        return options[0], f"territory {ids[options[0]]} (highest-priority territory of the account)"
    names = ", ".join(ids[x] for x in options)
    holding = [x for x in options if owner in nodes[x].owners]
    if policy == "balance":
        chosen = account_territory if account_territory in options else (holding or options)[0]
        return chosen, f"tie between {names}: the account's balanced territory {ids[chosen]}"
    if policy == "prefer_current":
        current_holding = [x for x in options if current in nodes[x].owners]
        chosen = (current_holding or holding or options)[0]
        return (
            chosen,
            f"tie between {names}: {ids[chosen]}, where the current owner {current or '(none)'} is a member"
            if current_holding
            else f"tie between {names}: first in file order {ids[chosen]} (current owner in none)",
        )
    return options[0], f"tie between {names}: first in file order {ids[options[0]]}"


def _assign_overlays(
    plan: Plan, deals: DealTable, matches: Matches, movable: np.ndarray, workers: int
) -> tuple[list[list[str]], Solution | None]:
    """One specialist per (deal, matched overlay territory), balanced on the deal measures."""
    rules, users = plan.rules, plan.users
    n = len(deals)
    user_index = {u.id: k for k, u in enumerate(users)}
    active = {u.id for u in users if u.active}
    values = overlay_values(rules, deals)
    owners: list[list[str]] = [[] for _ in range(n)]
    slots: list[tuple[int, int]] = []  # (deal, overlay territory)
    fixed = {spec.label: np.zeros(len(users)) for spec in rules.overlay_balance}
    for x, rows in enumerate(matches.members):
        node = rules.territories[matches.territory_ids[x]]
        members = [m.user for m in node.members if m.user in active]
        for i in rows.tolist():
            previous = [u for u in deals.previous_overlay[i] if u in members]
            if movable[i] and members:
                slots.append((i, x))
            elif previous:  # closed, locked or excluded deals keep their specialist
                owners[i].append(previous[0])
                for spec in rules.overlay_balance:
                    fixed[spec.label][user_index[previous[0]]] += values[spec.measure][i]
    if not slots:
        return owners, None
    set_of: dict[int, int] = {}
    candidate_sets: list[tuple[int, ...]] = []
    unit_set = np.empty(len(slots), dtype=np.int64)
    holder = np.full(len(slots), -1, dtype=np.int64)
    amount = values[next(iter(values))] if values else np.zeros(n)
    slot_deal = np.array([i for i, _ in slots], dtype=np.int64)
    for k, (i, x) in enumerate(slots):
        if x not in set_of:
            node = rules.territories[matches.territory_ids[x]]
            set_of[x] = len(candidate_sets)
            candidate_sets.append(tuple(dict.fromkeys(user_index[m.user] for m in node.members if m.user in active)))
        unit_set[k] = set_of[x]
        held = [user_index[u] for u in deals.previous_overlay[i] if u in user_index and user_index[u] in candidate_sets[set_of[x]]]
        holder[k] = held[0] if held else -1
    dims = [
        LoadDim(spec.label, values[spec.measure][slot_deal], fixed[spec.label], tolerance=spec.tolerance) for spec in rules.overlay_balance
    ]
    problem = Problem(
        user_ids=[u.id for u in users],
        weight=np.array([u.weight if u.active else 0.0 for u in users]),
        candidate_sets=candidate_sets,
        unit_set=unit_set,
        unit_size=np.ones(len(slots), dtype=np.int64),
        unit_value=amount[slot_deal],
        held=Holdings.build(np.flatnonzero(holder >= 0), holder[holder >= 0], amount[slot_deal][holder >= 0], len(users)),
        dims=dims,
        effort=effort_in_force(rules.policy.effort, None),  # on effort alone, wall-clock limit or not: it runs after the accounts'
        seed=rules.policy.seed,
    )
    solution = solve(problem, workers)
    for k, (i, _) in enumerate(slots):
        u = int(solution.owner[k])
        if u >= 0:
            owners[i].append(users[u].id)
    return owners, solution


def read_deals(path: str | Path, rules: CompiledRules, accounts: AccountTable) -> DealTable:
    """Opportunities: ``id, account_id, owner_id, locked, excluded`` plus the declared opportunity fields."""
    columns = rules.inputs["opportunities"]
    data, rows, headers = read_mapped(path, {*DEAL_INPUT_COLUMNS, *rules.deal_field_types}, columns)
    with file_names(columns, headers):
        deals = deals_from_columns(data, rules, accounts, source=str(path), rows=rows)
    named_as_in_file(deals.table, columns, headers)
    return deals
