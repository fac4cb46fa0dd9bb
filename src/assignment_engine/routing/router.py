"""Owners for records that arrive between batch runs, consistent with the balanced plan.

A :class:`Router` is built once from a plan (in memory, or a saved plan
directory, read without re-reading the book) and then answers one record in
well under a millisecond: the record is matched to territories on its plain
values (:mod:`matching.records`), and the owning territory's members are weighed by
the territory's policy (rule file ``routing:``):

- ``least_loaded`` (default): the member whose heaviest balance load, as a
  share of their fair share, is lowest once the record is added;
- ``round_robin``: turns weighted by the users' ``weight`` (the member with the
  fewest turns per unit of weight goes next).

A member takes nothing while ``available`` is false, until after
``away_until``, at ``max_new_per_day`` records that day, or when the record
would pass one of their capacities. When no member can, the territory's
``fallback`` (else the top-level one) takes it; else it stays unassigned, and
the reason says why each member could not. Loads, turns and daily counts
update as records are routed, in memory or in a shared SQLite state file.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import DataError, Finding, Location, RuleFileError
from ..files.manifest import Manifest
from ..files.readers import read_accounts, read_users
from ..files.rows import OwnerCheck, Shape, plan_rows, read_summary
from ..matching.match import rule_trace
from ..matching.records import RecordMatcher, Values, typed
from ..matching.segments import derive as derive_segments
from ..rules.compile import CompiledRules
from ..tables.cells import as_text, bound_problem
from ..tables.table import AccountTable, User, check_records
from .state import MemoryState

if TYPE_CHECKING:
    from .leads import AccountIndex


class State(Protocol):
    """Turns, daily counts and added loads (:mod:`routing.state`). ``transaction()`` is a context manager that holds the
    state for one thread and process until it ends, undoes its records if it fails, and nests (a savepoint inside an
    open one): the router reads and records each decision inside one."""

    def transaction(self) -> Any: ...
    def turns(self, territory: str, users: Sequence[str]) -> dict[str, int]: ...
    def daily(self, day: str, users: Sequence[str]) -> dict[str, int]: ...
    def added(self, users: Sequence[str]) -> dict[str, dict[str, float]]: ...
    def record(self, territory: str, user: str, day: str, loads: Mapping[str, float]) -> None: ...


@dataclass(frozen=True)
class Routed:
    """One routing decision: the owner, the territory and a one-line reason (the rule trace on request)."""

    account_id: str
    owner_id: str | None
    territory_id: str | None
    status: str  # routed | fallback | unassigned
    reason: str
    trace: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RoutedLead:
    """A lead's owner: its matching account's owner in the plan, else routed as a new account (``account`` is then None)."""

    lead_id: str
    account_id: str | None
    owner_id: str | None
    territory_id: str | None
    reason: str
    routed: Routed | None = None  # how the lead was routed when it matched no account


@dataclass(frozen=True)
class Book:
    """What lead matching needs of a plan's accounts: identity, name, website, owner and territory."""

    ids: Sequence[str]
    names: Sequence[str | None]
    websites: Sequence[str | None]
    owners: Sequence[str | None]
    territories: Sequence[str | None]


