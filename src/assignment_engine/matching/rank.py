"""Value measures and the value ranking into tiers.

A measure gives every account a workload value (a numeric field, missing = 0,
or a constant). Tiers rank accounts by one measure, highest first, ties broken
by account id so the ranking does not depend on row order, and cut the ranking
at cumulative shares (``key`` = top 5 %, ``growth`` = up to 30 %, ``core`` = rest).
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np

from ..errors import DataError, Finding
from ..rules.compile import BalanceSpec, CompiledRules
from ..tables.cells import NumericColumn, StringColumn, bound_findings
from ..tables.table import AccountTable


def measure_values(rules: CompiledRules, table: AccountTable) -> dict[str, np.ndarray]:
    """Per account, the value of every measure; a field value that cannot be a load is an error at its cell."""
    out: dict[str, np.ndarray] = {}
    findings: list[Finding] = []
    for name, m in rules.measures.items():
        if m.field is None:  # a constant, or a pair measure's value for unlisted pairs
            out[name] = np.full(len(table), float(m.constant or 0.0))
        else:
            column = table.fields[m.field]
            assert isinstance(column, NumericColumn)
            findings += bound_findings(column.values, f"measure '{name}'", partial(table.location, column=m.field))
            out[name] = np.nan_to_num(column.values, nan=0.0)
    if findings:
        raise DataError(findings[:50])
    return out


def rank_tiers(
    rules: CompiledRules, table: AccountTable, values: dict[str, np.ndarray], ranked: np.ndarray
) -> tuple[np.ndarray, list[str]]:
    """Tier index per account (-1 for accounts not ranked, e.g. excluded) and the tier names."""
    tier = np.full(len(table), -1, dtype=np.int8)
    spec = rules.model.tiers
    if spec is None:
        return tier, []
    rows = np.flatnonzero(ranked)
    ids = np.array([table.ids[i] for i in rows])
    order = rows[np.lexsort((ids, -values[spec.by][rows]))]
    start = 0
    for level_index, level in enumerate(spec.levels):
        stop = (
            len(order) if level.top is None else min(len(order), math.ceil(round(level.top * len(order), 9)))
        )  # 0.07 × 100 is 7.000000000000001
        tier[order[start:stop]] = level_index
        start = max(start, stop)
    return tier, [lv.name for lv in spec.levels]


def balance_scope(spec: BalanceSpec, table: AccountTable, tier: np.ndarray, tier_names: list[str]) -> np.ndarray | None:
    """The accounts one balance requirement counts: those of its tier or segment level (None: every account)."""
    if spec.segment is not None:
        name, level = spec.segment
        column = table.fields[name]
        assert isinstance(column, StringColumn)
        return column.gather(np.array([c == level for c in column.categories], dtype=bool), missing=False)
    if spec.tier is not None:
        return tier == tier_names.index(spec.tier)
    return None


def balance_values(spec: BalanceSpec, values: dict[str, np.ndarray], scope: np.ndarray | None) -> np.ndarray:
    """Per-account contribution to one balance requirement (zero outside its scope, see :func:`balance_scope`)."""
    v = values[spec.measure]
    return v if scope is None else np.where(scope, v, 0.0)
