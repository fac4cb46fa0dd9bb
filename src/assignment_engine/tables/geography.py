"""Country and state columns as ISO codes, resolved once per distinct value.

Exports write ``United States``, ``USA`` or ``US``; rules are written with
codes. A ``country`` field stores the ISO 3166-1 alpha-2 code and a ``state``
field the ISO 3166-2 code without its country prefix (``CA``, ``NSW``), read
against the row's country when the table has a country field. A value that is
not recognised is read as missing and reported (see :class:`Unrecognised`),
never guessed: ``Philipines`` is a typo to fix in the CRM, not ours to correct.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import places
from .cells import StringColumn


@dataclass(frozen=True)
class Unrecognised:
    """One distinct value that is not a country (or a state of its country), and the rows holding it."""

    value: str
    suggestion: str | None
    rows: np.ndarray

    def hint(self) -> str:
        return f" (did you mean {self.suggestion}?)" if self.suggestion else ""


def country_column(column: StringColumn) -> tuple[StringColumn, list[Unrecognised]]:
    """The column with every value as its alpha-2 code; unrecognised values become missing."""
    resolved = [places.country_code(c) for c in column.categories]
    return _recode(column, [r.code for r in resolved], [r.suggestion for r in resolved])


def state_column(column: StringColumn, country: StringColumn | None) -> tuple[StringColumn, list[Unrecognised]]:
    """The column with every value as its subdivision code, read against the row's country where there is one."""
    if country is None:
        resolved = [places.subdivision_code(None, c) for c in column.categories]
        return _recode(column, [r.code for r in resolved], [r.suggestion for r in resolved])
    # one resolution per distinct (country, state) pair: WA is Washington in the US, Western Australia in AU
    width = len(column.categories) + 1
    pair = (country.codes.astype(np.int64) + 1) * width + (column.codes + 1)
    pairs, inverse = np.unique(pair, return_inverse=True)
    codes: list[str | None] = []
    suggestions: list[str | None] = []
    for p in pairs.tolist():
        c, v = divmod(p, width)
        if v == 0:
            codes.append(None)
            suggestions.append(None)
            continue
        r = places.subdivision_code(country.categories[c - 1] if c else None, column.categories[v - 1])
        codes.append(r.code)
        suggestions.append(r.suggestion)
    by_pair = StringColumn(
        inverse.astype(np.int32).reshape(-1), [column.categories[p % width - 1] if p % width else "" for p in pairs.tolist()]
    )
    missing = np.flatnonzero(pairs % width == 0)
    by_pair.codes[np.isin(by_pair.codes, missing)] = -1
    return _recode(by_pair, codes, suggestions)


def _recode(column: StringColumn, codes: list[str | None], suggestions: list[str | None]) -> tuple[StringColumn, list[Unrecognised]]:
    """Categories replaced by their resolved codes (merged when equal); the unrecognised ones become -1."""
    index: dict[str, int] = {}
    mapping = np.full(len(codes) + 1, -1, dtype=np.int32)  # the last entry maps a missing value (-1) to missing
    bad: list[int] = []
    for k, code in enumerate(codes):
        if code is None:
            bad.append(k)
        else:
            mapping[k] = index.setdefault(code, len(index))
    out = StringColumn(mapping[column.codes], list(index))
    is_bad = np.zeros(len(codes) + 1, dtype=bool)
    is_bad[bad] = True
    rows = np.flatnonzero(is_bad[column.codes])  # grouped in one sort, not one scan per bad value
    rows = rows[np.argsort(column.codes[rows], kind="stable")]
    groups = np.split(rows, np.flatnonzero(np.diff(column.codes[rows])) + 1) if len(rows) else []
    unrecognised = [Unrecognised(column.categories[int(column.codes[g[0]])], suggestions[int(column.codes[g[0]])], g) for g in groups]
    unrecognised.sort(key=lambda u: int(u.rows[0]))
    return out, unrecognised
