"""Read CRM exports from Parquet and write plans as Parquet (the ``parquet`` extra, pyarrow).

Reading decodes only the wanted columns (Parquet is columnar: the others are
never touched), a batch of records at a time, each converted to Python values
only while the reader turns that batch into arrays. Struct
columns, such as a Salesforce ``BillingAddress``, are addressed by dotted path
(``BillingAddress.country``); list and map columns are read as their JSON text,
as JSON Lines are; binary columns as UTF-8 text. Writing streams record batches, so a million-row plan is
never held in memory twice.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import DataError, Finding, Location, OptionError
from ..rules.inputs import Columns, nfc
from ..tables.cells import DISTINCT, shown

BATCH = 65_536  # rows per record batch written: memory stays flat, row groups stay large enough to compress well
MISSING = "the parquet extra: pip install 'assignment-engine[parquet]'"


def require_pyarrow(option: str = "--parquet") -> None:
    """:class:`OptionError` when pyarrow is missing: checked before a run, which would otherwise compute a plan it cannot write."""
    try:
        import pyarrow  # noqa: F401, PLC0415  the parquet extra, checked before a run
    except ImportError:
        raise OptionError([Finding(Location(option), f"writing Parquet needs {MISSING}")]) from None


def parquet_chunks(path: Path, wanted: set[str] | None, size: int) -> Iterator[tuple[Columns, Sequence[int]]]:
    """The file's columns (``wanted`` only; struct fields as ``parent.field``), ``size`` records at a time, and
    each record's row (position + 2, as in a CSV); at least one chunk."""
    try:
        import pyarrow as pa  # noqa: PLC0415  the parquet extra
        import pyarrow.parquet as pq  # noqa: PLC0415  the parquet extra
    except ImportError:
        raise DataError([Finding(Location(str(path)), f"reading .parquet needs {MISSING}")]) from None
    try:
        file = pq.ParquetFile(path)
        names = _leaf_names(file.schema_arrow)
        stripped = [nfc(n.strip()) for n in names]
        duplicated = sorted({n for n in stripped if stripped.count(n) > 1})
        if duplicated:
            raise DataError([Finding(Location(str(path), 1), f"duplicate column(s) in header: {', '.join(map(shown, duplicated))}")])
        chosen = [n for n, s in zip(names, stripped, strict=True) if wanted is None or s in wanted]
    except (pa.ArrowException, OSError) as exc:  # not Parquet, or a damaged footer (pyarrow's OSErrors carry no strerror)
        raise DataError([Finding(Location(str(path)), f"cannot read: {' '.join(str(exc).split())}")]) from None
    start = 2
    batches = file.iter_batches(batch_size=size, columns=chosen) if chosen else iter(())
    while True:
        try:
            batch = next(batches, None)
        except (pa.ArrowException, OSError, ValueError) as exc:  # a damaged page: which column's, a second reading tells
            raise _unreadable(path, _damaged(path, chosen), start, exc) from None
        if batch is None:
            break
        table = pa.Table.from_batches([batch])
        while any(pa.types.is_struct(t) for t in table.schema.types):  # a dotted path reads one field of a struct
            table = table.flatten()
        columns = {}
        for name in chosen:
            try:
                columns[nfc(name.strip())] = _values(table.column(name))
            except _NotText as exc:
                raise DataError(
                    [
                        Finding(
                            Location(str(path), start + exc.at, column=nfc(name.strip())), f"{shown(exc.value)} is binary, not UTF-8 text"
                        )
                    ]
                ) from None
            except (pa.ArrowException, ValueError, OverflowError) as exc:  # bytes that are not UTF-8, a date past 9999
                raise _unreadable(path, name, start, exc) from None
        yield columns, range(start, start + batch.num_rows)
        start += batch.num_rows
    if start == 2:
        yield {nfc(name.strip()): [] for name in chosen}, range(2, 2)


def _unreadable(path: Path, column: str | None, start: int, exc: Exception) -> DataError:
    """A batch that cannot be read, from its first row on, naming the column when one is known."""
    what = "records" if column is None else f"column {shown(column.strip())}"
    return DataError([Finding(Location(str(path)), f"cannot read {what} from row {start} on: {' '.join(str(exc).split())}")])


def _damaged(path: Path, chosen: list[str]) -> str | None:
    """The first of ``chosen`` that cannot be read on its own (only after a batch failed: it reads the file again)."""
    import pyarrow as pa  # noqa: PLC0415  the parquet extra
    import pyarrow.parquet as pq  # noqa: PLC0415  the parquet extra

    for name in chosen:
        try:
            for _ in pq.ParquetFile(path).iter_batches(columns=[name]):
                pass
        except (pa.ArrowException, OSError, ValueError):
            return name
    return None


