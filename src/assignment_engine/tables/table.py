"""The book as typed tables: accounts, users and pairs built from columns and records, every bad cell located.

The arrays they are held in, and how one cell is read, are :mod:`cells`.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from ..errors import DataError, Finding, Location, suggest
from .cells import (
    EPOCH,
    LIMIT,
    TEXT,
    TEXT_KINDS,
    CellError,
    Column,
    FieldType,
    NumericColumn,
    OptionalTexts,
    StringColumn,
    Texts,
    as_text,
    bound_findings,
    compact_number,
    encode_strings,
    label,
    parse_cell,
    shown,
)
from .geography import country_column, state_column

ROUTING_COLUMNS = ("max_new_per_day", "available", "away_until")  # users-file columns only routing reads
RECORD_KEYS = {"id": "string", "name": "string", "parent_id": "string", "owner_id": "string", "locked": "boolean", "excluded": "boolean"}


@dataclass
class AccountTable:
    """A book of accounts: identity, hierarchy, current owner, flags and typed fields."""

    ids: Texts
    names: Texts
    parent_ids: OptionalTexts
    owner_ids: OptionalTexts
    locked: np.ndarray
    excluded: np.ndarray
    fields: dict[str, Column]
    source: str = "<accounts>"
    rows: Sequence[int] | np.ndarray | None = None  # source row of each account, for messages
    headers: dict[str, str] = field(default_factory=dict)  # engine name → the file's column, for messages
    warnings: list[Finding] = field(default_factory=list)  # values read as missing or as text, once per value
    notes: dict[int, list[str]] = field(default_factory=dict)  # per row: what its reason must say about its data
    as_of: dt.date | None = None  # the run date relative conditions count from (the engine sets it)

    def __post_init__(self) -> None:  # a caller's lists held as arrays
        self.ids, self.names = Texts(self.ids), Texts(self.names)
        self.parent_ids, self.owner_ids = OptionalTexts(self.parent_ids), OptionalTexts(self.owner_ids)

    def __len__(self) -> int:
        return len(self.ids)

    def position(self, account_id: str) -> int | None:
        """The row of the account with this id, None when there is none."""
        return self.ids.position(account_id)

    def location(self, i: int, column: str | None = None) -> Location:
        row = self.rows[i] if self.rows is not None else i + 1
        return Location(self.source, int(row), column=self.headers.get(column, column) if column else None)

    def record(self, i: int) -> dict[str, Any]:
        """One account as a plain dict (for explanations and single-account calls)."""
        out: dict[str, Any] = {
            "id": self.ids[i],
            "name": self.names[i],
            "parent_id": self.parent_ids[i],
            "owner_id": self.owner_ids[i],
            "locked": bool(self.locked[i]),
            "excluded": bool(self.excluded[i]),
        }
        out.update({name: col.value(i) for name, col in self.fields.items()})
        return out

    @classmethod
    def from_columns(
        cls,
        columns: Mapping[str, Sequence[Any]],
        field_types: dict[str, FieldType],
        *,
        source: str = "<accounts>",
        rows: Sequence[int] | None = None,
        noun: str = "account",
    ) -> AccountTable:
        """Build from raw columns (as read from CSV/JSONL or given by a caller).

        ``id`` is required; every declared field must be present. All bad cells
        (up to 50) are reported together, each at its file:row:column; ``noun``
        names what a row is (opportunities are tables too).
        """
        return cls.from_chunks([(columns, rows)], field_types, source=source, noun=noun)

    @classmethod
    def from_chunks(
        cls,
        chunks: Iterable[tuple[Mapping[str, Sequence[Any]], Sequence[int] | None]],
        field_types: dict[str, FieldType],
        *,
        source: str = "<accounts>",
        noun: str = "account",
    ) -> AccountTable:
        """Build from raw columns read a chunk of rows at a time (see :meth:`from_columns`): the raw values of
        one chunk are converted to arrays before the next is read, so a book of ten million rows never holds
        ten million Python objects. ``rows`` are a chunk's source rows (default: numbered on from 2)."""
        builder = _Builder(field_types, source, noun)
        for columns, rows in chunks:
            builder.add(columns, rows)
        return builder.table()

    @classmethod
    def from_records(
        cls, records: Sequence[Mapping[str, Any]], field_types: dict[str, FieldType], *, source: str = "<accounts>"
    ) -> AccountTable:
        """Build from dicts, values converted as file cells are; row numbers are 1-based positions.

        Lenient like a file: an absent key is a missing value, other keys are
        ignored. Records from a caller go through :func:`check_records` first.
        """
        keys = {*RECORD_KEYS, *field_types}
        columns = {k: [r.get(k) for r in records] for k in keys if any(k in r for r in records)}
        columns.setdefault("id", [r.get("id") for r in records])
        for k in field_types:
            columns.setdefault(k, [None] * len(records))
        return cls.from_columns(columns, field_types, source=source, rows=range(1, len(records) + 1))


