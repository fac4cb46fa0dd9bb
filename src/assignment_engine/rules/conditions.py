"""The condition mini-language of rule files: parse, evaluate on whole tables, explain.

Grammar (a YAML value)::

    condition := mapping            # every entry must hold (AND)
    entry     := "all": [condition, ...]
               | "any": [condition, ...]
               | "not": condition
               | FIELD: {OP: VALUE, ...}   # several operators = AND
               | FIELD: [v1, v2]           # shorthand for in
               | FIELD: v                  # shorthand for eq

Missing values: ``ne`` and ``not_in`` hold for a missing value (it is not equal
to anything); every other comparison fails on it, ``exists``/``is_null`` test it.
Text comparisons (eq, ne, in, not_in, starts_with, ends_with, contains) ignore
case, as CRM users expect; ordering (lt … between) compares strings as strings,
so postal-code ranges work; ``matches`` is an RE2 regular expression (linear
time: no pattern can hang the engine). Nothing in a rule file is ever evaluated
as code.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import re2

from ..errors import suggest
from ..tables import places
from ..tables.cells import EPOCH, TEXT_KINDS, FieldType, StringColumn, as_text
from ..tables.table import AccountTable
from .yamlfile import shown

Locate = Callable[[tuple[Any, ...]], Any]

EQUALITY = ("eq", "ne", "in", "not_in")
ORDERING = ("lt", "lte", "gt", "gte", "between")
TEXT = ("starts_with", "ends_with", "contains", "matches")
PRESENCE = ("exists", "is_null")
RELATIVE = ("within_days", "older_than_days")  # dates, counted from the run date
INDEXED = ("eq", "in", *ORDERING)  # text comparisons a column's indexes answer (StringColumn.folded_index, sorted_codes)
OPERATORS = EQUALITY + ORDERING + TEXT + PRESENCE + RELATIVE
MAX_DAYS = 36_500
_SYMBOL = {"eq": "=", "ne": "≠", "lt": "<", "lte": "≤", "gt": ">", "gte": "≥"}
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.max_mem = 8 << 20
_RE2_OPTIONS.log_errors = False  # a bad pattern is the user's finding, not absl noise on stderr


class ConditionError(ValueError):
    """A problem in a condition, with the YAML path it was found at."""

    def __init__(self, path: tuple[Any, ...], message: str, *, key: bool = False):
        super().__init__(message)
        self.path, self.key = path, key


class Condition:
    """A node of a parsed condition."""

    def mask(self, table: AccountTable, rows: np.ndarray | None = None) -> np.ndarray:
        """Does the condition hold? One boolean per account, or per index of ``rows`` when given.

        ``rows`` lets a child territory evaluate its own rules only on the
        accounts its inherited rules already admitted.
        """
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def trace(self, table: AccountTable, row: int, depth: int = 0) -> list[tuple[int, str, bool]]:
        """(indent, text, held) lines explaining the outcome for one account."""
        held = bool(self.mask(table)[row])
        return [(depth, self.describe(), held)]


@dataclass
class AllOf(Condition):
    parts: list[Condition]

    def mask(self, table: AccountTable, rows: np.ndarray | None = None) -> np.ndarray:
        out = np.ones(len(table) if rows is None else len(rows), dtype=bool)
        for part in self.parts:
            out &= part.mask(table, rows)
        return out

    def describe(self) -> str:
        return " and ".join(_wrap(p) for p in self.parts)

    def trace(self, table: AccountTable, row: int, depth: int = 0) -> list[tuple[int, str, bool]]:
        if len(self.parts) == 1:
            return self.parts[0].trace(table, row, depth)
        lines = [(depth, "all of:", bool(self.mask(table)[row]))]
        for p in self.parts:
            lines += p.trace(table, row, depth + 1)
        return lines


@dataclass
class AnyOf(Condition):
    parts: list[Condition]

    def mask(self, table: AccountTable, rows: np.ndarray | None = None) -> np.ndarray:
        out = np.zeros(len(table) if rows is None else len(rows), dtype=bool)
        for part in self.parts:
            out |= part.mask(table, rows)
        return out

    def describe(self) -> str:
        return " or ".join(_wrap(p) for p in self.parts)

    def trace(self, table: AccountTable, row: int, depth: int = 0) -> list[tuple[int, str, bool]]:
        lines = [(depth, "any of:", bool(self.mask(table)[row]))]
        for p in self.parts:
            lines += p.trace(table, row, depth + 1)
        return lines


@dataclass
class Not(Condition):
    part: Condition

    def mask(self, table: AccountTable, rows: np.ndarray | None = None) -> np.ndarray:
        return ~self.part.mask(table, rows)

    def describe(self) -> str:
        return f"not ({self.part.describe()})"

    def trace(self, table: AccountTable, row: int, depth: int = 0) -> list[tuple[int, str, bool]]:
        return [(depth, "not:", bool(self.mask(table)[row])), *self.part.trace(table, row, depth + 1)]


def compares(c: Condition) -> Iterator[Compare]:
    """Every comparison in a condition tree (for checks over a whole rule file)."""
    if isinstance(c, (AllOf, AnyOf)):
        for part in c.parts:
            yield from compares(part)
    elif isinstance(c, Not):
        yield from compares(c.part)
    elif isinstance(c, Compare):
        yield c


def _wrap(c: Condition) -> str:
    return f"({c.describe()})" if isinstance(c, (AllOf, AnyOf)) and len(c.parts) > 1 else c.describe()


@dataclass
class Compare(Condition):
    """``field op value`` on one typed column."""

    field: str
    kind: FieldType
    op: str
    value: Any  # normalised: str / float / tuple / bool / compiled regex
    shown: tuple[str, ...]  # the operands as the rule file wrote them

    def describe(self) -> str:
        f, op, shown = self.field, self.op, self.shown
        if op in _SYMBOL:
            return f"{f} {_SYMBOL[op]} {shown[0]}"
        if op in ("in", "not_in"):
            return f"{f} {'in' if op == 'in' else 'not in'} {', '.join(shown)}"
        if op == "between":
            return f"{f} between {shown[0]} and {shown[1]}"
        if op in PRESENCE:
            missing = (op == "is_null") == self.value
            return f"{f} is {'missing' if missing else 'present'}"
        if op == "matches":
            return f"{f} matches /{shown[0]}/"
        if op == "within_days":
            return f"{f} within {shown[0]} days of the run date"
        if op == "older_than_days":
            return f"{f} more than {shown[0]} days before the run date"
        return f"{f} {op.replace('_', ' ')} {' or '.join(shown)}"

    def trace(self, table: AccountTable, row: int, depth: int = 0) -> list[tuple[int, str, bool]]:
        actual = table.fields[self.field].value(row)
        shown = "missing" if actual is None else repr(actual if not isinstance(actual, dt.date) else actual.isoformat())
        held = bool(self.mask(table)[row])
        return [(depth, f"{self.describe()}  [{self.field} is {shown}]", held)]

    def mask(self, table: AccountTable, rows: np.ndarray | None = None) -> np.ndarray:
        column = table.fields[self.field]
        if isinstance(column, StringColumn):
            return column.gather(self._on_strings(column), missing=self._on_missing(), rows=rows)
        return self._on_numbers(column.values if rows is None else column.values[rows], table.as_of)

    def _on_missing(self) -> bool:
        if self.op in ("ne", "not_in"):
            return True
        if self.op == "exists":
            return not self.value
        if self.op == "is_null":
            return bool(self.value)
        return False

    def codes_where(self, column: StringColumn) -> np.ndarray:
        """The codes (sorted) of the values an ``INDEXED`` comparison holds for, found in the column's
        indexes (a dict of folded values, the values sorted) in time proportional to them."""
        op, v = self.op, self.value
        if op in ("eq", "in"):
            index = column.folded_index
            hits = [index[x] for x in ([v] if op == "eq" else sorted(v)) if x in index]
            return np.sort(np.concatenate(hits)) if hits else np.empty(0, dtype=np.int64)
        ordered, values = column.sorted_codes
        low, high = {
            "between": lambda: (np.searchsorted(values, v[0], "left"), np.searchsorted(values, v[1], "right")),
            "lt": lambda: (0, np.searchsorted(values, v, "left")),
            "lte": lambda: (0, np.searchsorted(values, v, "right")),
            "gt": lambda: (np.searchsorted(values, v, "right"), len(values)),
            "gte": lambda: (np.searchsorted(values, v, "left"), len(values)),
        }[op]()
        return np.sort(ordered[low:high])

    def _on_strings(self, column: StringColumn) -> np.ndarray:
        """One result per distinct value; comparisons run in numpy, only ``matches`` and text search loop."""
        op, v = self.op, self.value
        n = len(column.categories)
        if op in INDEXED:  # from the column's indexes: no pass over every value per comparison
            hit = np.zeros(n, dtype=bool)
            hit[self.codes_where(column)] = True
            return hit
        if op in ("exists", "is_null"):
            return np.full(n, (op == "exists") == v, dtype=bool)
        if op == "matches":
            return np.fromiter((v.search(c) is not None for c in column.categories), bool, n)
        if op in ORDERING:
            values = column.array
            if op == "between":
                return (values >= v[0]) & (values <= v[1])
            return {"lt": np.less, "lte": np.less_equal, "gt": np.greater, "gte": np.greater_equal}[op](values, v)
        folded = column.folded
        if op in ("eq", "ne"):
            return (folded == v) if op == "eq" else (folded != v)
        if op in ("in", "not_in"):
            hit = np.isin(folded, np.array(sorted(v), dtype=str))
            return hit if op == "in" else ~hit
        method = {"starts_with": str.startswith, "ends_with": str.endswith, "contains": str.__contains__}[op]
        return np.fromiter((any(method(c, x) for x in v) for c in folded.tolist()), bool, n)

    def _on_numbers(self, x: np.ndarray, as_of: dt.date | None) -> np.ndarray:
        op, v = self.op, self.value
        present = ~np.isnan(x)
        if op in ("exists", "is_null"):
            return present if (op == "exists") == v else ~present
        with np.errstate(invalid="ignore"):
            if op in RELATIVE:
                today = float(((as_of or dt.date.today()) - EPOCH).days)
                return (x < today - v) if op == "older_than_days" else (x >= today - v) & (x <= today + v)
            if op == "eq":
                return x == v
            if op == "ne":
                return ~(x == v)
            if op == "in":
                return np.isin(x, np.asarray(v, dtype=np.float64))
            if op == "not_in":
                return ~np.isin(x, np.asarray(v, dtype=np.float64))
            if op == "between":
                return (x >= v[0]) & (x <= v[1])
            return {"lt": np.less, "lte": np.less_equal, "gt": np.greater, "gte": np.greater_equal}[op](x, v)


# ---------------------------------------------------------------- parsing


def parse_condition(raw: Any, path: tuple[Any, ...], fields: dict[str, FieldType], errors: list[ConditionError]) -> Condition:
    """Parse a ``when`` value; problems are appended to ``errors`` (all of them, not the first)."""
    if isinstance(raw, list):
        return AllOf([parse_condition(item, (*path, i), fields, errors) for i, item in enumerate(raw)])
    if not isinstance(raw, dict) or not raw:
        errors.append(ConditionError(path, "a condition must be a non-empty mapping such as {country: US}"))
        return AllOf([])
    parts: list[Condition] = []
    for key, value in raw.items():
        where = (*path, key)
        if key in ("all", "any"):
            if not isinstance(value, list) or not value:
                errors.append(ConditionError(where, f"'{key}' takes a non-empty list of conditions"))
                continue
            items = [parse_condition(item, (*where, i), fields, errors) for i, item in enumerate(value)]
            parts.append(AllOf(items) if key == "all" else AnyOf(items))
        elif key == "not":
            parts.append(Not(parse_condition(value, where, fields, errors)))
        elif key not in fields:
            known = sorted(fields) + ["all", "any", "not"]
            errors.append(ConditionError(where, f"unknown field '{key}'{suggest(str(key), known)}; declare it under 'fields'", key=True))
        else:
            parts.extend(_parse_field(str(key), fields[key], value, where, errors))
    return parts[0] if len(parts) == 1 else AllOf(parts)


def _parse_field(name: str, kind: FieldType, value: Any, path: tuple[Any, ...], errors: list[ConditionError]) -> list[Condition]:
    if isinstance(value, list):
        value = {"in": value}
    elif not isinstance(value, dict):
        value = {"eq": value}
    elif not value:
        errors.append(ConditionError(path, f"no operator given for '{name}'"))
        return []
    out: list[Condition] = []
    for op, operand in value.items():
        where = (*path, op)
        if op not in OPERATORS:
            errors.append(ConditionError(where, f"unknown operator '{op}'{suggest(str(op), list(OPERATORS))}", key=True))
            continue
        items = operand if isinstance(operand, list) else [operand]
        try:
            out.append(Compare(name, kind, op, _operand(name, kind, op, operand), tuple(as_text(x) for x in items)))
        except ValueError as exc:
            errors.append(ConditionError(where, str(exc)))
    return out


def _operand(name: str, kind: FieldType, op: str, operand: Any) -> Any:
    if op in RELATIVE:
        if kind != "date":
            raise ValueError(f"'{op}' needs a date field (field '{name}' is {kind})")
        if isinstance(operand, bool) or not isinstance(operand, int) or not 0 <= operand <= MAX_DAYS:
            raise ValueError(f"'{op}' takes a whole number of days from 0 to {MAX_DAYS:,}, not {shown(operand)}")
        return float(operand)
    if op in PRESENCE:
        if not isinstance(operand, bool):
            raise ValueError(f"'{op}' takes true or false")
        return operand
    if op == "matches":
        if kind not in TEXT_KINDS or not isinstance(operand, str):
            raise ValueError(f"'matches' needs a string field and a pattern (field '{name}' is {kind})")
        try:
            return re2.compile(operand, _RE2_OPTIONS)
        except re2.error as exc:
            detail = exc.args[0] if exc.args else exc
            detail = detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)  # RE2 reports bytes
            raise ValueError(f"bad regular expression {shown(operand)}: {detail}") from None
    if op in ("in", "not_in", "between") or op in TEXT:
        items = operand if isinstance(operand, list) else [operand]
        if op == "between" and len(items) != 2:
            raise ValueError("'between' takes two values: [low, high]")
        if not items:
            raise ValueError(f"'{op}' takes at least one value")
        if op in TEXT and kind not in TEXT_KINDS:
            raise ValueError(f"'{op}' needs a string field (field '{name}' is {kind})")
        values = [_scalar(name, kind, x, fold=op != "between") for x in items]
        if op in ("in", "not_in"):
            return frozenset(values) if kind in TEXT_KINDS else tuple(values)
        return tuple(values)
    return _scalar(name, kind, operand, fold=op in ("eq", "ne"))


def _place(name: str, kind: FieldType, value: str) -> str:
    """A rule's country as its alpha-2 code, as the data is stored (``United States`` → ``US``); a state as its code where
    that is unambiguous across the countries that have them, else as written (``BY`` of Bavaria)."""
    if kind == "country":
        found = places.country_code(value)
        if found.code is None:
            hint = f" (did you mean {found.suggestion}?)" if found.suggestion else ""
            raise ValueError(f"'{name}' is a country field: {shown(value)} is not a country name or ISO code{hint}")
        return found.code
    return places.subdivision_code(None, value).code or value.strip().upper()


def _scalar(name: str, kind: FieldType, v: Any, *, fold: bool) -> Any:
    if v is None or isinstance(v, (list, dict)):
        raise ValueError(f"expected a single {kind} value for '{name}', got {shown(v)}; use exists/is_null for missing values")
    if kind in TEXT_KINDS:
        if isinstance(v, bool):
            raise ValueError(f"'{name}' is a {kind} field: quote the value {str(v).lower()!r}")
        s = str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)
        if kind != "string" and places.available():
            s = _place(name, kind, s)
        return s.casefold() if fold else s
    if kind == "boolean":
        if not isinstance(v, bool):
            raise ValueError(f"'{name}' is a boolean field: use true or false, not {shown(v)}")
        return v
    if kind == "date":
        try:
            return float((dt.date.fromisoformat(str(v)) - EPOCH).days)
        except ValueError:
            raise ValueError(f"'{name}' is a date field: use YYYY-MM-DD, not {shown(v)}") from None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"'{name}' is a {kind} field: {shown(v)} is not a number")
    return float(v)


def required_comparisons(condition: Condition) -> Iterator[Compare]:
    """The comparisons that must all hold for ``condition`` to hold: itself, or the top-level parts of an
    all-of (nested all-ofs flattened); what an index may narrow by. Any-of and not parts require none."""
    if isinstance(condition, AllOf):
        for part in condition.parts:
            yield from required_comparisons(part)
    elif isinstance(condition, Compare):
        yield condition
