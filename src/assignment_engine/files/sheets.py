"""Read one sheet of a spreadsheet (``.xlsx``, ``.xlsm``, ``.xls``, ``.ods``) as a CSV is read (the ``xlsx`` extra).

python-calamine (a Rust reader) parses the workbook; cells keep their types:
text stays text, numbers stay numbers (so a postal code typed as 1234 is
reported in a text column instead of silently becoming ``'1234'``), dates are
``datetime.date``/``datetime``, empty cells are None. The first non-blank row is
the header; row numbers are the spreadsheet's own, so a message points at the
row a user sees in Excel.

calamine holds a sheet as one grid from A1 to its last cell (32 bytes a cell):
one cell at XFD1048576 in a 5 KB file asks for 549 GB and aborts the process.
So a workbook is checked first, with the standard library, against
:data:`MAX_CELLS`, :data:`MAX_UNPACKED` and :data:`MAX_RATIO` (see
:func:`check_workbook`); calamine reads only what passed.
"""

from __future__ import annotations

import re
import struct
import xml.etree.ElementTree as ET
import zipfile
import zlib
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from ..errors import DataError, Finding, Location, suggest
from ..rules.inputs import Columns, nfc
from ..tables.cells import DISTINCT, as_text, shown

MAX_CELLS = 20_000_000  # the grid calamine builds, A1 to the last cell: about 640 MB (a million rows of 20 columns)
MAX_UNPACKED = 1 << 30  # bytes a workbook's parts unpack to, together (a million rows of 20 columns is about 0.9 GB of XML)
MAX_RATIO = 200  # unpacked : packed of one part over 1 MiB (sheets pack 10-20 to 1; a zip bomb 500 to 1 and more)
_CHUNK = 1 << 24  # bytes of XML looked at a time
_HOW = "save the sheet as CSV, or remove what lies outside the data"
ERROR_VALUES = (
    "#NULL!",
    "#DIV/0!",
    "#VALUE!",
    "#REF!",
    "#NAME?",
    "#NUM!",
    "#N/A",
    "#GETTING_DATA",
    "#SPILL!",
    "#CALC!",
    "#FIELD!",
    "#BLOCKED!",
    "#CONNECT!",
    "#BUSY!",
    "#UNKNOWN!",
    "#EXTERNAL!",
    "#PYTHON!",
)


def read_sheet(path: Path, wanted: set[str] | None, sheet: str | None) -> tuple[Columns, Sequence[int]]:
    """The ``sheet`` named (else the first) as columns of cell values (``wanted`` only) and each record's row.

    Fully blank rows are skipped; columns with a blank header are ignored (a
    sheet's used range often runs past the data into formatted, empty columns).
    An error cell or a formula without a value in a column read is an error at its cell.
    """
    try:
        from python_calamine import CalamineError, CalamineWorkbook  # noqa: PLC0415  the xlsx extra
    except ImportError:
        raise DataError(
            [Finding(Location(str(path)), f"reading {path.suffix.lower()} needs the xlsx extra: pip install 'assignment-engine[xlsx]'")]
        ) from None
    suspects = check_workbook(path, sheet)
    try:
        with CalamineWorkbook.from_path(path) as workbook:
            if sheet is not None and sheet not in workbook.sheet_names:
                names = workbook.sheet_names
                raise DataError(
                    [
                        Finding(
                            Location(str(path)),
                            f"no sheet named {shown(sheet)}{suggest(sheet, names)}; the sheets are {', '.join(map(shown, names))}",
                        )
                    ]
                )
            grid = workbook.get_sheet_by_name(sheet) if sheet is not None else workbook.get_sheet_by_index(0)
            columns, rows, header = _columns(path, grid.iter_rows(), wanted)
            first = grid.start[1] if grid.start else 0  # iter_rows starts at row 1 but at the first column used
    except (CalamineError, OSError) as exc:  # not a workbook, a damaged one, password-protected; calamine's OSError has no strerror
        raise DataError([Finding(Location(str(path)), f"cannot read: {' '.join(str(exc).split())}")]) from None
    if suspects is not None:
        _refuse_error_cells(path, suspects(), header, first)
    return columns, rows