class _Builder:
    """One table's typed arrays, filled a chunk of raw columns at a time; checks that span chunks
    (repeated ids, countries and states) run once on the whole."""

    def __init__(self, field_types: dict[str, FieldType], source: str, noun: str) -> None:
        self.field_types, self.source, self.noun = field_types, source, noun
        self.parts: dict[str, list[np.ndarray]] = {
            k: [] for k in ("id", "name", "parent_id", "owner_id", "locked", "excluded", "rows", *field_types)
        }
        self.categories: dict[str, dict[str, int]] = {name: {} for name, kind in field_types.items() if kind in TEXT_KINDS}
        self.text_numbers: dict[str, tuple[int, int, Any]] = {}  # field → numbers read as text: count, first row, first value
        self.empty: list[Finding] = []  # empty ids: reported first, then repeated ids, then bad cells
        self.findings: list[Finding] = []
        self.n = 0

    def add(self, columns: Mapping[str, Sequence[Any]], rows: Sequence[int] | None) -> None:
        if "id" not in columns:
            raise DataError([Finding(Location(self.source, 1), "missing required column 'id'")])
        for name in self.field_types:
            if name not in columns:
                raise DataError([Finding(Location(self.source, 1), f"missing column '{name}', declared in the rule file's fields")])
        n = len(columns["id"])
        rows_ = np.asarray(rows if rows is not None else range(self.n + 2, self.n + n + 2), dtype=np.int64)
        findings = self.findings

        def where(i: int, column: str) -> Location:
            return Location(self.source, int(rows_[i]), column=column)

        def text(name: str) -> np.ndarray:
            col = columns.get(name)
            if col is None:
                return np.full(n, "", dtype=TEXT)
            return np.array(["" if v is None else (v if type(v) is str else as_text(v)).strip() for v in col], dtype=TEXT)

        def flag(name: str) -> np.ndarray:
            out = np.zeros(n, dtype=bool)
            for i, v in enumerate(columns.get(name, ())):
                try:
                    out[i] = parse_cell(v, "boolean") == 1.0
                except CellError as exc:
                    findings.append(Finding(where(i, name), str(exc)))
            return out

        ids = text("id")
        self.empty += [Finding(where(int(i), "id"), f"empty {self.noun} id") for i in np.flatnonzero(ids == "")[:50]]
        parts = self.parts
        parts["id"].append(ids)
        parts["rows"].append(rows_)
        for name in ("name", "parent_id", "owner_id"):
            parts[name].append(text(name))
        for name, kind in self.field_types.items():
            raw = columns[name]
            if kind in TEXT_KINDS:
                numbers: list[int] = []
                parts[name].append(encode_strings(raw, numbers, self.categories[name]).codes)
                if numbers:
                    count, first, value = self.text_numbers.get(name, (0, self.n + numbers[0], raw[numbers[0]]))
                    self.text_numbers[name] = (count + len(numbers), first, value)
                continue
            values = np.empty(n, dtype=np.float64)
            for i, v in enumerate(raw):
                try:
                    values[i] = parse_cell(v, kind)
                except CellError as exc:
                    values[i] = math.nan
                    findings.append(Finding(where(i, name), str(exc)))
                    if len(findings) >= 50:
                        break
            parts[name].append(values)
        parts["locked"].append(flag("locked"))
        parts["excluded"].append(flag("excluded"))
        self.n += n
        if len(self.empty) + len(findings) >= 50:
            self.table()  # raises them

    def table(self) -> AccountTable:
        whole = {
            k: np.concatenate(v) if v else np.empty(0, dtype=TEXT if k in ("id", "name", "parent_id", "owner_id") else np.float64)
            for k, v in self.parts.items()
        }
        rows = whole["rows"].astype(np.int64)

        def where(i: int, column: str) -> Location:
            return Location(self.source, int(rows[i]), column=column)

        ids = Texts(whole["id"])
        again, first = ids.repeats()
        repeated = [
            Finding(where(i, "id"), f"duplicate {self.noun} id {shown(ids[i])} (first at row {rows[j]})")
            for i, j in zip(again.tolist(), first.tolist(), strict=True)
            if ids[i]
        ]
        rank = {name: k for k, name in enumerate([*self.field_types, "locked", "excluded"])}
        cells = sorted(self.findings, key=lambda f: (f.location.line or 0, rank.get(f.location.column or "", 0)))  # by row, however chunked
        findings = [*self.empty, *repeated[:50], *cells]
        if findings:
            raise DataError(findings[:50])
        typed: dict[str, Column] = {}
        warnings: list[Finding] = []
        for name, kind in self.field_types.items():
            if kind in TEXT_KINDS:
                typed[name] = StringColumn(whole[name].astype(np.int32), list(self.categories[name]))
            else:
                typed[name] = NumericColumn(whole[name].astype(np.float64), kind)
            if name in self.text_numbers:
                count, at, value = self.text_numbers[name]
                warnings.append(
                    Finding(
                        where(at, name),
                        f"{count:,} number(s) in a text column, read as text (first: {shown(value)} as {as_text(value)!r}); "
                        "a spreadsheet may have dropped leading zeros: store the column as text",
                    )
                )
        notes: dict[int, list[str]] = {}
        _as_places(typed, self.field_types, where, warnings, notes)
        return AccountTable(
            ids=ids,
            names=Texts(whole["name"]),
            parent_ids=OptionalTexts(whole["parent_id"]),
            owner_ids=OptionalTexts(whole["owner_id"]),
            locked=whole["locked"].astype(bool),
            excluded=whole["excluded"].astype(bool),
            fields=typed,
            source=self.source,
            rows=rows,
            warnings=warnings,
            notes=notes,
        )


