"""Typed columns and cells: the arrays a book is held in, and how one cell is read as its field's type.

Strings are dictionary-encoded (integer codes into a list of distinct values),
so a rule on a string field is evaluated once per distinct value and then
gathered for every row. Every other type (integer, number, boolean, date) is a
float64 array with NaN for a missing value; dates are days since 1970-01-01.
Text that every row has (ids, names) is held in NumPy string arrays, without a
Python object per row.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
import reprlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar, overload

import numpy as np

from ..errors import Finding, Location

if TYPE_CHECKING:
    from .table import User


FieldType = Literal["string", "integer", "number", "boolean", "date", "country", "state"]
TEXT_KINDS = ("string", "country", "state")  # dictionary-encoded; country and state stored as ISO codes
EPOCH = dt.date(1970, 1, 1)
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}
# The largest magnitude of a load, capacity, cost or workload (docs/rules.md, Data files): above any
# account's revenue in dollars, euros or yen, still a whole number in float64 (exact to 2^53 ≈ 9e15),
# and thousands of them sum within the optimizer's 64-bit integers (1e300 ended in INT_MIN errors).
LIMIT = 1e15
DISTINCT = 50_000  # readers share one string per distinct value of a column, up to this many; past it a column is a key
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
        return dict(zip(keys.tolist(), np.split(order, starts[1:]), strict=False))  # no categories: one empty part, no key

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


def encode_strings(raw: Sequence[Any], numbers: list[int] | None = None, index: dict[str, int] | None = None) -> StringColumn:
    """Dictionary-encode a text column; the rows holding a number (not text) are appended to ``numbers`` when given.

    ``index`` (value → code) is extended in place: chunks of one column encoded with one index share their codes."""
    index = {} if index is None else index
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
        if isinstance(v, (dt.time, dt.timedelta)):  # a spreadsheet shows its day 0, 1899-12-30, as a time
            raise CellError(
                f"{v} is a {'time of day' if isinstance(v, dt.time) else 'duration'}, "
                "not a date (Excel's 1899-12-30 is read as the time 00:00): enter the date"
            )
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
    return [Finding(at(int(i)), _out_of_bounds(what, low, values[i])) for i in bad[:50]]


def bound_problem(value: float | None, what: str) -> str | None:
    """:func:`bound_findings` for one unsigned value (None and NaN are missing): why it cannot be a load, or None."""
    if value is None or math.isnan(value) or 0.0 <= value <= LIMIT:
        return None
    return _out_of_bounds(what, 0.0, value)


def _out_of_bounds(what: str, low: float, value: float) -> str:
    return f"{what} must be between {compact_number(low)} and {compact_number(LIMIT)}, got {compact_number(value)}"


def compact_number(x: float) -> str:
    """1e15, not 1e+15."""
    return f"{float(x):g}".replace("e+", "e")


TEXT = np.dtypes.StringDType()  # variable-width text held inside the array: no Python object per row
T = TypeVar("T", str, str | None)


class _TextArray(Sequence[T]):
    """Text per row in one numpy StringDType array: a million ids cost 16 MB, not 60 MB of ``str`` objects.

    Reads as a sequence (equal to a list with the same items); ``array`` is for vectorised work. Lookups by
    value bisect a sorted copy made on first use, so a table keeps no dict of its ids.
    """

    __slots__ = ("_sorted", "array")

    array: np.ndarray

    def __init__(self, values: Iterable[str | None] | np.ndarray) -> None:
        if isinstance(values, _TextArray):
            self.array = values.array
        elif isinstance(values, np.ndarray) and values.dtype == TEXT:
            self.array = values
        else:
            self.array = np.array(["" if v is None else v for v in values], dtype=TEXT)
        self._sorted: tuple[np.ndarray, np.ndarray] | None = None

    def _read(self, text: str) -> T:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.array)

    @overload
    def __getitem__(self, i: int | np.integer[Any]) -> T: ...
    @overload
    def __getitem__(self, i: slice) -> Self: ...
    def __getitem__(self, i: int | np.integer[Any] | slice) -> T | Self:
        if isinstance(i, slice):
            return type(self)(self.array[i])
        return self._read(self.array[i])

    def __iter__(self) -> Iterator[T]:
        return map(self._read, self.array)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _TextArray):
            return type(other) is type(self) and bool(np.array_equal(self.array, other.array))
        if isinstance(other, Sequence) and not isinstance(other, str):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable array inside, as a list

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_quote.repr(self.tolist())})"

    def __contains__(self, value: object) -> bool:
        return isinstance(value, str) and self.position(value) is not None

    def tolist(self) -> list[T]:
        return [self._read(s) for s in self.array.tolist()]

    def _order(self, keep: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """The rows in the order of their values, and the values so sorted; kept for later lookups unless ``keep``
        is False (a one-off pass: at ten million ids the copy is 240 MB a batch run never reads again)."""
        if self._sorted is not None:
            return self._sorted
        order = np.argsort(self.array, kind="stable")
        if keep:
            self._sorted = (order, self.array[order])
            return self._sorted
        return order, self.array[order]

    def position(self, value: str) -> int | None:
        """The row holding ``value`` (the first when repeated), None when none does."""
        order, ordered = self._order()
        at = bisect.bisect_left(ordered, value)  # numpy's searchsorted copies a text array per call
        return int(order[at]) if value and at < len(ordered) and ordered[at] == value else None

    def positions(self, values: Sequence[str] | np.ndarray) -> np.ndarray:
        """The row holding each value (the first when repeated), -1 where none does: a join without a dict.

        One stable sort of the rows and the values together (numpy 2.4's searchsorted on text arrays
        misreads strings longer than 15 bytes)."""
        wanted = np.asarray(values, dtype=TEXT)
        both = np.concatenate([self.array, wanted])
        order = np.argsort(both, kind="stable")
        ordered = both[order]
        starts = np.ones(len(both), dtype=bool)
        starts[1:] = ordered[1:] != ordered[:-1]
        first = order[starts]  # per distinct value, its first place in ``both``: a row when any row holds it
        found = np.where(first < len(self.array), first, -1)[np.cumsum(starts) - 1]
        out = np.empty(len(both), dtype=np.int64)
        out[order] = found
        return np.where(wanted != "", out[len(self.array) :], -1)

    def repeats(self) -> tuple[np.ndarray, np.ndarray]:
        """The rows whose value an earlier row already holds (ascending), and that earlier row for each."""
        order, ordered = self._order(keep=False)
        if len(ordered) < 2:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        same = np.flatnonzero(ordered[1:] == ordered[:-1]) + 1
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        first = order[starts[np.searchsorted(starts, same, side="right") - 1]]
        rows = order[same]
        by_row = np.argsort(rows, kind="stable")
        return rows[by_row].astype(np.int64), first[by_row].astype(np.int64)


def owner_index(owners: Sequence[str | None], users: Sequence[User]) -> np.ndarray:
    """Per row, the index of its owner among ``users``; -1 where it has none or the owner is not a user."""
    array = owners.array if isinstance(owners, _TextArray) else np.array(["" if o is None else o for o in owners], dtype=TEXT)
    return Texts([u.id for u in users]).positions(array)


class Texts(_TextArray[str]):
    """Text that every row has (ids, names: '' is a value)."""

    __slots__ = ()

    def _read(self, text: str) -> str:
        return text

    def __iter__(self) -> Iterator[str]:
        return iter(self.array)


class OptionalTexts(_TextArray[str | None]):
    """Text a row may lack (parent, owner): stored as '', read as None."""

    __slots__ = ()

    def _read(self, text: str) -> str | None:
        return text or None
