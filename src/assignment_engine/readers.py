"""Read CRM exports (CSV or JSON Lines) into the core's typed tables.

The format follows the extension: ``.jsonl``/``.ndjson`` are JSON Lines, anything
else is CSV (UTF-8, an Excel BOM is accepted). Every value is read as text or
as the JSON value given, and converted by the declared field type later, so
leading zeros and codes such as ``NO`` survive. Errors name file, row and column.
"""

from __future__ import annotations

import csv
import json
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .compile import CompiledRules
from .errors import DataError, Finding, Location, suggest
from .opportunities import DealTable, deals_from_columns
from .table import AccountTable, FieldType, PairTable, User, pairs_from_columns, users_from_columns

Columns = dict[str, list[Any]]


def read_columns(path: str | Path) -> tuple[Columns, Sequence[int]]:
    """A file as columns of raw values plus the source row (line) of every record."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".jsonl", ".ndjson"):
            return _read_jsonl(path)
        return _read_csv(path)
    except OSError as exc:
        raise DataError([Finding(Location(str(path)), f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        raise DataError([Finding(Location(str(path)), f"not UTF-8 text: {exc.reason}")]) from None


def _read_csv(path: Path) -> tuple[Columns, Sequence[int]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise DataError([Finding(Location(str(path), 1), "the file is empty (expected a header row)")])
        header = [h.strip() for h in header]
        duplicated = sorted({h for h in header if header.count(h) > 1})
        if duplicated:
            raise DataError([Finding(Location(str(path), 1), f"duplicate column(s) in header: {', '.join(duplicated)}")])
        columns: list[list[Any]] = [[] for _ in header]
        rows = array("l")
        width = len(header)
        start = reader.line_num + 1
        try:
            for record in reader:
                if not record:
                    start = reader.line_num + 1
                    continue
                if len(record) != width:
                    raise DataError([Finding(Location(str(path), start), f"expected {width} columns as in the header, found {len(record)}")])
                for column, value in zip(columns, record):
                    column.append(value)
                rows.append(start)
                start = reader.line_num + 1
        except csv.Error as exc:
            raise DataError([Finding(Location(str(path), reader.line_num), f"CSV error: {exc}")]) from None
    return dict(zip(header, columns)), rows


def _read_jsonl(path: Path) -> tuple[Columns, Sequence[int]]:
    records: list[dict[str, Any]] = []
    rows = array("l")
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError([Finding(Location(str(path), number, exc.colno), f"invalid JSON: {exc.msg}")]) from None
            if not isinstance(record, dict):
                raise DataError([Finding(Location(str(path), number, 1), "each line must be a JSON object")])
            records.append(record)
            rows.append(number)
    keys = list(dict.fromkeys(k for r in records for k in r))
    columns = {k: [_flat(r.get(k)) for r in records] for k in keys}
    return columns, rows


def _flat(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


def read_accounts(path: str | Path, field_types: dict[str, FieldType]) -> AccountTable:
    """Accounts with ``id`` and the declared fields (``name``, ``parent_id``, ``owner_id``, ``locked``, ``excluded`` optional)."""
    columns, rows = read_columns(path)
    missing = [f for f in field_types if f not in columns]
    if missing and "id" in columns:
        present = list(columns)
        raise DataError([Finding(Location(str(path), 1), f"missing column '{f}' declared in the rule file's fields{suggest(f, present)}") for f in missing])
    return AccountTable.from_columns(columns, field_types, source=str(path), rows=rows)


def read_users(path: str | Path, measures: Sequence[str]) -> list[User]:
    columns, rows = read_columns(path)
    return users_from_columns(columns, measures, source=str(path), rows=rows)


def read_pairs(path: str | Path, accounts: AccountTable, users: Sequence[User]) -> PairTable:
    """Per account–user ``cost`` and ``workload`` (columns ``account_id, user_id, cost, workload``)."""
    columns, rows = read_columns(path)
    return pairs_from_columns(columns, accounts, users, source=str(path), rows=rows)


def read_deals(path: str | Path, rules: CompiledRules, accounts: AccountTable) -> DealTable:
    """Opportunities: ``id, account_id, owner_id, locked, excluded`` plus the declared opportunity fields."""
    columns, rows = read_columns(path)
    return deals_from_columns(columns, rules, accounts, source=str(path), rows=rows)