def _columns(path: Path, lines: Any, wanted: set[str] | None) -> tuple[Columns, Sequence[int], tuple[int, dict[int, str]]]:
    """Columns from calamine rows, and the header's row with the columns read (index → name);
    ``iter_rows`` yields every row from the sheet's first, so row = position + 1."""
    header: list[str] | None = None
    named: list[int] = []  # a row with text only under a blank header is blank
    keep: list[int] = []
    columns: list[list[Any]] = []
    # one string object per distinct value, as the CSV reader does: a million copies of "US" cost 50 MB
    caches: list[dict[str, str]] = []
    rows = array("l")
    start = 0
    for number, cells in enumerate(lines, start=1):
        if header is None:
            if any(c != "" for c in cells):
                header = [nfc(as_text(c).strip()) for c in cells]
                named = [i for i, h in enumerate(header) if h]
                names = [header[i] for i in named]
                duplicated = sorted({h for h in names if names.count(h) > 1})
                if duplicated:
                    raise DataError(
                        [Finding(Location(str(path), number), f"duplicate column(s) in header: {', '.join(map(shown, duplicated))}")]
                    )
                keep = [i for i in named if wanted is None or header[i] in wanted]
                columns = [[] for _ in keep]
                caches = [{} for _ in keep]
                start = number
            continue
        if all(cells[i] == "" for i in named):
            continue
        for column, cache, i in zip(columns, caches, keep, strict=True):
            column.append(_cell(cells[i], cache))
        rows.append(number)
    if header is None:
        raise DataError([Finding(Location(str(path), 1), "the sheet is empty (expected a header row)")])
    return dict(zip([header[i] for i in keep], columns, strict=True)), rows, (start, {i: header[i] for i in keep})


def _cell(value: Any, cache: dict[str, str]) -> Any:
    """An empty cell as None, a whole float as int (Excel stores every number as a float), text interned."""
    if type(value) is str:
        if value == "":
            return None
        if len(cache) < DISTINCT:
            return cache.setdefault(value, value)
        return cache.get(value, value)
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def _refuse_error_cells(path: Path, cells: Iterator[tuple[int, int, str]], header: tuple[int, dict[int, str]], first: int) -> None:
    """calamine reads ``#N/A`` and a formula never calculated as an empty cell: revenue would count as 0.

    ``cells`` are (row, column index, what) of such cells in the sheet; those under
    a column read, below its header, are errors (the first 50)."""
    start, names = header
    findings = [
        Finding(Location(str(path), row, column=names[col - first]), f"{what}: fix it in the workbook (or clear the cell) and save again")
        for row, col, what in cells
        if row > start and col - first in names
    ]
    if findings:
        raise DataError(findings[:50])


# --- checks before calamine reads a workbook ----------------------------------------------------------


def check_workbook(path: Path, sheet: str | None) -> Callable[[], Iterator[tuple[int, int, str]]] | None:
    """Refuse a workbook that would cost calamine more than the limits, before it reads a byte.

    For ``.xlsx``/``.xlsm`` and ``.ods`` (zip archives): every part is unpacked
    once and counted (the sizes an archive declares may lie) against
    :data:`MAX_UNPACKED` and :data:`MAX_RATIO`; the sheet to be read is scanned
    for its declared ``<dimension>`` and the cells it holds, whose grid from A1
    must stay within :data:`MAX_CELLS`. A legacy ``.xls`` holds at most 65,536
    × 256 cells (within the limit) and is bounded by its size. Returns, when the
    sheet has error cells or formulas without a value, what finds them again.
    """
    suffix = path.suffix.lower()
    if suffix == ".xls":
        size = path.stat().st_size
        if size > MAX_UNPACKED:
            raise DataError([Finding(Location(str(path)), f"the workbook is {size:,} bytes, over the limit of {MAX_UNPACKED:,}: {_HOW}")])
        return None
    try:
        with path.open("rb") as handle, zipfile.ZipFile(handle) as archive:
            book = _Archive(path, handle, archive)
            member = book.sheet_member(sheet) if suffix != ".ods" else "content.xml"
            scan: _OdsScan | _XlsxScan = _OdsScan(path, sheet) if suffix == ".ods" else _XlsxScan(path)
            for info in archive.infolist():
                if info.filename == member:
                    for chunk in _whole_pieces(book.unpack(info), b">" if suffix == ".ods" else None):
                        scan.feed(chunk)
                else:
                    for _ in book.unpack(info):
                        pass
            if not scan.suspect:
                return None
            return lambda: _error_cells(path, member)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, struct.error) as exc:
        raise DataError([Finding(Location(str(path)), f"cannot read: {' '.join(str(exc).split()) or 'not a workbook'}")]) from None


