"""Read one sheet of a spreadsheet (``.xlsx``, ``.xlsm``, ``.xls``, ``.ods``) as a CSV is read (the ``xlsx`` extra).

python-calamine (a Rust reader) parses the workbook; cells keep their types:
text stays text, numbers stay numbers (so a postal code typed as 1234 is
reported in a text column instead of silently becoming ``'1234'``), dates are
``datetime.date``/``datetime``, empty cells are None. The first non-blank row is
the header; row numbers are the spreadsheet's own, so a message points at the
row a user sees in Excel.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import DataError, Finding, Location, suggest
from .readers import _DISTINCT, Columns
from .table import as_text, shown


def read_sheet(path: Path, wanted: set[str] | None, sheet: str | None) -> tuple[Columns, Sequence[int]]:
    """The ``sheet`` named (else the first) as columns of cell values (``wanted`` only) and each record's row.

    Fully blank rows are skipped; columns with a blank header are ignored (a
    sheet's used range often runs past the data into formatted, empty columns).
    """
    try:
        from python_calamine import CalamineError, CalamineWorkbook
    except ImportError:
        raise DataError([Finding(Location(str(path)), f"reading {path.suffix.lower()} needs the xlsx extra: pip install 'assignment-engine[xlsx]'")]) from None
    try:
        with CalamineWorkbook.from_path(path) as workbook:
            if sheet is not None and sheet not in workbook.sheet_names:
                names = workbook.sheet_names
                raise DataError([Finding(Location(str(path)), f"no sheet named {shown(sheet)}{suggest(sheet, names)}; the sheets are {', '.join(map(shown, names))}")])
            grid = workbook.get_sheet_by_name(sheet) if sheet is not None else workbook.get_sheet_by_index(0)
            return _columns(path, grid.iter_rows(), wanted)
    except (CalamineError, OSError) as exc:  # not a workbook, a damaged one, password-protected; calamine's OSError has no strerror
        raise DataError([Finding(Location(str(path)), f"cannot read: {' '.join(str(exc).split())}")]) from None


def _columns(path: Path, lines: Any, wanted: set[str] | None) -> tuple[Columns, Sequence[int]]:
    """Columns from calamine rows; ``iter_rows`` yields every row from the sheet's first, so row = position + 1."""
    header: list[str] | None = None
    named: list[int] = []  # a row with text only under a blank header is blank
    keep: list[int] = []
    columns: list[list[Any]] = []
    # one string object per distinct value, as the CSV reader does: a million copies of "US" cost 50 MB
    caches: list[dict[str, str]] = []
    rows = array("l")
    for number, cells in enumerate(lines, start=1):
        if header is None:
            if any(c != "" for c in cells):
                header = [as_text(c).strip() for c in cells]
                named = [i for i, h in enumerate(header) if h]
                names = [header[i] for i in named]
                duplicated = sorted({h for h in names if names.count(h) > 1})
                if duplicated:
                    raise DataError([Finding(Location(str(path), number), f"duplicate column(s) in header: {', '.join(map(shown, duplicated))}")])
                keep = [i for i in named if wanted is None or header[i] in wanted]
                columns = [[] for _ in keep]
                caches = [{} for _ in keep]
            continue
        if all(cells[i] == "" for i in named):
            continue
        for column, cache, i in zip(columns, caches, keep):
            column.append(_cell(cells[i], cache))
        rows.append(number)
    if header is None:
        raise DataError([Finding(Location(str(path), 1), "the sheet is empty (expected a header row)")])
    return dict(zip([header[i] for i in keep], columns)), rows


def _cell(value: Any, cache: dict[str, str]) -> Any:
    """An empty cell as None, a whole float as int (Excel stores every number as a float), text interned."""
    if type(value) is str:
        if value == "":
            return None
        if len(cache) < _DISTINCT:
            return cache.setdefault(value, value)
        return cache.get(value, value)
    if type(value) is float and value.is_integer():
        return int(value)
    return value