@dataclass
class Router:
    """Routes records against a plan's loads; see the module docstring.

    One router may serve several threads: each decision is one transaction of its state (both states hold a lock
    for it), the matcher keeps nothing between calls, and the lead book and index are built once, under a lock."""

    rules: CompiledRules
    users: list[User]
    loads: dict[str, dict[str, float]]  # user → load label → load in the plan
    fair: dict[str, dict[str, float]]  # user → balance label → fair share
    plan_id: str = ""
    as_of: dt.date | None = None
    state: State = field(default_factory=MemoryState)
    book: Callable[[], Book] | None = None  # the plan's accounts, read on the first lead

    def __post_init__(self) -> None:
        self.matcher = RecordMatcher(self.rules)
        self.by_id = {u.id: u for u in self.users}
        routing = self.rules.model.routing
        fallbacks = [routing.fallback, *(t.fallback for t in routing.territories.values())]
        unknown = sorted({f for f in fallbacks if f is not None and f not in self.by_id})
        if unknown:
            raise RuleFileError(
                [Finding(Location(self.rules.source), f"routing fallback '{u}' is not among the users") for u in unknown], self.rules.lines
            )
        self.run_date = self.rules.run_date(self.as_of)
        self._lazy = threading.RLock()  # the lead book and index are built by the first thread to ask
        self._accounts: Book | None = None
        self._book_index: dict[str, int] = {}
        self._index: AccountIndex | None = None
        self._owners = {
            tid: [u for u in node.owners if u in self.by_id and self.by_id[u].active] for tid, node in self.rules.territories.items()
        }

    # -- building ---------------------------------------------------------------------

    @classmethod
    def from_plan(cls, plan: Any, state: State | None = None) -> Router:
        """From a :class:`Plan` in memory: its users, their loads under the plan's owners, their fair shares."""
        loads_by_label = plan.loads(plan.owner_ids)
        users = plan.users
        loads = {u.id: {label: float(v[k]) for label, v in loads_by_label.items()} for k, u in enumerate(users)}
        fair = {u.id: {label: float(v[k]) for label, v in plan.solution.fair.items()} for k, u in enumerate(users)}

        def book() -> Book:
            accounts = plan.accounts
            websites = _websites(plan.rules, accounts)
            ids = plan.matches.territory_ids
            return Book(
                accounts.ids, accounts.names, websites, plan.owner_ids, [ids[t] if t >= 0 else None for t in plan.territory.tolist()]
            )

        return cls(plan.rules, list(users), loads, fair, "", plan.accounts.as_of, state or MemoryState(), book)

    @classmethod
    def from_directory(cls, directory: str | Path, state: State | None = None, manifest: Manifest | None = None) -> Router:
        """From a saved plan: its rule file and users file (verified unchanged) and the loads in ``summary.json``;
        the accounts are not read, so building costs the same for a thousand accounts or a million. The plan's
        accounts file (verified then) and rows, each owner checked (:class:`files.rows.OwnerCheck`), are read on
        the first lead. ``manifest``: the plan's, already verified for the rules and users (the plan's files are
        hashed once)."""
        manifest = manifest or Manifest.verified(directory, inputs=("rules", "users"))
        rules = manifest.rules(directory)
        users = read_users(manifest.path("users"), list(rules.measures), rules.inputs["users"])
        loads: dict[str, dict[str, float]] = {}
        fair: dict[str, dict[str, float]] = {}
        for entry in read_summary(directory)["users"]:
            loads[entry["user_id"]] = {label: float(e["after"]) for label, e in entry["loads"].items()}
            fair[entry["user_id"]] = {
                label: float(e["fair_share"]) for label, e in entry["loads"].items() if e.get("fair_share") is not None
            }

        def book() -> Book:
            accounts = read_accounts(
                manifest.unchanged(directory, "accounts", "; leads are matched against the plan's accounts"),
                rules.field_types,
                rules.inputs["accounts"],
            )
            websites = _websites(rules, accounts)
            owners = OwnerCheck(rules, users, manifest.path("users"))
            path = str(Path(directory) / "accounts.jsonl")
            rows = {}
            for line, row in enumerate(plan_rows(directory, shape=_BOOK), start=1):
                owners.account(Location(path, line), row)
                rows[row["account_id"]] = row
            owners.done()
            owner_of = [rows[a]["owner_id"] or None if a in rows else None for a in accounts.ids]
            return Book(
                accounts.ids,
                accounts.names,
                websites,
                owner_of,
                [rows[a]["territory_id"] or None if a in rows else None for a in accounts.ids],
            )

        return cls(rules, users, loads, fair, manifest.plan_id, manifest.as_of, state or MemoryState(), book)

    # -- routing ----------------------------------------------------------------------

    def route(self, record: Mapping[str, Any], *, trace: bool = False, today: dt.date | None = None) -> Routed:
        """Owner, territory and reason for one account (a mapping as :meth:`Engine.match` takes; errors at ``<record>:1:key``)."""
        check_records([record], self.rules.field_types, "<record>")
        account_id = _text(record["id"])
        if account_id is None:  # None is not the account "None"
            raise DataError([Finding(Location("<record>", 1, column="id"), "empty account id")])
        one = AccountTable.from_records([record], self.rules.field_types, source="<record>") if _needs_table(self.rules) else None
        values = typed(one.record(0) if one is not None else record, self.rules.field_types)
        notes = one.notes.get(0, []) if one is not None else []
        routed = self.route_values(account_id, values, today=today, notes=notes)
        if trace:
            table = one or AccountTable.from_records([record], self.rules.field_types, source="<record>")
            routed = replace(routed, trace=rule_trace(self.rules, derive_segments(self.rules, table, self.run_date), 0))
        return routed

    def route_lead(self, lead: Mapping[str, Any], *, today: dt.date | None = None) -> RoutedLead:
        """A lead (``id``, ``company``, ``email``, ``website`` and any declared account fields) to the owner of the plan's
        account it matches (by email or website domain, then company name; see :mod:`leads`), else routed as a new account."""
        lead_id = "" if lead.get("id") is None else str(lead["id"]).strip()
        if not lead_id:
            raise DataError([Finding(Location("<lead>", 1, column="id"), "a lead needs an id")])
        found = self.lead_index().match(
            company=_text(lead.get("company")), email=_text(lead.get("email")), website=_text(lead.get("website"))
        )
        if found is not None:
            book = self._book()
            k = self._book_index[found.account_id]
            owner, territory = book.owners[k], book.territories[k]
            plan = f" in plan {self.plan_id}" if self.plan_id else ""
            why = f"matches account {found.account_id} by {found.how}: " + (f"its owner{plan}" if owner else f"it has no owner{plan}")
            return RoutedLead(lead_id, found.account_id, owner, territory, why)
        values = typed({name: lead.get(name) for name in self.rules.field_types}, self.rules.field_types, "<lead>")
        routed = self.route_values(lead_id, values, today=today, source="<lead>")
        return RoutedLead(
            lead_id, None, routed.owner_id, routed.territory_id, f"no account matches; routed as a new account: {routed.reason}", routed
        )

    def _book(self) -> Book:
        with self._lazy:
            if self._accounts is None:
                if self.book is None:
                    raise DataError([Finding(Location("<lead>"), "this router has no plan accounts to match leads against")])
                accounts = self.book()
                self._book_index = {a: k for k, a in enumerate(accounts.ids)}
                self._accounts = accounts
            return self._accounts

    def lead_index(self) -> AccountIndex:
        """The plan's accounts indexed for matching leads, built by the first call (the plan's accounts are read then)."""
        with self._lazy:
            if self._index is None:
                from .leads import AccountIndex  # noqa: PLC0415  the leads extra, only when leads are routed

                book = self._book()
                self._index = AccountIndex(book.ids, book.names, book.websites)
            return self._index

    def route_values(
        self, account_id: str, values: Values, *, today: dt.date | None = None, notes: Sequence[str] = (), source: str = "<record>"
    ) -> Routed:
        """Route one record given as typed plain values (see :func:`matching.records.typed`); a measure value that
        :meth:`Engine.assign` would refuse is refused here too (errors at ``<record>:1:field``), before it can
        shift the loads every later record is weighed by."""
        self._check_measures(values, source)
        day = today or dt.date.today()
        self.matcher.segments(values, self.run_date)
        found = self.matcher.match(values, self.run_date)
        tail = "".join(f"; {n}" for n in notes) + "".join(f"; {s.name}: {values.get(s.name) or 'none'}" for s in self.rules.segments)
        routing = self.rules.model.routing
        with self.state.transaction():
            if not found.owning:
                fallback = routing.fallback
                if fallback is not None:
                    return self._give(
                        account_id, fallback, None, "fallback", f"matched no territory; fallback {fallback}{tail}", values, day
                    )
                return Routed(account_id, None, None, "unassigned", f"matched no territory{tail}")
            best: tuple[tuple[float, ...], str, str, str] | None = None  # (score, territory, user, how)
            refusals: list[str] = []
            for tid in found.owning:
                choice = self._choose(tid, values, day, refusals)
                if choice is not None and (best is None or choice[0] < best[0]):
                    best = (choice[0], tid, choice[1], choice[2])
            where = self._where(found.owning)
            if best is not None:
                _, tid, owner, how = best
                return self._give(account_id, owner, tid, "routed", f"{where}; {how}{tail}", values, day)
            tid = found.owning[0]
            override = routing.territories.get(tid)
            fallback = (override.fallback if override else None) or routing.fallback
            why = "; ".join(refusals) or "no active owner member"
            if fallback is not None:
                return self._give(
                    account_id, fallback, tid, "fallback", f"{where}; no member can take it ({why}); fallback {fallback}{tail}", values, day
                )
            return Routed(account_id, None, tid, "unassigned", f"{where}; no member can take it ({why}){tail}")

    def _where(self, owning: list[str]) -> str:
        nodes = self.rules.territories
        labels = [f"{tid} by {' & '.join(r.label for r in nodes[tid].applicable)}" for tid in owning]
        return f"matched {labels[0]}" if len(labels) == 1 else f"tie between {', '.join(labels)} (same type priority)"

    def _choose(self, tid: str, values: Values, day: dt.date, refusals: list[str]) -> tuple[tuple[float, ...], str, str] | None:
        """The member of ``tid`` the policy picks, as (score, user, how); None when no member can take the record."""
        members = self._owners[tid]
        if not members:
            return None
        override = self.rules.model.routing.territories.get(tid)
        policy = (override.policy if override else None) or self.rules.model.routing.policy
        adds = self._adds(values)
        added = self.state.added(members)
        daily = self.state.daily(day.isoformat(), members)
        eligible = []
        for u in members:
            why = self._cannot(self.by_id[u], adds, added.get(u, {}), daily[u], day)
            if why:
                refusals.append(f"{u} {why}")
            else:
                eligible.append(u)
        if not eligible:
            return None
        if policy == "round_robin":
            turns = self.state.turns(tid, eligible)
            key = {u: turns[u] / self.by_id[u].weight for u in eligible}
            owner = min(eligible, key=lambda u: key[u])  # min keeps file order on ties
            return (0.0,), owner, f"round robin among {', '.join(eligible)} (weighted): {owner}'s turn"
        scores = {u: self._share_after(u, adds, added.get(u, {})) for u in eligible}
        owner = min(eligible, key=lambda u: scores[u])
        share = scores[owner][1]
        shown = f"{share:.0%} of fair share" if math.isfinite(share) else "no fair share"
        return scores[owner], owner, f"least loaded of {', '.join(eligible)}: {owner} at {shown} after the addition"

    def _check_measures(self, values: Values, source: str) -> None:
        findings = [
            Finding(Location(source, 1, column=m.field), why)
            for name, m in self.rules.measures.items()
            if m.field is not None and (why := bound_problem(values.get(m.field), f"measure '{name}'")) is not None
        ]
        if findings:
            raise DataError(findings)

    def _adds(self, values: Values) -> dict[str, float]:
        """The record's contribution to every load label (measures and balance entries); tiers are not known for one record."""
        out: dict[str, float] = {}
        for name, m in self.rules.measures.items():
            if m.field is not None:
                x = values.get(m.field, math.nan)
                out[name] = 0.0 if x is None or math.isnan(x) else float(x)
            else:
                out[name] = float(m.constant or 0.0) if m.deals is None else 0.0
        out.setdefault("accounts", 1.0)
        for spec in self.rules.balance:
            if spec.segment is not None:
                out[spec.label] = out[spec.measure] if values.get(spec.segment[0]) == spec.segment[1] else 0.0
            elif spec.tier is not None:
                out[spec.label] = 0.0
        return out

    def _cannot(self, user: User, adds: dict[str, float], added: dict[str, float], today_count: int, day: dt.date) -> str | None:
        if not user.available:
            return "is not available"
        if user.away_until is not None and day <= user.away_until:
            return f"is away until {user.away_until.isoformat()}"
        if user.max_new_per_day is not None and today_count >= user.max_new_per_day:
            return f"is at its daily cap of {user.max_new_per_day:g}"
        for key, cap in user.capacity.items():
            if self.loads.get(user.id, {}).get(key, 0.0) + added.get(key, 0.0) + adds.get(key, 0.0) > cap:
                return f"would pass max_{key} {cap:g}"
        return None

    def _share_after(self, user: str, adds: dict[str, float], added: dict[str, float]) -> tuple[float, ...]:
        """Lower is less loaded: (the largest deviation from fair share after the addition, in units of its band's
        tolerance, over the balance entries the record adds to; that entry's share of fair share; the sum of shares).

        Entries the record cannot change (a value tier, another segment level) do not count against a member, and
        a deviation is measured against its own band: 104 % is at the edge of ±5 % but well inside ±10 %."""
        worst, shown, total = -math.inf, math.nan, 0.0
        for spec in self.rules.balance:
            fair = self.fair.get(user, {}).get(spec.label, 0.0)
            if fair <= 0:
                continue
            share = (self.loads.get(user, {}).get(spec.label, 0.0) + added.get(spec.label, 0.0) + adds.get(spec.label, 0.0)) / fair
            total += share
            deviation = (share - 1.0) / max(spec.tolerance, 1e-9)
            if adds.get(spec.label, 0.0) > 0 and deviation > worst:
                worst, shown = deviation, share
        if math.isnan(shown):
            return (math.inf, math.nan, math.inf) if total == 0.0 else (0.0, math.nan, total)
        return (worst, shown, total)

    def _give(self, account_id: str, owner: str, tid: str | None, status: str, reason: str, values: Values, day: dt.date) -> Routed:
        adds = self._adds(values)
        self.state.record(tid or "", owner, day.isoformat(), {k: v for k, v in adds.items() if v})
        return Routed(account_id, owner, tid, status, reason)


_BOOK = Shape(OwnerCheck.ACCOUNT_KEYS)  # what lead matching reads of the plan's rows, and what its owner check does


def _websites(rules: CompiledRules, accounts: AccountTable) -> list[Any]:
    """Each account's website (``routing.website_field``), for matching leads by domain; all None without the field."""
    field = rules.model.routing.website_field
    return [accounts.fields[field].value(i) for i in range(len(accounts))] if field else [None] * len(accounts)


def _text(v: Any) -> str | None:
    return None if v is None else (as_text(v).strip() or None)


def _needs_table(rules: CompiledRules) -> bool:
    """Country and state fields are resolved to codes by the table's reader; other records are read as they are."""
    return any(kind in ("country", "state") for kind in rules.field_types.values())