def _leaf_names(schema: Any) -> list[str]:
    """Column names as a reader addresses them: a struct's fields as ``parent.field``, at any depth."""
    import pyarrow as pa  # noqa: PLC0415  the parquet extra

    def walk(prefix: str, field: Any) -> Iterator[str]:
        name = prefix + field.name
        if pa.types.is_struct(field.type):
            for child in field.type:
                yield from walk(name + ".", child)
        else:
            yield name

    return [name for field in schema for name in walk("", field)]


def _values(column: Any) -> list[Any]:
    """One column as Python values: text as str, numbers as int/float, dates as date/datetime, nulls as None."""
    import pyarrow as pa  # noqa: PLC0415  the parquet extra

    kind = column.type
    if pa.types.is_decimal(kind):  # a currency amount: the engine computes in float64 anyway
        column = column.cast(pa.float64())
    elif pa.types.is_timestamp(kind) and kind.unit == "ns":  # plain datetimes, not pandas Timestamps (only the day is used)
        column = column.cast(pa.timestamp("us", kind.tz), safe=False)
    values = column.to_pylist()
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind):
        _decode(values)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind) or pa.types.is_map(kind):
        return [None if v is None else json.dumps(v, sort_keys=True, default=str) for v in values]
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_dictionary(kind):
        _intern(values)
    return values


class _NotText(ValueError):
    """A binary cell that is not UTF-8, at its position in the batch."""

    def __init__(self, at: int, value: bytes) -> None:
        super().__init__(at)
        self.at, self.value = at, value


def _decode(values: list[Any]) -> None:
    """A binary column (writers store text so when they lose its type) as UTF-8 text, in place: as bytes it would
    match no rule and be no number."""
    for i, v in enumerate(values):
        if v is not None:
            try:
                values[i] = v.decode("utf-8")
            except UnicodeDecodeError:
                raise _NotText(i, v) from None
    _intern(values)


def _intern(values: list[Any]) -> None:
    """One object per distinct value, in place, as the CSV reader keeps them: a million copies of "US" cost 50 MB.

    A column past :data:`DISTINCT` distinct values is a key: nothing to share, so the rest is left as it is.
    """
    cache: dict[Any, Any] = {}
    for i, v in enumerate(values):
        values[i] = cache.setdefault(v, v)
        if len(cache) > DISTINCT:
            return


def write_parquet(path: Path, columns: list[str], rows: Iterable[dict[str, Any]]) -> None:
    """``columns`` of ``rows`` as a Parquet file, :data:`BATCH` rows at a time, on disk when it returns.

    Types come from the first batch (str → string, int → int64, float →
    float64, bool, list of str → list<string>); a column with no value there
    is a string column.
    """
    import pyarrow as pa  # noqa: PLC0415  the parquet extra
    import pyarrow.parquet as pq  # noqa: PLC0415  the parquet extra

    batches = _batches(columns, rows)
    first = next(batches, None)
    kinds = [_settled(pa.array(values).type) for values in first] if first is not None else [pa.string()] * len(columns)
    schema = pa.schema([pa.field(c, kind) for c, kind in zip(columns, kinds, strict=True)])
    with path.open("wb") as handle:
        with pq.ParquetWriter(handle, schema) as writer:
            for batch in itertools.chain([first], batches) if first is not None else ():
                writer.write_batch(
                    pa.record_batch([pa.array(values, type=kind) for values, kind in zip(batch, kinds, strict=True)], schema=schema)
                )
        handle.flush()
        os.fsync(handle.fileno())


def _batches(columns: list[str], rows: Iterable[dict[str, Any]]) -> Iterator[list[list[Any]]]:
    """Rows regrouped as :data:`BATCH`-long column lists."""
    batch: list[list[Any]] = [[] for _ in columns]
    size = 0
    for row in rows:
        for values, c in zip(batch, columns, strict=True):
            values.append(row[c])
        size += 1
        if size == BATCH:
            yield batch
            batch, size = [[] for _ in columns], 0
    if size:
        yield batch


def _settled(kind: Any) -> Any:
    """``kind`` with null (no value seen) as string: an all-empty column of owner ids is still text."""
    import pyarrow as pa  # noqa: PLC0415  the parquet extra

    if pa.types.is_null(kind):
        return pa.string()
    if pa.types.is_list(kind):
        return pa.list_(_settled(kind.value_type))
    return kind