def _as_places(
    typed: dict[str, Column],
    field_types: Mapping[str, FieldType],
    where: Callable[[int, str], Location],
    warnings: list[Finding],
    notes: dict[int, list[str]],
) -> None:
    """Country and state fields as ISO codes (countries first: a state is read against its row's country)."""

    countries = [name for name, kind in field_types.items() if kind == "country"]
    for name in [*countries, *(n for n, kind in field_types.items() if kind == "state")]:
        column = typed[name]
        assert isinstance(column, StringColumn)
        if field_types[name] == "country":
            typed[name], unrecognised = country_column(column)
        else:
            country = typed[countries[0]] if countries else None
            typed[name], unrecognised = state_column(column, country if isinstance(country, StringColumn) else None)
        what = "country" if field_types[name] == "country" else "state or province"
        for u in unrecognised:
            first = int(u.rows[0])
            warnings.append(
                Finding(where(first, name), f"{shown(u.value)} is not a {what} we know{u.hint()}: read as missing ({len(u.rows):,} row(s))")
            )
            note = f"{name} {shown(u.value)} not recognised, read as missing"
            for i in u.rows.tolist():
                notes.setdefault(i, []).append(note)


_RECORD_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "country": (str,),
    "state": (str,),
    "integer": (int, float, str),
    "number": (int, float, str),
    "boolean": (bool, str),
    "date": (dt.date, str),
}
_EXACT = {kind: set(types) for kind, types in _RECORD_TYPES.items()}  # the common case, checked without isinstance
_EXPECTED = {
    "string": "text",
    "country": "a country name or code",
    "state": "a state name or code",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "date": "a date",
}


