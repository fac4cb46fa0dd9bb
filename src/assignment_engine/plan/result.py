"""The result of a run: per-account owner, territory and reason; the summary; explanations.

A plan is columnar (arrays and lists, one entry per input account) so a run over
a million accounts does not build a million objects; :meth:`Plan.rows` yields
plain dicts for writers and :meth:`Plan.account` a typed record for one account.
Reasons are assembled from pieces cached per territory and per candidate set.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import Finding, Location
from ..matching.families import Families
from ..matching.match import TIED, Matches, rule_trace
from ..matching.rank import balance_scope, balance_values
from ..matching.segments import derive as derive_segments
from ..matching.segments import segment_counts
from ..optimize import ComponentResult, Objective, Problem, Solution
from ..rules.compile import CompiledRules
from ..tables.cells import TEXT, OptionalTexts, StringColumn, owner_index
from ..tables.table import AccountTable, User


class Status(IntEnum):
    ASSIGNED = 0  # placed by rules and the optimizer
    LOCKED = 1  # flagged locked: keeps its owner
    EXCLUDED = 2  # flagged excluded: not touched by rules
    PINNED = 3  # follows a locked or excluded ultimate parent
    UNASSIGNED = 4  # no territory, no eligible owner, or no capacity
    UNCHANGED = 5  # an incremental run (assign --from-plan): unchanged since that plan, keeps its owner there


# plain ints and names for the loops over every account (an IntEnum's attribute costs a lookup each time)
_ASSIGNED, _LOCKED, _EXCLUDED, _PINNED, _UNASSIGNED, _UNCHANGED = (int(s) for s in Status)
_STATUS_NAMES = [s.name.lower() for s in sorted(Status)]
ROWS_AT_ONCE = 65_536  # plan rows made from one slice of Python values (Plan.rows)

# Why an incremental run replans an account, in the order they are tested (an account counts under the first
# that holds); 0 is not replanned. The names are the keys of the summary's ``incremental.why``.
REPLAN_WHY = ("", "new", "fields_changed", "owner_changed", "owner_left", "territory_changed", "unassigned", "family")
_WHY_TEXT = (
    "",
    "a new account",
    "its fields changed",
    "its owner was changed outside the plan",
    "its owner there is no longer an active owner of its territory",
    "its territory changed",
    "it was unassigned there",
    "its family was replanned",
)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)  # splitmix64's finaliser
_MISSING = np.uint64(0x9E3779B97F4A7C15)


def account_fingerprints(accounts: AccountTable, names: Sequence[str]) -> np.ndarray:
    """Per account, a 64-bit hash of what a plan is made from: ``parent_id``, ``locked``, ``excluded`` and the
    fields ``names`` (declared fields and segments), as the typed table holds them (so '5000' and '5000.0' in a
    number field are the same value; a text field's value is its stripped text, a country its ISO code).

    Stable across runs, processes and machines (blake2b of each distinct text, splitmix64 to combine); the
    id is left out (rows are matched by it) and so is the owner (an incremental run compares owners itself).
    Vectorised: a million accounts take a fraction of a second.
    """
    n = len(accounts)
    h = np.zeros(n, dtype=np.uint64)

    def add(label: str, column: np.ndarray) -> None:
        nonlocal h
        h = _mix(h ^ _mix(column ^ _text_hashes([label])[0]))

    index: dict[str, int] = {}
    codes = np.fromiter((-1 if p is None else index.setdefault(p, len(index)) for p in accounts.parent_ids), dtype=np.int64, count=n)
    add("parent_id", np.append(_text_hashes(list(index)), _MISSING)[codes])
    add("locked", accounts.locked.astype(np.uint64))
    add("excluded", accounts.excluded.astype(np.uint64))
    for name in sorted(names):
        column = accounts.fields[name]
        if isinstance(column, StringColumn):
            add(f"{name}:text", np.append(_text_hashes(column.categories), _MISSING)[column.codes])
        else:
            v = column.values + 0.0  # -0.0 as 0.0
            add(f"{name}:{column.kind}", np.where(np.isnan(v), _MISSING, v.view(np.uint64)))
    return h


def fingerprint_fields(rules: CompiledRules) -> list[str]:
    """The fields an account's fingerprint covers: every declared field and every segment."""
    return [*rules.field_types, *(s.name for s in rules.segments)]


def fingerprint_texts(fingerprints: np.ndarray) -> list[str]:
    """Fingerprints as 16 hex digits each (as plan rows hold them)."""
    digits = fingerprints.astype(">u8").tobytes().hex()
    return [digits[k : k + 16] for k in range(0, len(digits), 16)]


def _mix(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX2
    return x ^ (x >> np.uint64(31))


def _text_hashes(values: Sequence[str]) -> np.ndarray:
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(v.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little") for v in values),
        dtype=np.uint64,
        count=len(values),
    )


@dataclass
class Baseline:
    """A saved plan's decisions, aligned to the accounts of a new run (see :func:`saved.read_baseline`)."""

    plan_id: str
    in_plan: np.ndarray  # per account: its id is in the plan
    owner: list[str | None]  # per account: the plan's owner (None: not in the plan, or no owner there)
    previous: list[str | None]  # per account: the owner the plan found (its previous_owner_id)
    territory: list[str | None]  # per account: the plan's territory
    status: list[str | None]  # per account: the plan's status
    fingerprint: np.ndarray  # per account: the plan's fingerprint (uint64; 0 where not in the plan)
    removed: int  # accounts of the plan no longer in the book
    why: np.ndarray | None = None  # a saved incremental plan reloaded (Plan.load): the reasons it recorded, not detected again


@dataclass
class Incremental:
    """What an incremental run replanned and what it kept (see :meth:`Engine.prepare`'s ``baseline``)."""

    from_plan: str  # the plan id
    why: np.ndarray  # per account: index into REPLAN_WHY, 0 when not replanned
    kept_owner: np.ndarray  # per account: user index of a kept account's owner, -1 otherwise
    kept_territory: np.ndarray  # per account: territory index of a kept account, -1 otherwise
    removed: int
    fair: dict[str, np.ndarray]  # per balance label: fair shares over the whole book's components

    def summary(self, status: np.ndarray) -> dict[str, Any]:
        counts = np.bincount(self.why, minlength=len(REPLAN_WHY))
        return {
            "from_plan": self.from_plan,
            "replanned": int(counts[1:].sum()),
            "why": {name: int(c) for name, c in zip(REPLAN_WHY[1:], counts[1:].tolist(), strict=True)},
            "kept": int(np.count_nonzero(status == Status.UNCHANGED)),
            "removed": self.removed,
        }


@dataclass(frozen=True)
class AccountResult:
    account_id: str
    owner_id: str | None
    territory_id: str | None
    previous_owner_id: str | None
    moved: bool
    status: str
    rule: str
    reason: str
    territories: list[str]


@dataclass
class Prepared:
    """Everything computed before the optimizer runs (see :meth:`Engine.prepare`)."""

    rules: CompiledRules
    accounts: AccountTable
    users: list[User]
    matches: Matches
    families: Families
    root: np.ndarray  # per account: the account whose decision it follows (itself when independent)
    status: np.ndarray  # per account: Status before the optimizer
    unit: np.ndarray  # per account: unit index, -1 when not free
    unit_set: np.ndarray  # per unit: candidate set index
    candidate_sets: list[tuple[int, ...]]
    pair_territory: dict[tuple[int, int], int]  # (candidate set, user) → territory index
    values: dict[str, np.ndarray]
    tier: np.ndarray
    tier_names: list[str]
    value_measure: str | None
    problem: Problem
    incremental: Incremental | None = None  # an incremental run: what it replans and keeps


@dataclass
class Plan:
    rules: CompiledRules
    accounts: AccountTable
    users: list[User]
    matches: Matches
    families: Families
    root: np.ndarray
    status: np.ndarray
    owner_ids: OptionalTexts
    territory: np.ndarray  # territory index per account, -1 none
    reasons_owner: list[str]  # owner part of the reason, per account (shared strings)
    solution: Solution
    values: dict[str, np.ndarray]
    tier: np.ndarray
    tier_names: list[str]
    value_measure: str | None
    incremental: Incremental | None = None  # an incremental run (assign --from-plan): what it replanned and why
    _territory_text: dict[int, str] = field(default_factory=dict, repr=False)
    _rule_labels: dict[int, str] = field(default_factory=dict, repr=False)

    # -- construction -------------------------------------------------------------

    @classmethod
    def build(cls, prepared: Prepared, solution: Solution) -> Plan:
        rules, accounts, users, matches = prepared.rules, prepared.accounts, prepared.users, prepared.matches
        root, unit, unit_set, candidate_sets = prepared.root, prepared.unit, prepared.unit_set, prepared.candidate_sets
        pair_territory = prepared.pair_territory
        n = len(accounts)
        ids = matches.territory_ids
        nodes = [rules.territories[t] for t in ids]
        user_ids = [u.id for u in users]
        owner_ids = accounts.owner_ids.array.copy()  # '' for none, as OptionalTexts holds it
        territory = np.full(n, -1, dtype=np.int64)
        reasons: list[str] = [""] * n
        status = prepared.status.copy()
        balanced_on = ", ".join(spec.label for spec in rules.balance) or "account count"

        def rules_territory(i: int, owner: str | None) -> int:
            """The territory a kept owner holds account i in: the owning one containing the owner, else the first."""
            options = matches.owning_candidates(i)
            for t in options:
                if owner in nodes[t].owners:
                    return t
            return options[0] if options else -1

        incremental = prepared.incremental
        chosen_user = np.full(n, -2, dtype=np.int64)  # the user the optimizer chose (-1: none; -2: the owner stays as read)
        if incremental is not None:
            solution = replace(solution, fair={**solution.fair, **incremental.fair})  # the whole book's fair shares
            kept = np.flatnonzero(status == Status.UNCHANGED)
            territory[kept] = incremental.kept_territory[kept]
            chosen_user[kept] = incremental.kept_owner[kept]
            kept_text: dict[int, str] = {}
            for i, u in zip(kept.tolist(), incremental.kept_owner[kept].tolist(), strict=True):
                if u not in kept_text:
                    kept_text[u] = f"unchanged since plan {incremental.from_plan}: keeps owner {user_ids[u]}"
                reasons[i] = kept_text[u]
        owner_text: dict[tuple[int, int], str] = {}
        texts: dict[str, str] = {}
        set_or_none, chosen_or_none = np.append(unit_set, -1), np.append(solution.owner, -1)  # unit -1 (not free) reads the -1
        for begin in range(0, n, ROWS_AT_ONCE):  # a slice of Python values at a time
            part = slice(begin, min(n, begin + ROWS_AT_ONCE))
            units = unit[part]
            codes = prepared.status[part].tolist()  # as prepared: the loop changes only the account at hand (to unassigned)
            root_of = root[part].tolist()
            root_codes = prepared.status[root[part]].tolist()
            set_of = set_or_none[units].tolist()
            chosen_of = chosen_or_none[units].tolist()
            for j, st in enumerate(codes):
                i = begin + j
                if st == _UNCHANGED:
                    continue
                if st == _EXCLUDED:
                    reasons[i] = _shared(texts, f"excluded from territory rules; keeps owner {accounts.owner_ids[i] or '(none)'}")
                elif st == _LOCKED:
                    previous = accounts.owner_ids[i]
                    t = rules_territory(i, previous)
                    territory[i] = t
                    note = "" if t < 0 or previous in nodes[t].owners else f" (not an owner of {ids[t]})"
                    reasons[i] = _shared(texts, f"locked: keeps owner {previous or '(none)'}{note}")
                elif st == _PINNED:
                    r = root_of[j]
                    owner = accounts.owner_ids[r]
                    owner_ids[i] = owner or ""
                    territory[i] = -1 if root_codes[j] == _EXCLUDED else rules_territory(r, owner)
                    why = "excluded" if root_codes[j] == _EXCLUDED else "locked"
                    reasons[i] = _shared(texts, f"follows ultimate parent {accounts.ids[r]}, which is {why}, to owner {owner or '(none)'}")
                else:
                    s = set_of[j]
                    chosen = chosen_of[j]
                    r = root_of[j]
                    if not matches.owning_candidates(r):
                        status[i] = Status.UNASSIGNED
                        chosen_user[i] = -1
                        reasons[i] = (
                            "matched no territory"
                            if r == i
                            else _shared(texts, f"its ultimate parent {accounts.ids[r]} matched no territory")
                        )
                        continue
                    if not candidate_sets[s]:
                        status[i] = Status.UNASSIGNED
                        chosen_user[i] = -1
                        names = " and ".join(ids[t] for t in matches.owning_candidates(r))
                        reasons[i] = _shared(texts, f"{names} has no active owner member")
                        continue
                    if chosen < 0:
                        status[i] = Status.UNASSIGNED
                        chosen_user[i] = -1
                        reasons[i] = _shared(texts, f"no capacity left among {', '.join(user_ids[u] for u in candidate_sets[s])}")
                        continue
                    chosen_user[i] = chosen
                    territory[i] = pair_territory[(s, chosen)]
                    key = (s, chosen)
                    if key not in owner_text:
                        cands = candidate_sets[s]
                        owner_text[key] = (
                            f"sole owner {user_ids[chosen]}"
                            if len(cands) == 1
                            else f"balanced between {_names([user_ids[u] for u in cands])} on {balanced_on}"
                        )
                    reasons[i] = owner_text[key]
        placed = chosen_user >= 0
        owner_ids[placed] = np.array(user_ids, dtype=TEXT)[chosen_user[placed]]
        owner_ids[chosen_user == -1] = ""
        return cls(
            rules,
            accounts,
            users,
            matches,
            prepared.families,
            root,
            status,
            OptionalTexts(owner_ids),
            territory,
            reasons,
            solution,
            prepared.values,
            prepared.tier,
            prepared.tier_names,
            prepared.value_measure,
            incremental,
        )

    @classmethod
    def load(cls, directory: str | Path) -> Plan:
        """The plan saved in ``directory`` by ``assign --out``, rebuilt without solving (see :func:`saved.load_plan`)."""
        from ..saved import load_plan  # noqa: PLC0415  saved builds on plan: the declared upward import

        return load_plan(directory)

    # -- per account ---------------------------------------------------------------

    def territory_text(self, t: int) -> str:
        """'matched amer-west by rule 1 (state in CA, OR, WA, NV)' for a territory index."""
        if t not in self._territory_text:
            node = self.rules.territories[self.matches.territory_ids[t]]
            local = [f"{r.label} ({r.condition.describe()})" for r in node.rules]
            inherited = [f"{r.label} from {r.territory}" for r in node.applicable if r.territory != node.id]
            text = f"matched {node.id} by {' and '.join(local) if local else 'inherited rules'}"
            if inherited:
                text += f" with {', '.join(inherited)}"
            self._territory_text[t] = text
        return self._territory_text[t]

    def reason(self, i: int, lists: _Lists | None = None) -> str:
        """Why account ``i`` is where it is, in one line, then its segments and what was read as missing from its row."""
        lists = lists or self._lists(i, i + 1)
        extra = [f"{s.name}: {self.accounts.fields[s.name].value(i) or 'none'}" for s in self.rules.segments] if self.rules.segments else []
        if i in self.accounts.notes:
            extra += self.accounts.notes[i]
        if self.incremental is not None and (why := lists.why[i - lists.start]):  # type: ignore[index]
            extra.insert(0, f"replanned since plan {self.incremental.from_plan}: {_WHY_TEXT[why]}")
        return "; ".join([self._reason(i, lists), *extra]) if extra else self._reason(i, lists)

    def _reason(self, i: int, lists: _Lists) -> str:
        k = i - lists.start
        st = lists.status[k]
        t = lists.territory[k]
        if st == _EXCLUDED or st == _UNASSIGNED or t < 0:
            return self.reasons_owner[i]
        base = self._territory_text.get(t) or self.territory_text(t)
        follows = st == _ASSIGNED or st == _UNCHANGED  # a unit's members follow its ultimate parent
        r = lists.root[k]
        decided = r if follows else i
        if self.matches.owning[decided] == TIED and len(tied := self.matches.ties[decided]) > 1:
            base = f"tie between {_names([self.matches.territory_ids[t] for t in tied])} (same type priority) decided by balance; {base}"
        if follows and r != i:
            base = f"follows ultimate parent {self.accounts.ids[r]}, which {base}"
        return f"{base}; {self.reasons_owner[i]}"

    def _lists(self, start: int, stop: int) -> _Lists:
        """Accounts ``start`` to ``stop`` of the per-account arrays as Python lists, for loops over them: a slice
        at a time, so writing a plan never holds Python values for all its accounts."""
        part = slice(start, stop)
        return _Lists(
            start=start,
            status=self.status[part].tolist(),
            territory=self.territory[part].tolist(),
            root=self.root[part].tolist(),
            moved=self.moved[part].tolist(),
            value=self._value[part].astype(np.float64).tolist(),
            family_size=self._family_size[part].tolist(),
            fingerprint=fingerprint_texts(self.fingerprints[part]),
            why=self.incremental.why[part].tolist() if self.incremental is not None else None,
        )

    def rule_label(self, i: int) -> str:
        """The rules that placed the account in its territory, as ``territory:rule`` joined by ' & '."""
        t = int(self.territory[i])
        if t < 0:
            return ""
        if t not in self._rule_labels:
            self._rule_labels[t] = self.rules.territories[self.matches.territory_ids[t]].rule_label
        return self._rule_labels[t]

    @cached_property
    def moved(self) -> np.ndarray:
        return np.asarray(self.owner_ids.array != self.accounts.owner_ids.array, dtype=bool)

    def territories_of(self, i: int) -> list[str]:
        return [self.matches.territory_ids[t] for t in self.matches.territories_of(i)]

    def account(self, account_id: str) -> AccountResult:
        i = self.accounts.position(account_id)
        if i is None:
            raise KeyError(account_id)
        t = int(self.territory[i])
        return AccountResult(
            account_id=account_id,
            owner_id=self.owner_ids[i],
            territory_id=self.matches.territory_ids[t] if t >= 0 else None,
            previous_owner_id=self.accounts.owner_ids[i],
            moved=bool(self.moved[i]),
            status=Status(int(self.status[i])).name.lower(),
            rule=self.rule_label(i),
            reason=self.reason(i),
            territories=self.territories_of(i),
        )

    def rows(self) -> Iterator[dict[str, Any]]:
        """One plain dict per input account, in input order (for writers); see :meth:`row`."""
        n = len(self.accounts)
        for start in range(0, n, ROWS_AT_ONCE):
            lists = self._lists(start, min(n, start + ROWS_AT_ONCE))
            yield from (self.row(i, lists) for i in range(start, min(n, start + ROWS_AT_ONCE)))

    def row(self, i: int, lists: _Lists | None = None) -> dict[str, Any]:
        """Account ``i`` as written to a plan.

        Beyond the CSV columns, a row carries the account's ``value`` (in the
        value measure), the ``ultimate_parent_id`` whose decision it follows and
        its ``family_size``: what review and explanations read from a saved plan
        without re-running it; and the ``fingerprint`` of its inputs, which an
        incremental run (``assign --from-plan``) compares. A row of an incremental
        plan also says why it was ``replanned`` (a key of :data:`REPLAN_WHY`, ''
        when it was not).
        """
        lists = lists or self._lists(i, i + 1)
        k = i - lists.start
        t = lists.territory[k]
        r = lists.root[k]
        row = {
            "account_id": self.accounts.ids[i],
            "owner_id": self.owner_ids[i] or "",
            "territory_id": self.matches.territory_ids[t] if t >= 0 else "",
            "previous_owner_id": self.accounts.owner_ids[i] or "",
            "moved": lists.moved[k],
            "status": _STATUS_NAMES[lists.status[k]],
            "rule": self.rule_label(i),
            "reason": self.reason(i, lists),
            "value": lists.value[k],
            "ultimate_parent_id": self.accounts.ids[r] if r != i else "",
            "family_size": lists.family_size[k],
            "fingerprint": lists.fingerprint[k],
        }
        if lists.why is not None:
            row["replanned"] = REPLAN_WHY[lists.why[k]]
        return row

    @cached_property
    def _value(self) -> np.ndarray:
        return self.values[self.value_measure] if self.value_measure else np.ones(len(self.accounts))

    @cached_property
    def fingerprints(self) -> np.ndarray:
        """Per account, the fingerprint of its inputs (see :func:`account_fingerprints`)."""
        return account_fingerprints(self.accounts, fingerprint_fields(self.rules))

    @cached_property
    def _family_size(self) -> np.ndarray:
        return np.bincount(self.families.root, minlength=len(self.accounts))[self.families.root]

    def explain(self, account_id: str) -> list[str]:
        """Why this account is where it is: rules, territories, family, owner and loads."""
        i = self.accounts.position(account_id)
        if i is None:
            raise KeyError(account_id)
        one = derive_segments(self.rules, AccountTable.from_records([self.accounts.record(i)], self.rules.field_types), self.accounts.as_of)
        after = self.loads(self.owner_ids)
        index = {u.id: k for k, u in enumerate(self.users)}
        loads = {
            user: {spec.label: (float(after[spec.label][k]), float(self.solution.fair[spec.label][k])) for spec in self.rules.balance}
            for user, k in index.items()
        }
        return explain_account(self.rules, one, self.row(i), self.territories_of(i), loads)

    # -- summary --------------------------------------------------------------------

    def loads(self, owners: Sequence[str | None]) -> dict[str, np.ndarray]:
        """Per user, the load of every measure and balance requirement under ``owners``."""
        who = owner_index(owners, self.users)
        held = who >= 0
        out: dict[str, np.ndarray] = {}
        for name, v in self.values.items():
            out[name] = np.bincount(who[held], weights=v[held], minlength=len(self.users))
        for spec in self.rules.balance:
            v = balance_values(spec, self.values, balance_scope(spec, self.accounts, self.tier, self.tier_names))
            out[spec.label] = np.bincount(who[held], weights=v[held], minlength=len(self.users))
        return out

    def conflicts(self) -> list[Finding]:
        """Hard constraints that could not all hold, said with the accounts and users concerned.

        The run itself never fails on them (locks win, unplaceable accounts stay
        unassigned with their reason); ``assign --strict`` turns them into an
        :class:`InfeasibleError`.
        """
        findings: list[Finding] = []
        ids = self.matches.territory_ids
        nodes = self.rules.territories
        kept = np.isin(self.status, (Status.LOCKED, Status.EXCLUDED, Status.PINNED, Status.UNCHANGED))
        what = "locked, excluded, pinned and unchanged" if self.incremental is not None else "locked, excluded and pinned"
        fixed = self.loads([o if k else None for o, k in zip(self.owner_ids, kept, strict=True)])
        index = {u.id: k for k, u in enumerate(self.users)}
        held_count = np.bincount(
            [index[o] for o, k in zip(self.owner_ids, kept, strict=True) if k and o in index], minlength=len(self.users)
        )
        for k, user in enumerate(self.users):
            for key, cap in sorted(user.capacity.items()):
                load = held_count[k] if key == "accounts" and key not in self.values else fixed[key][k]
                if load > cap + 1e-9:
                    findings.append(
                        Finding(
                            Location("users"),
                            f"user {user.id}: {what} accounts already carry {load:,.0f} {key}, above max_{key} {cap:,.0f}",
                        )
                    )
        for i in np.flatnonzero(self.status == Status.LOCKED):
            t = int(self.territory[i])
            owner = self.owner_ids[i]
            if t >= 0 and owner not in nodes[ids[t]].owners:
                findings.append(
                    Finding(
                        self.accounts.location(int(i), "owner_id"),
                        f"account {self.accounts.ids[i]} is locked to {owner or '(no owner)'}, "
                        f"who is not an owner of its territory {ids[t]}",
                    )
                )
        by_reason: dict[str, list[int]] = {}
        for i in np.flatnonzero(self.status == Status.UNASSIGNED):
            reason = self.reasons_owner[i]
            if reason.startswith("no capacity left"):
                by_reason.setdefault(reason, []).append(int(i))
        for reason, rows in by_reason.items():
            names = ", ".join(self.accounts.ids[i] for i in rows[:5]) + (" …" if len(rows) > 5 else "")
            findings.append(
                Finding(self.accounts.location(rows[0], "id"), f"{len(rows)} account(s) could not be placed, {reason} ({names})")
            )
        return findings

    def summary(self) -> dict[str, Any]:
        before = self.loads(self.accounts.owner_ids)
        after = self.loads(self.owner_ids)
        counts = {s.name.lower(): int(np.count_nonzero(self.status == s)) for s in Status}
        moved = self.moved
        value = self.values[self.value_measure] if self.value_measure else np.ones(len(self.accounts))
        balance = []
        for spec in self.rules.balance:
            fair = self.solution.fair[spec.label]
            dev_before, dev_after = deviation(before[spec.label], fair), deviation(after[spec.label], fair)
            outside = [self.users[k].id for k in np.flatnonzero(outside_band(dev_after, spec.tolerance))]
            balance.append(
                {
                    "balance": spec.label,
                    "tolerance": spec.tolerance,
                    "max_deviation": extreme(dev_after, np.nanmax),
                    "min_deviation": extreme(dev_after, np.nanmin),
                    "max_deviation_before": extreme(dev_before, np.nanmax),
                    "min_deviation_before": extreme(dev_before, np.nanmin),
                    "users_outside_tolerance": outside,
                }
            )
        users = []
        for k, u in enumerate(self.users):
            loads = {}
            for name in after:
                entry: dict[str, Any] = {"before": float(before[name][k]), "after": float(after[name][k])}
                if name in self.solution.fair:
                    share = float(self.solution.fair[name][k])
                    entry["fair_share"] = share
                    entry["deviation"] = (entry["after"] - share) / share if share > 0 else None
                loads[name] = entry
            users.append({"user_id": u.id, "weight": u.weight, "active": u.active, "loads": loads})
        unassigned = [
            {"account_id": self.accounts.ids[i], "reason": self.reason(i)}
            for i in np.flatnonzero(self.status == Status.UNASSIGNED).tolist()
        ]
        solver = solver_summary(self.solution)
        out = {
            "accounts": len(self.accounts),
            "status_counts": counts,
            "moved": {
                "accounts": int(np.count_nonzero(moved)),
                "value": float(value[moved].sum()),
                "value_measure": self.value_measure or "accounts",
            },
            "balance": balance,
            "users": users,
            "unassigned": unassigned,
            "segments": segment_counts(self.rules, self.accounts),
            "warnings": [str(f) for f in (*self.rules.deprecations, *self.accounts.warnings)],
            "hierarchy_problems": [str(f) for f in self.families.problems],
            "conflicts": [str(f) for f in self.conflicts()],
            "solver": solver,
        }
        if self.incremental is not None:
            out["incremental"] = self.incremental.summary(self.status)
        return out


@dataclass(frozen=True)
class _Lists:
    """Per-account values from ``start`` on, as Python lists (see :meth:`Plan._lists`)."""

    start: int
    status: list[int]
    territory: list[int]
    root: list[int]
    moved: list[bool]
    value: list[float]
    family_size: list[int]
    fingerprint: list[str]
    why: list[int] | None


def solver_summary(solution: Solution) -> dict[str, Any]:
    """Objective values, proven bounds and gaps, over all components and per component.

    Components are numbered in the order of ``per_component`` (``id``); each says what it ``stopped_on``:
    ``optimal`` (every objective proven, or nothing to choose), ``effort`` (its deterministic budget, or the
    method's own stopping rules), ``time_limit`` (the wall clock) or ``size`` (too many account–user pairs for a
    model: its greedy start, status ``GREEDY``). ``stopped_on_time`` lists the wall-clock ones, whose plans another
    run may not repeat."""
    comps = solution.components
    totals: dict[str, dict[str, float]] = {}
    for c in comps:
        for o in c.objectives:
            if o.name == "continuity":
                continue  # reported as accounts moved and their bound below
            t = totals.setdefault(o.name, {"value": 0.0, "bound": 0.0, "greedy_start": 0.0})
            t["value"] += o.value
            t["bound"] += o.bound
            t["greedy_start"] += o.greedy
    for t in totals.values():
        t["gap"] = (
            (t["value"] - t["bound"]) / max(abs(t["value"]), 1e-9) if t["value"] > t["bound"] else 0.0
        )  # as Objective.gap: a value of 0 above a negative bound (negative costs)
    moves = sum(c.moves for c in comps)
    bound = sum(c.moves_bound for c in comps)
    statuses: dict[str, int] = {}
    for c in comps:
        statuses[c.status] = statuses.get(c.status, 0) + 1
    return {
        "components": len(comps),
        "status": statuses,
        "moves": moves,
        "moves_lower_bound": bound,
        "moves_gap": (moves - bound) / moves if moves > bound else 0.0,
        "objectives": totals,
        "seconds": sum(c.seconds for c in comps),
        "stopped_on_time": [k for k, c in enumerate(comps) if c.stopped_on == "time_limit"],
        "per_component": [
            {
                "id": k,
                "users": c.users,
                "units": c.units,
                "pairs": c.pairs,
                "status": c.status,
                "moves": c.moves,
                "moves_lower_bound": c.moves_bound,
                "objectives": {
                    o.name: {"status": o.status, "gap": o.gap, "value": o.value, "bound": o.bound, "greedy_start": o.greedy}
                    for o in c.objectives
                },
                "seconds": round(c.seconds, 3),
                "stopped_on": c.stopped_on,
            }
            for k, c in enumerate(comps)
        ],
    }


def results_of(solver: dict[str, Any]) -> list[ComponentResult]:
    """The component results a summary's ``solver`` section records (see :func:`solver_summary`)."""
    return [
        ComponentResult(
            c["users"],
            c["units"],
            c["pairs"],
            [Objective(name, o["value"], o["bound"], o["greedy_start"], o["status"]) for name, o in c["objectives"].items()],
            c["moves"],
            c["moves_lower_bound"],
            c["seconds"],
            c.get("stopped_on", "optimal" if c["status"] != "FEASIBLE" else "effort"),  # not recorded before time limits
        )
        for c in solver["per_component"]
    ]


def explain_account(
    rules: CompiledRules,
    record: AccountTable,
    row: dict[str, Any],
    territories: list[str],
    loads: dict[str, dict[str, tuple[float, float]]],
) -> list[str]:
    """The explanation of one account, from its input ``record`` (a one-row table), its plan ``row`` and the
    ``loads`` after the plan (user → balance label → (load, fair share)): shared by a plan in memory and a saved one."""
    lines = [f"account {row['account_id']} ({record.names[0] or 'no name'})", "", "rules:"]
    lines += [f"  {line}" for line in rule_trace(rules, record, 0)]
    lines += ["", f"territories: {', '.join(territories) or 'none'}"]
    policy = rules.policy.hierarchy
    if row["ultimate_parent_id"]:
        lines.append(f"family: ultimate parent {row['ultimate_parent_id']} ({row['family_size']} accounts; policy {policy})")
    elif row["family_size"] > 1:
        lines.append(f"family: ultimate parent of {row['family_size']} accounts (policy {policy})")
    lines += [
        f"status: {row['status']}",
        f"territory: {row['territory_id'] or 'none'}",
        f"owner: {row['owner_id'] or 'none'} (previously {row['previous_owner_id'] or 'none'}{', moved' if row['moved'] else ', kept'})",
        f"reason: {row['reason']}",
    ]
    if row["territory_id"] and rules.balance:
        lines.append("owner loads after the plan (share of fair share):")
        for user in rules.territories[row["territory_id"]].owners:
            parts = []
            for spec in rules.balance:
                load, fair = loads[user][spec.label]
                parts.append(f"{spec.label} {load / fair:.0%}" if fair > 0 else f"{spec.label} n/a")
            mark = "*" if user == row["owner_id"] else " "
            lines.append(f"  {mark} {user}: {', '.join(parts)}")
    return lines


def _shared(texts: dict[str, str], text: str) -> str:
    """``text`` as the one object ``texts`` holds for it: accounts with the same reason share one string."""
    return texts.setdefault(text, text)


def _names(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def deviation(load: np.ndarray, fair: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(fair > 0, (load - fair) / np.where(fair > 0, fair, 1), np.nan)


ROUNDING = 1e-9  # a deviation this close past its tolerance is inside the band: sums of floats are not exact


def outside_band(dev: Any, tolerance: float) -> Any:
    """Whether a deviation from fair share (a number or an array; NaN, no fair share, is inside) is outside ±``tolerance``."""
    return np.abs(np.nan_to_num(dev)) > tolerance + ROUNDING


def extreme(dev: np.ndarray, fn) -> float | None:
    return None if np.all(np.isnan(dev)) else float(fn(dev))
