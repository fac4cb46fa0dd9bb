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
from .table import AccountTable, FieldType, PairTable, User, as_text, pairs_from_columns, shown, users_from_columns

Columns = dict[str, list[Any]]
_DISTINCT = 50_000  # past this many distinct values a column is not deduplicated
_NESTED = (dict, list)  # JSON values read as their JSON text (json.loads gives these exact types)
ACCOUNT_COLUMNS = ("id", "name", "parent_id", "owner_id", "locked", "excluded")
SPREADSHEETS = (".xlsx", ".xlsm", ".xls", ".ods")
DEAL_INPUT_COLUMNS = ("id", "name", "account_id", "owner_id", "locked", "excluded", "overlay_owner_ids")


def read_columns(path: str | Path, wanted: set[str] | None = None, sheet: str | None = None) -> tuple[Columns, Sequence[int]]:
    """A file as columns of raw values plus the source row (line) of every record.

    Only the ``wanted`` columns are kept (all when None): CRM exports carry
    dozens of columns a run never reads, and a million rows of each cost memory.
    Spreadsheets (``sheet``: a named one, else the first) and Parquet need their extras.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in SPREADSHEETS:
            from .sheets import read_sheet

            return read_sheet(path, wanted, sheet)
        if suffix == ".parquet":
            from .parquet import read_parquet

            return read_parquet(path, wanted)
        if suffix in (".jsonl", ".ndjson"):
            return _read_jsonl(path, wanted)
        return _read_csv(path, wanted)
    except OSError as exc:
        raise DataError([Finding(Location(str(path)), f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        raise DataError([Finding(Location(str(path)), f"not UTF-8 text: {exc.reason}")]) from None


def _read_csv(path: Path, wanted: set[str] | None) -> tuple[Columns, Sequence[int]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise DataError([Finding(Location(str(path), 1), "the file is empty (expected a header row)")])
        header = [h.strip() for h in header]
        duplicated = sorted({h for h in header if header.count(h) > 1})
        if duplicated:
            raise DataError([Finding(Location(str(path), 1), f"duplicate column(s) in header: {', '.join(map(shown, duplicated))}")])
        keep = [i for i, h in enumerate(header) if wanted is None or h in wanted]
        columns: list[list[Any]] = [[] for _ in keep]
        # one string object per distinct value of low-cardinality columns (country, owner, flags):
        # a million copies of "US" cost 50 MB, a million references 8 MB
        caches: list[dict[str, str] | None] = [{} for _ in keep]
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
                for column, cache, i in zip(columns, caches, keep):
                    value = record[i]
                    if cache is not None:
                        value = cache.setdefault(value, value)
                        if len(cache) > _DISTINCT:
                            caches[next(j for j, c in enumerate(caches) if c is cache)] = None  # by identity: equal caches are not the same column
                    column.append(value)
                rows.append(start)
                start = reader.line_num + 1
        except csv.Error as exc:
            raise DataError([Finding(Location(str(path), reader.line_num), f"CSV error: {exc}")]) from None
    return dict(zip([header[i] for i in keep], columns)), rows


def _read_jsonl(path: Path, wanted: set[str] | None) -> tuple[Columns, Sequence[int]]:
    records: list[dict[str, Any]] = []
    rows = array("l")
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if isinstance(record, dict):  # the wanted keys only, dropped line by line from a wide export
                    record = {k: v if type(v) not in _NESTED else _flat(v) for k, v in record.items() if wanted is None or k in wanted}
            except json.JSONDecodeError as exc:
                raise DataError([Finding(Location(str(path), number, exc.colno), f"invalid JSON: {exc.msg}")]) from None
            except RecursionError:  # json recurses once per level: 100,000 '[' exhaust the stack
                raise DataError([Finding(Location(str(path), number, 1), "invalid JSON: nested too deeply")]) from None
            except ValueError:  # Python refuses integers of more than 4,300 digits
                raise DataError([Finding(Location(str(path), number, 1), "invalid JSON: a number of more than 4,300 digits")]) from None
            if not isinstance(record, dict):
                raise DataError([Finding(Location(str(path), number, 1), "each line must be a JSON object")])
            records.append(record)
            rows.append(number)
    if not records:  # no header to go by: an empty file has every column, as a header-only CSV does
        return {k: [] for k in wanted or ()}, rows
    keys = dict.fromkeys(k for r in records for k in r)
    columns = {k: [r.get(k) for r in records] for k in keys}
    return columns, rows


def _flat(value: Any) -> Any:
    """A JSON list or object as its JSON text; any other value as it is."""
    if isinstance(value, _NESTED):
        return json.dumps(value, sort_keys=True)
    return value


def read_accounts(path: str | Path, field_types: dict[str, FieldType]) -> AccountTable:
    """Accounts with ``id`` and the declared fields (``name``, ``parent_id``, ``owner_id``, ``locked``, ``excluded`` optional)."""
    columns, rows = read_columns(path, {*ACCOUNT_COLUMNS, *field_types})
    missing = [f for f in field_types if f not in columns]
    if missing and "id" in columns:
        present = list(read_columns(path)[0])  # every column, for the suggestion (an error path: cost is fine)
        raise DataError([Finding(Location(str(path), 1), f"missing column '{f}' declared in the rule file's fields{suggest(f, present)}") for f in missing])
    return AccountTable.from_columns(columns, field_types, source=str(path), rows=rows)


def read_users(path: str | Path, measures: Sequence[str]) -> list[User]:
    columns, rows = read_columns(path)
    return users_from_columns(columns, measures, source=str(path), rows=rows)


def read_pairs(path: str | Path, accounts: AccountTable, users: Sequence[User]) -> PairTable:
    """Per account–user ``cost`` and ``workload`` (columns ``account_id, user_id, cost, workload``)."""
    columns, rows = read_columns(path, {"account_id", "user_id", "cost", "workload"})
    return pairs_from_columns(columns, accounts, users, source=str(path), rows=rows)


def read_deals(path: str | Path, rules: CompiledRules, accounts: AccountTable) -> DealTable:
    """Opportunities: ``id, account_id, owner_id, locked, excluded`` plus the declared opportunity fields."""
    columns, rows = read_columns(path, {*DEAL_INPUT_COLUMNS, *rules.deal_field_types})
    return deals_from_columns(columns, rules, accounts, source=str(path), rows=rows)


def find_record(path: str | Path, key: str, value: str, wanted: set[str]) -> tuple[Columns, Sequence[int]] | None:
    """The first record whose ``key`` is ``value``, as one-row columns (``wanted`` only) and its row; None when absent.

    Explaining one account reads up to its row only, and parses nothing else
    in full: a saved plan's explanation costs a scan, not a read of the book.
    """
    path = Path(path)
    try:
        with path.open(newline="" if path.suffix.lower() not in (".jsonl", ".ndjson") else None, encoding="utf-8-sig") as handle:
            if path.suffix.lower() in (".jsonl", ".ndjson"):
                needle = json.dumps(value, ensure_ascii=False)[1:-1]
                for number, line in enumerate(handle, start=1):
                    if needle in line and (record := json.loads(line)) and isinstance(record, dict) and as_text(record.get(key, "")).strip() == value:
                        return {k: [_flat(v)] for k, v in record.items() if k in wanted}, [number]
                return None
            reader = csv.reader(handle)
            header = [h.strip() for h in next(reader, [])]
            if key not in header:
                return None
            at = header.index(key)
            start = reader.line_num + 1
            for cells in reader:
                if len(cells) == len(header) and cells[at].strip() == value:
                    return {h: [cells[i]] for i, h in enumerate(header) if h in wanted}, [start]
                start = reader.line_num + 1
    except (OSError, UnicodeDecodeError, csv.Error, json.JSONDecodeError, RecursionError) as exc:
        raise DataError([Finding(Location(str(path)), f"cannot read: {exc}")]) from None
    return None