def check_records(records: Any, field_types: dict[str, FieldType], source: str) -> None:
    """Refuse a caller's records that would otherwise be read as something else, or match nothing.

    Every key must be a declared field or one of :data:`RECORD_KEYS` (a
    misspelt key would leave its field missing), every declared field must be
    there (None says a value is unknown), and a value must have its field's
    type. Text is parsed for a number, boolean or date field as a file cell is,
    exactly or not at all; the other way is refused: 5000 for a postal code
    may have been '05000'. Findings are at ``source:position:key``.
    """
    if isinstance(records, (str, bytes)) or not isinstance(records, Sequence):  # a generator would be used up here
        raise DataError([Finding(Location(source), f"expected a list of records, got {type(records).__name__}")])
    kinds: dict[Any, str] = {**RECORD_KEYS, **field_types}
    required = dict.fromkeys(["id", *field_types])  # ordered, for the messages
    findings: list[Finding] = []
    for row, record in enumerate(records, start=1):
        if not isinstance(record, Mapping):
            findings.append(Finding(Location(source, row), f"a record must be a mapping of keys to values, got {type(record).__name__}"))
            continue
        for key, v in record.items():
            kind = kinds.get(key)
            if kind is None:
                findings.append(
                    Finding(Location(source, row, column=label(key)), f"unknown key {shown(key)}{suggest(str(key), list(kinds))}")
                )
            elif (
                v is not None
                and type(v) not in _EXACT[kind]
                and (not isinstance(v, _RECORD_TYPES[kind]) or (isinstance(v, bool) and kind != "boolean"))
            ):
                hint = (
                    " (a number is not taken as text: 5000 may have been '05000')"
                    if kind in TEXT_KINDS and isinstance(v, (int, float)) and not isinstance(v, bool)
                    else ""
                )
                findings.append(
                    Finding(Location(source, row, column=key), f"{key} must be {_EXPECTED[kind]}, got {type(v).__name__} {shown(v)}{hint}")
                )
        if not record.keys() >= required.keys():
            findings += [
                Finding(Location(source, row, column=k), f"missing key '{k}' (pass None for an unknown value)")
                for k in required
                if k not in record
            ]
        if len(findings) >= 50:
            break
    if findings:
        raise DataError(findings[:50])


@dataclass(frozen=True)
class User:
    """A seller who can own accounts.

    ``weight`` scales the fair share (1 = full FTE, 0.5 = ramping); ``capacity``
    maps ``accounts`` or a measure name to a hard maximum load.
    """

    id: str
    name: str = ""
    weight: float = 1.0
    active: bool = True
    capacity: dict[str, float] = field(default_factory=dict)
    max_new_per_day: float | None = None  # routing: at most this many records a day
    available: bool = True  # routing: False takes nothing new (batch runs ignore it)
    away_until: dt.date | None = None  # routing: takes nothing new until after this day

    def __post_init__(self) -> None:
        """A library caller's user is held to a users file's bounds: a capacity of 1e308 would overflow the optimizer."""
        numbers = {"weight": self.weight, **{f"max_{key}": v for key, v in self.capacity.items()}}
        findings = [
            Finding(
                Location("<users>"), f"user {shown(self.id)}: {name} must be a number between 0 and {compact_number(LIMIT)}, got {shown(v)}"
            )
            for name, v in numbers.items()
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= LIMIT  # NaN fails the comparison too
        ]
        if findings:
            raise DataError(findings)