@dataclass
class _Archive:
    """A workbook's zip archive, its parts unpacked from the packed bytes themselves and counted."""

    path: Path
    handle: BinaryIO
    archive: zipfile.ZipFile
    unpacked: int = 0

    def unpack(self, info: zipfile.ZipInfo) -> Iterator[bytes]:
        """One part's bytes as calamine would unpack them, refused past the limits."""
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise DataError(
                [
                    Finding(
                        Location(str(self.path)),
                        f"cannot read: part {shown(info.filename)} is packed with method {info.compress_type}, not deflate",
                    )
                ]
            )
        self.handle.seek(info.header_offset)
        local = self.handle.read(30)
        if local[:4] != b"PK\x03\x04":
            raise zipfile.BadZipFile(f"part {info.filename!r} has no local header")
        self.handle.seek(info.header_offset + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little"))
        inflate = zlib.decompressobj(-15) if info.compress_type == zipfile.ZIP_DEFLATED else None
        left, size = info.compress_size, 0
        while left > 0:
            packed = self.handle.read(min(left, 1 << 20))
            if not packed:
                raise EOFError(f"part {info.filename!r} is cut short")
            left -= len(packed)
            while packed:
                piece = packed if inflate is None else inflate.decompress(packed, _CHUNK)
                packed = b"" if inflate is None else inflate.unconsumed_tail
                size += len(piece)
                self._count(info, len(piece), size)
                yield piece

    def _count(self, info: zipfile.ZipInfo, piece: int, size: int) -> None:
        self.unpacked += piece
        if self.unpacked > MAX_UNPACKED:
            raise DataError(
                [Finding(Location(str(self.path)), f"the workbook unpacks to more than {MAX_UNPACKED:,} bytes, the limit: {_HOW}")]
            )
        if size > 1 << 20 and size > MAX_RATIO * max(info.compress_size, 1):
            raise DataError(
                [
                    Finding(
                        Location(str(self.path)),
                        f"part {shown(info.filename)} unpacks to more than {MAX_RATIO} times its "
                        f"{info.compress_size:,} packed bytes, the limit (a zip bomb?): {_HOW}",
                    )
                ]
            )

    def read(self, name: str) -> bytes:
        """A small part (workbook, relationships) whole; b'' when absent."""
        try:
            info = self.archive.getinfo(name)
        except KeyError:
            return b""
        return b"".join(self.unpack(info))

    def sheet_member(self, sheet: str | None) -> str | None:
        """The part holding ``sheet`` (else the first), by the workbook's relationships; None when not found (calamine then says why)."""
        main = _target("", self.read("_rels/.rels"), "officeDocument") or "xl/workbook.xml"
        folder = str(PurePosixPath(main).parent)
        rels = self.read(f"{folder}/_rels/{PurePosixPath(main).name}.rels")
        sheets = [(e.get("name"), e.get(_R_ID)) for e in _xml(self.read(main)).iter() if e.tag.endswith("}sheet")]
        wanted = next((rid for name, rid in sheets if sheet is None or name == sheet), None)
        return _target(folder, rels, None, wanted) if wanted else None


_R_ID = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"


def _xml(data: bytes) -> ET.Element:
    """A small XML part (expat: no external entities, no entity expansion bombs)."""
    try:
        return ET.fromstring(data) if data else ET.Element("none")
    except ET.ParseError as exc:
        raise zipfile.BadZipFile(f"damaged workbook part: {exc}") from None


def _target(folder: str, rels: bytes, kind: str | None, rid: str | None = None) -> str | None:
    """The part a relationship names (by type ending in ``kind``, or by id), as a path in the archive."""
    for e in _xml(rels).iter():
        if e.tag.endswith("}Relationship") and ((kind and e.get("Type", "").endswith("/" + kind)) or (rid and e.get("Id") == rid)):
            target = e.get("Target", "")
            whole = target.lstrip("/") if target.startswith("/") else f"{folder}/{target}" if folder and folder != "." else target
            return str(PurePosixPath(whole))
    return None


def _whole_pieces(pieces: Iterator[bytes], end: bytes | None) -> Iterator[bytes]:
    """XML cut where a cell ends (``</c>``, a row's tag; ``end`` for other formats), so no cell straddles two pieces."""
    held = b""
    for piece in pieces:
        held += piece
        if len(held) < _CHUNK:
            continue
        ends = [(held.rfind(e), len(e)) for e in ((end,) if end else (b"c>", b"row>"))]
        cut = max(at + size if at >= 0 else 0 for at, size in ends)
        if cut > 0:
            yield held[:cut]
            held = held[cut:]
    if held:
        yield held


_DIMENSION = re.compile(rb'<(?:[\w.-]+:)?dimension\s+ref="\$?([A-Z]{1,3})\$?([0-9]{1,7})(?::\$?([A-Z]{1,3})\$?([0-9]{1,7}))?"')
_ROW_TAGS = re.compile(rb'<row r="0*([0-9]+)"')
_COLUMNS = re.compile(rb'<c r="([A-Z]+)')
_TAG = re.compile(rb"<(?:[\w.-]+:)?(row|c)(?=[\s/>])([^>]*)>")
_REF = re.compile(rb'(?:^|\s)r\s*=\s*["\']([A-Z]*)([0-9]*)["\']')
_NS = r"(?:[\w.-]+:)?"
# an error cell; a formula cell with no value or an empty one (its cached value never calculated)
_FORMULA = rf"<{_NS}f\b[^>]*(?:/>|>[^<]*</{_NS}f>)"
_ERROR = re.compile(rf'<{_NS}c\s([^>]*\bt=["\']e["\'][^>]*)>\s*(?:{_FORMULA})?\s*<{_NS}v>([^<]*)</{_NS}v>'.encode())
_UNCALCULATED = re.compile(
    rf'<{_NS}c\s((?:(?!\bt=["\']str)[^>])*)>\s*{_FORMULA}\s*(?:<{_NS}v\s*/>|<{_NS}v>\s*</{_NS}v>)?\s*</{_NS}c>'.encode()
)


def column_number(letters: bytes | str) -> int:
    """A column's letters as its number: A is 1, XFD 16,384."""
    n = 0
    for ch in letters.decode() if isinstance(letters, bytes) else letters:
        n = n * 26 + ord(ch) - 64
    return n


def column_letters(number: int) -> str:
    """A column's number as its letters: 1 is A, 16,384 XFD."""
    letters = ""
    while number > 0:
        number, rest = divmod(number - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def _above(value: str, digits: bool) -> str:
    """A pattern for the numbers (``digits``) or column letters greater than ``value``: more of them, or as many and
    greater at the first place they differ. A search for what exceeds the extent so far, instead of reading every ref."""
    every, high = ("0-9", "9") if digits else ("A-Z", "Z")
    options = [f"[{'1-9' if digits else 'A-Z'}][{every}]{{{len(value)},}}"]
    for i, ch in enumerate(value):
        if ch < high:
            options.append(f"{value[:i]}[{chr(ord(ch) + 1)}-{high}][{every}]{{{len(value) - i - 1}}}")
    return "(?:" + "|".join(options) + ")"


def _too_big(path: Path, what: str, cells: int) -> None:
    if cells > MAX_CELLS:
        raise DataError(
            [Finding(Location(str(path)), f"{what}, a grid of {cells:,} cells from A1: over the limit of {MAX_CELLS:,}: {_HOW}")]
        )


@dataclass
class _XlsxScan:
    """A worksheet's extent from the cells it holds (and the ``<dimension>`` it declares), a piece at a time.

    Writers put every cell and row as ``<c r="B2"`` / ``<row r="2"``: then the extent
    is the last row's number and the widest column, each checked by one search for a
    reference beyond it (about 0.8 s a million cells, with the unpacking). Other XML (no references,
    prefixed tags) is walked tag by tag."""

    path: Path
    rows: int = 0
    columns: int = 0
    row: int = 0  # where the last row and cell were, for those that do not say (a piece may end inside a row)
    column: int = 0
    suspect: bool = False
    started: bool = False

    def feed(self, xml: bytes) -> None:
        if not self.started:
            self.started = True
            end = xml.find(b"sheetData")
            if (declared := _DIMENSION.search(xml, 0, end if end >= 0 else 1 << 20)) is not None:
                last = (int(declared[4] or declared[2]), column_number(declared[3] or declared[1]))
                area = (
                    f"{declared[1].decode()}{declared[2].decode()}:"
                    f"{(declared[3] or declared[1]).decode()}{(declared[4] or declared[2]).decode()}"
                )
                _too_big(self.path, f"the sheet declares the cell area {area}", last[0] * last[1])
        formulas = b"<f" in xml or b":f" in xml
        self.suspect = self.suspect or b't="e"' in xml or b"t='e'" in xml or (formulas and _UNCALCULATED.search(xml) is not None)
        lo, hi = max(xml.find(b"<sheetData"), 0), xml.find(b"</sheetData")
        hi = len(xml) if hi < 0 else hi  # in sheetData only rows, cells and their parts start with <c or <row
        cells, rows = xml.count(b"<c", lo, hi), xml.count(b"<row", lo, hi)
        if (
            xml.count(b'<c r="', lo, hi) != cells
            or xml.count(b'<row r="', lo, hi) != rows
            or xml.find(b":c", lo, hi) >= 0
            or xml.find(b":row", lo, hi) >= 0
        ):
            self._implied(xml)
            return
        self._grow(
            max(map(int, _ROW_TAGS.findall(xml)), default=0), max(map(column_number, set(_COLUMNS.findall(xml, 0, 1 << 16))), default=0)
        )
        lower = re.findall(
            rf'<c r="[A-Z]+0*({_above(str(self.rows), True)})"'.encode(), xml
        )  # a cell below its row (calamine goes by the cell's)
        wider = re.findall(rf'<c r="({_above(column_letters(self.columns), False)})[0-9]'.encode(), xml)
        self._grow(max(map(int, lower), default=0), max(map(column_number, wider), default=0))
        self.row, self.column = self.rows, 0

    def _implied(self, xml: bytes) -> None:
        """Cells and rows without a reference are where the previous one was, plus one (slow: rare writers only)."""
        for name, attributes in _TAG.findall(xml):
            ref = _REF.search(attributes)
            if name == b"row":
                self.row, self.column = (int(ref[2]) if ref and ref[2] else self.row + 1), 0
            else:
                self.column = column_number(ref[1]) if ref and ref[1] else self.column + 1
                self._grow(int(ref[2]) if ref and ref[2] else self.row, self.column)

    def _grow(self, row: int, column: int) -> None:
        self.rows, self.columns = max(self.rows, row), max(self.columns, column)
        _too_big(
            self.path,
            f"the sheet holds a cell in row {self.rows:,} and one in column {column_letters(self.columns)}",
            self.rows * self.columns,
        )


_ODS_TAG = re.compile(rb"<(/?)table:(table-row|table-cell|covered-table-cell|table)(?=[\s/>])([^>]*?)(/?)>")
_ODS_REPEAT = re.compile(rb'table:number-(?:rows|columns)-repeated="([0-9]+)"')
_ODS_NAME = re.compile(rb'table:name="([^"]*)"')


@dataclass
class _OdsScan:
    """The grid of the table to read in an OpenDocument spreadsheet, repeated rows and cells counted out
    (a 1 KB file may repeat one cell over a million rows); a Python loop per tag, as such files are small."""

    path: Path
    name: str | None
    tables: int = 0
    reading: bool = False
    row: int = 0
    column: int = 0
    repeat: int = 1
    rows: int = 0
    columns: int = 0
    suspect: bool = False  # error cells are not looked for in OpenDocument (calamine reads their text)

    def feed(self, xml: bytes) -> None:
        for close, tag, attributes, empty in _ODS_TAG.findall(xml):
            if tag == b"table":
                if not close:
                    self.tables += 1
                    name = _ODS_NAME.search(attributes)
                    self.reading = (
                        (self.tables == 1) if self.name is None else (name is not None and name[1].decode("utf-8", "replace") == self.name)
                    )
                continue
            if not self.reading:
                continue
            repeat = _ODS_REPEAT.search(attributes)
            count = int(repeat[1]) if repeat else 1
            if tag == b"table-row":
                if not close:
                    self.repeat, self.column = count, 0
                if close or empty:
                    self.row += self.repeat
            elif not close:
                if not empty or b"value-type" in attributes:  # a cell with content: calamine keeps it
                    self.rows, self.columns = max(self.rows, self.row + self.repeat), max(self.columns, self.column + count)
                    _too_big(
                        self.path,
                        f"the sheet holds, its repeated rows and cells counted out, {self.rows:,} rows by {self.columns:,} columns",
                        self.rows * self.columns,
                    )
                self.column += count


def _error_cells(path: Path, member: str | None) -> Iterator[tuple[int, int, str]]:
    """(row, column index, what) of every error cell and formula without a value in the sheet (a second pass, only when it has any)."""
    with path.open("rb") as handle, zipfile.ZipFile(handle) as archive:
        book = _Archive(path, handle, archive)
        for xml in _whole_pieces(book.unpack(archive.getinfo(str(member))), None):
            found = [(m.start(), m[1], f"{m[2].decode('utf-8', 'replace')} is an Excel error, not a value") for m in _ERROR.finditer(xml)]
            found += [
                (m.start(), m[1], "a formula without a calculated value (the file was saved by a program that does not calculate)")
                for m in _UNCALCULATED.finditer(xml)
            ]
            for _, attributes, what in sorted(found):
                ref = _REF.search(attributes)
                if ref is None or not ref[1] or not ref[2]:
                    raise DataError([Finding(Location(str(path)), f"{what}, in a cell that does not say where it is: {_HOW}")])
                yield int(ref[2]), column_number(ref[1]) - 1, what
