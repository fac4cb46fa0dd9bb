"""Derived account fields: lifecycle segments and the run date they count from.

A segment (``lifecycle: new | dormant | existing``) is computed per account
from its declared levels, the first whose condition holds, and added to the
table as a text field, so rules, balance entries, summaries and explanations
use it like any field. Relative date conditions (``within_days``) count from
the run date, which is set on the table here, once, before any rule is read.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from ..rules.compile import CompiledRules
from ..tables.cells import StringColumn
from ..tables.table import AccountTable


def derive(rules: CompiledRules, table: AccountTable, as_of: dt.date | None = None) -> AccountTable:
    """``table`` with its run date set and every segment computed as a field (in place; returned for chaining)."""
    table.as_of = rules.run_date(as_of)
    for segment in rules.segments:
        codes = np.full(len(table), -1, dtype=np.int32)
        left = np.ones(len(table), dtype=bool)
        for k, (_, condition) in enumerate(segment.levels):
            hit = left.copy() if condition is None else left & condition.mask(table)
            codes[hit] = k
            left &= ~hit
        table.fields[segment.name] = StringColumn(codes, [name for name, _ in segment.levels])
    return table


def segment_counts(rules: CompiledRules, table: AccountTable) -> dict[str, dict[str, int]]:
    """Per segment, the number of accounts at each level (and ``none`` for those no level took)."""
    out = {}
    for segment in rules.segments:
        column = table.fields[segment.name]
        assert isinstance(column, StringColumn)
        counts = np.bincount(column.codes + 1, minlength=len(column.categories) + 1)
        out[segment.name] = {
            name: int(c) for name, c in zip(["none", *column.categories], counts.tolist(), strict=True) if name != "none" or c
        }
    return out
