"""Column-oriented, typed account data: the core's in-memory form of a book.

Strings are dictionary-encoded (integer codes into a list of distinct values), so
a rule on a string field is evaluated once per distinct value and then gathered
for every row: matching a million accounts costs a few array operations per
condition. Every other type (integer, number, boolean, date) is a float64 array
with NaN for a missing value; dates are days since 1970-01-01.
"""

from __future__ import annotations

import datetime as dt
import math
import reprlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import Any, Literal

import numpy as np

from .errors import DataError, Finding, Location, suggest

FieldType = Literal["string", "integer", "number", "boolean", "date", "country", "state"]
TEXT_KINDS = ("string", "country", "state")  # dictionary-encoded; country and state stored as ISO codes
EPOCH = dt.date(1970, 1, 1)
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}
# The largest magnitude of a load, capacity, cost or workload (docs/rules.md, Data files): above any
# account's revenue in dollars, euros or yen, still a whole number in float64 (exact to 2^53 ≈ 9e15),
# and thousands of them sum within the optimizer's 64-bit integers (1e300 ended in INT_MIN errors).
LIMIT = 1e15
ROUTING_COLUMNS = ("max_new_per_day", "available", "away_until")  # users-file columns only routing reads
RECORD_KEYS = {"id": "string", "name": "string", "parent_id": "string", "owner_id": "string", "locked": "boolean", "excluded": "boolean"}
_quote = reprlib.Repr()
_quote.maxstring = _quote.maxother = 40  # a cell quoted in a message stays on one short line


@dataclass
class StringColumn:
    """Codes into ``categories``; code -1 is a missing value."""

    codes: np.ndarray
    categories: list[str]

    @cached_property
    def array(self) -> np.ndarray:
        """The categories as a numpy string array, for vectorised comparisons (computed once)."""
        return np.array(self.categories, dtype=str) if self.categories else np.empty(0, dtype=str)

    @cached_property
    def folded(self) -> np.ndarray:
        """The categories case-folded, for case-insensitive equality (computed once)."""
        return np.array([c.casefold() for c in self.categories], dtype=str) if self.categories else np.empty(0, dtype=str)

    @cached_property
    def folded_index(self) -> dict[str, np.ndarray]:
        """Case-folded value → the codes that fold to it (computed once): equality without a pass over values."""
        order = np.argsort(self.folded, kind="stable")
        keys, starts = np.unique(self.folded[order], return_index=True)
        return dict(zip(keys.tolist(), np.split(order, starts[1:])))

    @cached_property
    def sorted_codes(self) -> tuple[np.ndarray, np.ndarray]:
        """The codes in the order of their values, and the values so sorted (computed once): ranges by bisection."""
        order = np.argsort(self.array, kind="stable")
        return order, self.array[order]

    def value(self, row: int) -> str | None:
        code = int(self.codes[row])
        return None if code < 0 else self.categories[code]

    def gather(self, per_category: np.ndarray, missing: bool, rows: np.ndarray | None = None) -> np.ndarray:
        """Broadcast a per-category boolean result to every row, or to ``rows`` (missing values get ``missing``)."""
        lookup = np.append(per_category.astype(bool), missing)
        return lookup[self.codes if rows is None else self.codes[rows]]


@dataclass(slots=True)
class NumericColumn:
    """float64 values, NaN when missing; ``kind`` says how to read them back."""

    values: np.ndarray
    kind: FieldType

    def value(self, row: int) -> Any:
        v = float(self.values[row])
        if math.isnan(v):
            return None
        if self.kind == "integer":
            return int(v)
        if self.kind == "boolean":
            return bool(v)
        if self.kind == "date":
            return EPOCH + dt.timedelta(days=int(v))
        return v


Column = StringColumn | NumericColumn


class CellError(ValueError):
    """A cell that cannot be read as its declared type."""


def encode_strings(raw: Sequence[Any], numbers: list[int] | None = None) -> StringColumn:
    """Dictionary-encode a text column; the rows holding a number (not text) are appended to ``numbers`` when given."""
    index: dict[str, int] = {}
    codes = np.empty(len(raw), dtype=np.int32)
    for i, v in enumerate(raw):
        if v is None:
            codes[i] = -1
            continue
        if type(v) is not str:
            if numbers is not None and isinstance(v, (int, float)) and not isinstance(v, bool):
                numbers.append(i)
            v = as_text(v)
        s = v.strip()
        codes[i] = -1 if s == "" else index.setdefault(s, len(index))
    return StringColumn(codes, list(index))


