"""Read CRM exports (CSV or JSON Lines) into the core's typed tables.

The format follows the extension: ``.jsonl``/``.ndjson`` are JSON Lines, anything
else is CSV (UTF-8, an Excel BOM is accepted). Every value is read as text or
as the JSON value given, and converted by the declared field type later, so
leading zeros and codes such as ``NO`` survive. Errors name file, row and column.
"""

from __future__ import annotations

import csv
import json
import unicodedata
from array import array
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import DataError, Finding, Location, suggest
from ..rules.inputs import ACCOUNT_INPUT_COLUMNS, ColumnMap, Columns, nfc
from ..tables.cells import DISTINCT, FieldType, as_text, shown
from ..tables.places import split_address
from ..tables.table import AccountTable, PairTable, User, pairs_from_columns, users_from_columns
from .parquet import parquet_chunks
from .sheets import read_sheet

_NESTED = (dict, list)  # JSON values read as their JSON text (json.loads gives these exact types)
SPREADSHEETS = (".xlsx", ".xlsm", ".xls", ".ods")
ADDRESS_PARTS = ("street", "city", "state", "postal_code", "country")


CHUNK = 65_536  # rows read before they are converted to arrays: a chunk's Python values are all a reader holds


def read_columns(path: str | Path, wanted: set[str] | None = None, sheet: str | None = None) -> tuple[Columns, Sequence[int]]:
    """A file as columns of raw values plus the source row (line) of every record.

    Only the ``wanted`` columns are kept (all when None): CRM exports carry
    dozens of columns a run never reads, and a million rows of each cost memory.
    Spreadsheets (``sheet``: a named one, else the first) and Parquet need their extras.
    """
    columns: Columns = {}
    rows = array("l")
    for chunk, chunk_rows in read_chunks(path, wanted, sheet):
        for name, values in chunk.items():
            columns.setdefault(name, []).extend(values)
        rows.extend(chunk_rows)
    return columns, rows