def users_from_columns(
    columns: Mapping[str, Sequence[Any]], measures: Sequence[str], *, source: str = "<users>", rows: Sequence[int] | None = None
) -> list[User]:
    """Users from raw columns: ``id`` (or ``user_id``), ``name``, ``weight``, ``active``, ``max_<measure>``,
    and for routing ``max_new_per_day``, ``available``, ``away_until``."""
    id_column = "id" if "id" in columns else "user_id"
    if id_column not in columns:
        raise DataError([Finding(Location(source, 1), "missing required column 'id'")])
    n = len(columns[id_column])
    rows_ = rows if rows is not None else range(2, n + 2)
    caps = {c.removeprefix("max_"): c for c in columns if c.startswith("max_") and c not in ROUTING_COLUMNS}
    findings: list[Finding] = []
    for measure, column in caps.items():
        if measure != "accounts" and measure not in measures:
            known = ["max_accounts", *(f"max_{m}" for m in measures)]
            findings.append(
                Finding(
                    Location(source, 1, column=label(column)), f"capacity column {shown(column)} names no measure{suggest(column, known)}"
                )
            )

    def at(i: int, column: str) -> Location:
        return Location(source, rows_[i], column=column)

    def cells(column: str, kind: FieldType) -> np.ndarray:
        values = np.full(n, np.nan)
        for i, v in enumerate(columns.get(column, ())):
            try:
                values[i] = parse_cell(v, kind)
            except CellError as exc:
                findings.append(Finding(at(i, column), str(exc)))
        return values

    weight = cells("weight", "number")
    active = cells("active", "boolean")
    per_day, available, away = cells("max_new_per_day", "number"), cells("available", "boolean"), cells("away_until", "date")
    findings += bound_findings(per_day, "max_new_per_day", lambda i: at(i, "max_new_per_day"))
    capacity = {measure: cells(column, "number") for measure, column in caps.items()}
    findings += bound_findings(weight, "weight", lambda i: at(i, "weight"))
    for measure, column in caps.items():
        findings += bound_findings(capacity[measure], column, partial(at, column=column))
    ids: dict[str, int] = {}  # user id → its row, the first when repeated
    for i in range(n):
        uid = as_text(columns[id_column][i]).strip() if columns[id_column][i] is not None else ""
        if not uid:
            findings.append(Finding(at(i, id_column), "empty user id"))
        elif uid in ids:
            findings.append(Finding(at(i, id_column), f"duplicate user id {shown(uid)}"))
        else:
            ids[uid] = i
    if findings:
        raise DataError(findings[:50])
    names = columns.get("name", [None] * n)
    return [
        User(
            uid,
            "" if names[i] is None else as_text(names[i]),
            1.0 if math.isnan(weight[i]) else float(weight[i]),
            bool(active[i] != 0.0),  # an empty cell (NaN) is active
            {measure: float(values[i]) for measure, values in capacity.items() if not math.isnan(values[i])},
            None if math.isnan(per_day[i]) else float(per_day[i]),
            bool(available[i] != 0.0),
            None if math.isnan(away[i]) else EPOCH + dt.timedelta(days=int(away[i])),
        )
        for uid, i in ids.items()
    ]


@dataclass
class PairTable:
    """Per account–user data: affinity ``cost`` (lower is better) and ``workload`` (NaN = not given)."""

    account: np.ndarray  # account index
    user: np.ndarray  # user index
    cost: np.ndarray
    workload: np.ndarray


def pairs_from_columns(
    columns: Mapping[str, Sequence[Any]],
    accounts: AccountTable,
    users: Sequence[User],
    *,
    source: str = "<pairs>",
    rows: Sequence[int] | None = None,
) -> PairTable:
    """Pairs from raw columns ``account_id, user_id[, cost][, workload]``; unknown ids are errors."""
    for required in ("account_id", "user_id"):
        if required not in columns:
            raise DataError([Finding(Location(source, 1), f"missing required column '{required}'")])
    n = len(columns["account_id"])
    rows_ = rows if rows is not None else range(2, n + 2)
    user_index = {u.id: k for k, u in enumerate(users)}
    account = np.empty(n, dtype=np.int64)
    user = np.empty(n, dtype=np.int64)
    numbers = {name: np.full(n, np.nan) for name in ("cost", "workload")}
    findings: list[Finding] = []
    seen: dict[tuple[int, int], int] = {}
    positions = accounts.ids.positions([as_text(v).strip() for v in columns["account_id"]]).tolist()
    for i in range(n):
        a = positions[i] if positions[i] >= 0 else None
        u = user_index.get(as_text(columns["user_id"][i]).strip())
        if a is None:
            findings.append(Finding(Location(source, rows_[i], column="account_id"), f"unknown account {shown(columns['account_id'][i])}"))
        if u is None:
            findings.append(Finding(Location(source, rows_[i], column="user_id"), f"unknown user {shown(columns['user_id'][i])}"))
        if a is not None and u is not None:
            if (a, u) in seen:
                findings.append(Finding(Location(source, rows_[i], column="user_id"), f"duplicate pair (first at row {rows_[seen[a, u]]})"))
            seen.setdefault((a, u), i)
        account[i], user[i] = a if a is not None else -1, u if u is not None else -1
        for name, values in numbers.items():
            if name in columns:
                try:
                    values[i] = parse_cell(columns[name][i], "number")
                except CellError as exc:
                    findings.append(Finding(Location(source, rows_[i], column=name), str(exc)))
        if len(findings) >= 50:
            break
    findings += bound_findings(numbers["cost"], "cost", lambda i: Location(source, rows_[i], column="cost"), signed=True)
    findings += bound_findings(numbers["workload"], "workload", lambda i: Location(source, rows_[i], column="workload"))
    if findings:
        raise DataError(findings[:50])
    return PairTable(account, user, np.nan_to_num(numbers["cost"]), numbers["workload"])