def as_text(v: Any) -> str:
    """A cell as text: booleans as true/false, whole floats without '.0' (JSON numbers for codes)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _scalar_text(v: Any) -> str:
    """A text, number or boolean cell as stripped text; anything else (a list, a dict) as '' (never its repr)."""
    return as_text(v).strip() if isinstance(v, (str, int, float)) else ""


def shown(v: Any) -> str:
    """A value as quoted in a message: repr, cut short (a hostile cell may be megabytes long or deeply nested)."""
    return _quote.repr(v)


def label(name: Any) -> str:
    """A column or key as a location names it: itself when short and printable, else as :func:`shown` quotes it."""
    return name if isinstance(name, str) and name.isprintable() and len(name) <= 40 else shown(name)


def parse_cell(v: Any, kind: FieldType) -> float:
    """One non-string cell as float (NaN when empty); raises :class:`CellError`.

    Numbers are plain decimals: Python's float() also takes ``1_000``, which a
    CRM export means as something else (or nothing), so underscores are refused.
    """
    if v is None or (isinstance(v, str) and v.strip() == ""):
        return math.nan
    if kind == "boolean":
        if isinstance(v, bool):
            return float(v)
        text = _scalar_text(v).lower()
        if text in _TRUE:
            return 1.0
        if text in _FALSE:
            return 0.0
        raise CellError(f"{shown(v)} is not a boolean (use true/false)")
    if kind == "date":
        if isinstance(v, dt.date):  # a datetime too: its day
            return float(v.toordinal() - EPOCH.toordinal())
        try:
            return float((dt.date.fromisoformat(_scalar_text(v)[:10]) - EPOCH).days)
        except ValueError:
            raise CellError(f"{shown(v)} is not a date (use YYYY-MM-DD)") from None
    if isinstance(v, bool) or (isinstance(v, str) and "_" in v):
        raise CellError(f"{shown(v)} is not a {kind}")
    try:
        x = float(v.strip() if isinstance(v, str) else v)
    except (ValueError, TypeError, OverflowError):  # OverflowError: a JSON integer of hundreds of digits
        raise CellError(f"{shown(v)} is not a {kind}") from None
    if not math.isfinite(x):
        raise CellError(f"{shown(v)} is not a finite {kind}")
    if kind == "integer" and not x.is_integer():
        raise CellError(f"{shown(v)} is not an integer")
    return x


def bound_findings(values: np.ndarray, what: str, at: Callable[[int], Location], *, signed: bool = False) -> list[Finding]:
    """The values that cannot be a load, capacity, cost or workload, each at its cell (NaN is missing, not bad).

    Past ±:data:`LIMIT` sums of loads overflow or lose precision in the
    optimizer; below zero (unless ``signed``) a workload or capacity means nothing.
    """
    low = -LIMIT if signed else 0.0
    bad = np.flatnonzero((values < low) | (values > LIMIT))
    return [Finding(at(int(i)), f"{what} must be between {_g(low)} and {_g(LIMIT)}, got {_g(values[i])}") for i in bad[:50]]


def _g(x: float) -> str:
    """1e15, not 1e+15."""
    return f"{float(x):g}".replace("e+", "e")


@dataclass
class AccountTable:
    """A book of accounts: identity, hierarchy, current owner, flags and typed fields."""

    ids: list[str]
    names: list[str]
    parent_ids: list[str | None]
    owner_ids: list[str | None]
    locked: np.ndarray
    excluded: np.ndarray
    fields: dict[str, Column]
    source: str = "<accounts>"
    rows: Sequence[int] | None = None  # source row of each account, for messages
    headers: dict[str, str] = field(default_factory=dict)  # engine name → the file's column, for messages
    warnings: list[Finding] = field(default_factory=list)  # values read as missing or as text, once per value
    notes: dict[int, list[str]] = field(default_factory=dict)  # per row: what its reason must say about its data
    as_of: dt.date | None = None  # the run date relative conditions count from (the engine sets it)
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.index = {aid: i for i, aid in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def location(self, i: int, column: str | None = None) -> Location:
        row = self.rows[i] if self.rows is not None else i + 1
        return Location(self.source, row, column=self.headers.get(column, column) if column else None)

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
        locate: Callable[[int, str], Location] | None = None,
        noun: str = "account",
    ) -> AccountTable:
        """Build from raw columns (as read from CSV/JSONL or given by a caller).

        ``id`` is required; every declared field must be present. All bad cells
        (up to 50) are reported together, each at its file:row:column; ``noun``
        names what a row is (opportunities are tables too).
        """
        n = len(columns.get("id", ()))
        rows_ = rows if rows is not None else range(2, n + 2)

        def where(i: int, column: str) -> Location:
            return locate(i, column) if locate else Location(source, rows_[i], column=column)

        findings: list[Finding] = []
        if "id" not in columns:
            raise DataError([Finding(Location(source, 1), "missing required column 'id'")])
        ids: list[str] = []
        for i, v in enumerate(columns["id"]):
            s = "" if v is None else as_text(v).strip()
            if not s:
                findings.append(Finding(where(i, "id"), f"empty {noun} id"))
            ids.append(s)
        seen: dict[str, int] = {}
        for i, aid in enumerate(ids):
            if aid and aid in seen:
                findings.append(Finding(where(i, "id"), f"duplicate {noun} id {shown(aid)} (first at row {rows_[seen[aid]]})"))
            seen.setdefault(aid, i)

        def optional_text(name: str) -> list[str | None]:
            col = columns.get(name)
            if col is None:
                return [None] * n
            out: list[str | None] = []
            for v in col:
                s = None if v is None else as_text(v).strip()
                out.append(s or None)
            return out

        def flag(name: str) -> np.ndarray:
            col = columns.get(name)
            if col is None:
                return np.zeros(n, dtype=bool)
            out = np.zeros(n, dtype=bool)
            for i, v in enumerate(col):
                try:
                    x = parse_cell(v, "boolean")
                except CellError as exc:
                    findings.append(Finding(where(i, name), str(exc)))
                    continue
                out[i] = x == 1.0
            return out

        typed: dict[str, Column] = {}
        warnings: list[Finding] = []
        notes: dict[int, list[str]] = {}
        for name, kind in field_types.items():
            raw = columns.get(name)
            if raw is None:
                raise DataError([Finding(Location(source, 1), f"missing column '{name}', declared in the rule file's fields")])
            if kind in TEXT_KINDS:
                numbers: list[int] = []
                typed[name] = encode_strings(raw, numbers)
                if numbers:
                    first = numbers[0]
                    warnings.append(
                        Finding(
                            where(first, name),
                            f"{len(numbers):,} number(s) in a text column, read as text (first: {shown(raw[first])} as {as_text(raw[first])!r}); "
                            "a spreadsheet may have dropped leading zeros: store the column as text",
                        )
                    )
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
            typed[name] = NumericColumn(values, kind)
        locked, excluded = flag("locked"), flag("excluded")
        if findings:
            raise DataError(findings[:50])
        _as_places(typed, field_types, where, warnings, notes)
        names = [s or "" for s in optional_text("name")]
        return cls(
            ids=ids,
            names=names,
            parent_ids=optional_text("parent_id"),
            owner_ids=optional_text("owner_id"),
            locked=locked,
            excluded=excluded,
            fields=typed,
            source=source,
            rows=rows_,
            warnings=warnings,
            notes=notes,
        )

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]], field_types: dict[str, FieldType], *, source: str = "<accounts>") -> AccountTable:
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


def _as_places(typed: dict[str, Column], field_types: Mapping[str, FieldType], where: Callable[[int, str], Location], warnings: list[Finding], notes: dict[int, list[str]]) -> None:
    """Country and state fields as ISO codes (countries first: a state is read against its row's country)."""
    from .geography import country_column, state_column

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
            warnings.append(Finding(where(first, name), f"{shown(u.value)} is not a {what} we know{u.hint()}: read as missing ({len(u.rows):,} row(s))"))
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
_EXPECTED = {"string": "text", "country": "a country name or code", "state": "a state name or code", "integer": "a whole number", "number": "a number", "boolean": "true or false", "date": "a date"}


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
                findings.append(Finding(Location(source, row, column=label(key)), f"unknown key {shown(key)}{suggest(str(key), list(kinds))}"))
            elif v is not None and type(v) not in _EXACT[kind] and (not isinstance(v, _RECORD_TYPES[kind]) or (isinstance(v, bool) and kind != "boolean")):
                hint = " (a number is not taken as text: 5000 may have been '05000')" if kind in TEXT_KINDS and isinstance(v, (int, float)) and not isinstance(v, bool) else ""
                findings.append(Finding(Location(source, row, column=key), f"{key} must be {_EXPECTED[kind]}, got {type(v).__name__} {shown(v)}{hint}"))
        if not record.keys() >= required.keys():
            findings += [Finding(Location(source, row, column=k), f"missing key '{k}' (pass None for an unknown value)") for k in required if k not in record]
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
            Finding(Location("<users>"), f"user {shown(self.id)}: {name} must be a number between 0 and {_g(LIMIT)}, got {shown(v)}")
            for name, v in numbers.items()
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= LIMIT  # NaN fails the comparison too
        ]
        if findings:
            raise DataError(findings)


def users_from_columns(columns: Mapping[str, Sequence[Any]], measures: Sequence[str], *, source: str = "<users>", rows: Sequence[int] | None = None) -> list[User]:
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
            findings.append(Finding(Location(source, 1, column=label(column)), f"capacity column {shown(column)} names no measure{suggest(column, known)}"))

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


def pairs_from_columns(columns: Mapping[str, Sequence[Any]], accounts: AccountTable, users: Sequence[User], *, source: str = "<pairs>", rows: Sequence[int] | None = None) -> PairTable:
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
    for i in range(n):
        a = accounts.index.get(as_text(columns["account_id"][i]).strip())
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