def read_chunks(
    path: str | Path, wanted: set[str] | None = None, sheet: str | None = None, size: int | None = None
) -> Iterator[tuple[Columns, Sequence[int]]]:
    """:func:`read_columns` ``size`` (default :data:`CHUNK`) records at a time, at least one chunk (empty when the file
    has no records): a reader that converts each chunk before the next holds one chunk of Python values, not the file's.
    Spreadsheets and JSON Lines come as one chunk (a JSON record's keys are its columns: known at the file's end)."""
    size = size or CHUNK
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in SPREADSHEETS:
            yield read_sheet(path, wanted, sheet)
        elif suffix == ".parquet":
            yield from parquet_chunks(path, wanted, size)
        elif suffix in (".jsonl", ".ndjson"):
            yield from _jsonl_chunks(path, wanted)
        else:
            yield from _csv_chunks(path, wanted, size)
    except OSError as exc:
        raise DataError([Finding(Location(str(path)), f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        raise DataError([Finding(Location(str(path)), f"not UTF-8 text: {exc.reason}")]) from None


def _csv_chunks(path: Path, wanted: set[str] | None, size: int) -> Iterator[tuple[Columns, Sequence[int]]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise DataError([Finding(Location(str(path), 1), "the file is empty (expected a header row)")])
        header = [nfc(h.strip()) for h in header]
        duplicated = sorted({h for h in header if header.count(h) > 1})
        if duplicated:
            raise DataError([Finding(Location(str(path), 1), f"duplicate column(s) in header: {', '.join(map(shown, duplicated))}")])
        keep = [i for i, h in enumerate(header) if wanted is None or h in wanted]
        names = [header[i] for i in keep]
        # one string object per distinct value of low-cardinality columns (country, owner, flags):
        # a million copies of "US" cost 50 MB, a million references 8 MB
        caches: list[dict[str, str] | None] = [{} for _ in keep]
        width = len(header)
        start = reader.line_num + 1
        columns: list[list[Any]] = [[] for _ in keep]
        rows = array("l")
        chunks = 0
        try:
            for record in reader:
                if not record:
                    start = reader.line_num + 1
                    continue
                if len(record) != width:
                    raise DataError(
                        [Finding(Location(str(path), start), f"expected {width} columns as in the header, found {len(record)}")]
                    )
                for column, cache, i in zip(columns, caches, keep, strict=True):
                    value = record[i]
                    if cache is not None:
                        value = cache.setdefault(value, value)
                        if len(cache) > DISTINCT:
                            caches[next(j for j, c in enumerate(caches) if c is cache)] = (
                                None  # by identity: equal caches are not the same column
                            )
                    column.append(value)
                rows.append(start)
                start = reader.line_num + 1
                if len(rows) == size:
                    yield dict(zip(names, columns, strict=True)), rows
                    columns, rows = [[] for _ in keep], array("l")
                    chunks += 1
        except csv.Error as exc:
            raise DataError([Finding(Location(str(path), reader.line_num), f"CSV error: {exc}")]) from None
        if rows or not chunks:  # the last chunk, or the only one of a file without records
            yield dict(zip(names, columns, strict=True)), rows


def _jsonl_chunks(path: Path, wanted: set[str] | None) -> Iterator[tuple[Columns, Sequence[int]]]:
    """One chunk: a record's keys are its columns, so which columns the file has is known only at its end."""
    records: list[dict[str, Any]] = []
    rows = array("l")
    paths = [w for w in wanted or () if "." in w]
    if wanted is not None:  # keys as a Mac writes them (decomposed) too: normalised once each at the end, not per record
        wanted = wanted | {
            unicodedata.normalize("NFD", w) for w in wanted if not w.isascii()
        }  # BillingAddress.country: a field of a JSON object
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if isinstance(record, dict):  # the wanted keys only, dropped line by line from a wide export
                    whole = record
                    record = {k: v if type(v) not in _NESTED else _flat(v) for k, v in whole.items() if wanted is None or k in wanted}
                    for dotted in paths:
                        if dotted not in record and (found := value_at(whole, dotted)) is not None:
                            record[dotted] = _flat(found)
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
        yield {k: [] for k in wanted or ()}, rows
        return
    keys = dict.fromkeys(k for r in records for k in r)
    yield {nfc(k): [r.get(k) for r in records] for k in keys}, rows


def value_at(record: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted path through nested JSON objects, None when any step is missing."""
    node: Any = record
    for step in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(step)
    return node


def _flat(value: Any) -> Any:
    """A JSON list or object as its JSON text; any other value as it is."""
    if isinstance(value, _NESTED):
        return json.dumps(value, sort_keys=True)
    return value


def read_mapped(path: str | Path, names: set[str] | None, columns: ColumnMap) -> tuple[Columns, Sequence[int], dict[str, str]]:
    """A file's columns under engine names (see :class:`ColumnMap`), the source rows, and the file column of each mapped name."""
    raw, rows = read_columns(path, columns.wanted(names), columns.sheet)
    mapped, headers = _renamed(path, raw, names, columns)
    return mapped, rows, headers


def _renamed(path: str | Path, raw: Columns, names: set[str] | None, columns: ColumnMap) -> tuple[Columns, dict[str, str]]:
    """``raw`` under engine names (every column of the file read again only for a suggestion on an error)."""
    return columns.rename(raw, str(path), names, lambda: list(read_columns(path, sheet=columns.sheet)[0]))


@contextmanager
def file_names(columns: ColumnMap, headers: dict[str, str]) -> Iterator[None]:
    """Findings raised inside name the file's columns, not the engine's."""
    try:
        yield
    except DataError as exc:
        raise type(exc)(columns.located(exc.findings, headers)) from None


def read_accounts(path: str | Path, field_types: dict[str, FieldType], columns: ColumnMap | None = None) -> AccountTable:
    """Accounts with ``id`` and the declared fields (``name``, ``parent_id``, ``owner_id``, ``locked``, ``excluded`` optional).

    With ``columns.address``, one address column fills the declared fields
    among street, city, state, postal_code and country that the file lacks.
    Read a chunk at a time (see :meth:`AccountTable.from_chunks`).
    """
    columns = columns or ColumnMap("accounts")
    names = {*ACCOUNT_INPUT_COLUMNS, *field_types}
    headers: dict[str, str] = {}

    def mapped() -> Iterator[tuple[Columns, Sequence[int]]]:
        for raw, rows in read_chunks(path, columns.wanted(names), columns.sheet):
            data, found = _renamed(path, raw, names, columns)
            headers.update(found)
            _address_fields(data, headers, columns, field_types, str(path))
            missing = [f for f in field_types if f not in data]
            if missing and "id" in data:
                present = list(read_columns(path, sheet=columns.sheet)[0])  # every column, for the suggestion (an error path: cost is fine)
                raise DataError(
                    [
                        Finding(
                            Location(str(path), 1),
                            f"missing column {' or '.join(map(repr, columns.candidates(f)))}, "
                            f"declared in the rule file's fields{suggest(columns.candidates(f)[0], present)}",
                        )
                        for f in missing
                    ]
                )
            yield data, rows

    with file_names(columns, headers):
        table = AccountTable.from_chunks(mapped(), field_types, source=str(path))
    return named_as_in_file(table, columns, headers)


def named_as_in_file(table: AccountTable, columns: ColumnMap, headers: dict[str, str]) -> AccountTable:
    """The table's later messages and its warnings in the file's column names."""
    table.headers = headers
    table.warnings = columns.located(table.warnings, headers)
    return table


def _address_fields(data: Columns, headers: dict[str, str], columns: ColumnMap, field_types: dict[str, FieldType], source: str) -> None:
    """With ``columns.address``, the declared address fields the file lacks, split from that one column (in place)."""
    if not columns.address:
        return
    for name, values in split_addresses(data.pop(columns.address, None), columns.address, source).items():
        if name in field_types and name not in data:
            data[name] = values
            headers[name] = f"{columns.address}→{name}"


def split_addresses(values: Sequence[Any] | None, column: str, source: str) -> dict[str, list[Any]]:
    """One address column as the columns street, city, state, postal_code and country (each distinct address split once)."""
    if values is None:
        raise DataError([Finding(Location(source, 1), f"no column {column!r} (inputs.accounts.address)")])
    parts: dict[str, dict[str, str | None]] = {}
    out: dict[str, list[Any]] = {k: [] for k in ADDRESS_PARTS}
    for v in values:
        text = "" if v is None else as_text(v)
        split = parts.get(text)
        if split is None:
            split = parts[text] = split_address(text)
        for k in ADDRESS_PARTS:
            out[k].append(split.get(k))
    return out


def read_users(path: str | Path, measures: Sequence[str], columns: ColumnMap | None = None) -> list[User]:
    columns = columns or ColumnMap("users")
    data, rows, headers = read_mapped(path, None, columns)
    with file_names(columns, headers):
        return users_from_columns(data, measures, source=str(path), rows=rows)


def read_pairs(path: str | Path, accounts: AccountTable, users: Sequence[User], columns: ColumnMap | None = None) -> PairTable:
    """Per account–user ``cost`` and ``workload`` (columns ``account_id, user_id, cost, workload``)."""
    columns = columns or ColumnMap("pairs")
    data, rows, headers = read_mapped(path, {"account_id", "user_id", "cost", "workload"}, columns)
    with file_names(columns, headers):
        return pairs_from_columns(data, accounts, users, source=str(path), rows=rows)


def find_record(
    path: str | Path, value: str, field_types: dict[str, FieldType], columns: ColumnMap, wanted: set[str]
) -> AccountTable | None:
    """The first record whose id is ``value`` as a one-row typed table (its own row number kept), None when absent.

    Explaining one account reads up to its row only, and parses nothing else
    in full: a saved plan's explanation costs a scan, not a read of the book
    (spreadsheets and Parquet are read whole: they have no rows to scan).
    """
    path = Path(path)
    keys = columns.candidates("id")
    raw_wanted = columns.wanted(wanted)
    found = (
        _scan(path, keys, value, raw_wanted)
        if path.suffix.lower() in (".csv", ".jsonl", ".ndjson", ".txt", "")
        else _pick(path, keys, value, raw_wanted, columns)
    )
    if found is None:
        return None
    raw, rows = found
    data, headers = columns.rename(raw, str(path), wanted)
    _address_fields(data, headers, columns, field_types, str(path))
    for name in field_types:  # a plan's input was read whole when planned; an absent optional column (a deal's close_date) is empty
        data.setdefault(name, [None])
    with file_names(columns, headers):
        table = AccountTable.from_columns(data, field_types, source=str(path), rows=rows)
    return named_as_in_file(table, columns, headers)


def _pick(
    path: Path, keys: tuple[str, ...], value: str, wanted: set[str] | None, columns: ColumnMap
) -> tuple[Columns, Sequence[int]] | None:
    data, rows = read_columns(path, wanted, columns.sheet)
    key = next((k for k in keys if k in data), None)
    if key is None:
        return None
    at = next((i for i, v in enumerate(data[key]) if v is not None and as_text(v).strip() == value), None)
    return None if at is None else ({k: [v[at]] for k, v in data.items()}, [rows[at]])


def _scan(path: Path, keys: tuple[str, ...], value: str, wanted: set[str] | None) -> tuple[Columns, Sequence[int]] | None:
    try:
        with path.open(newline="" if path.suffix.lower() not in (".jsonl", ".ndjson") else None, encoding="utf-8-sig") as handle:
            if path.suffix.lower() in (".jsonl", ".ndjson"):
                needle = json.dumps(value, ensure_ascii=False)[1:-1]
                for number, line in enumerate(handle, start=1):
                    if needle in line and (record := json.loads(line)) and isinstance(record, dict):
                        key = next((k for k in keys if k in record), None)
                        if key is not None and as_text(record[key]).strip() == value:
                            picked = {k: [_flat(v)] for k, v in record.items() if wanted is None or k in wanted}
                            picked.update({d: [_flat(value_at(record, d))] for d in wanted or () if "." in d and d not in record})
                            return picked, [number]
                return None
            reader = csv.reader(handle)
            header = [nfc(h.strip()) for h in next(reader, [])]
            key = next((k for k in keys if k in header), None)
            if key is None:
                return None
            at = header.index(key)
            start = reader.line_num + 1
            for cells in reader:
                if len(cells) == len(header) and cells[at].strip() == value:
                    return {h: [cells[i]] for i, h in enumerate(header) if wanted is None or h in wanted}, [start]
                start = reader.line_num + 1
    except (OSError, UnicodeDecodeError, csv.Error, json.JSONDecodeError, RecursionError) as exc:
        raise DataError([Finding(Location(str(path)), f"cannot read: {exc}")]) from None
    return None
