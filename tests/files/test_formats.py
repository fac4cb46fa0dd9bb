"""Spreadsheets and Parquet in, Parquet out: the same records as the CSV, typed cells kept, located errors."""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from assignment_engine import DataError, OptionError, demo_files, load_rules, read_accounts, read_users
from assignment_engine.batch import assign_files
from assignment_engine.cli import main
from assignment_engine.files import parquet as parquet_module
from assignment_engine.files import sheets
from assignment_engine.files.parquet import require_pyarrow, write_parquet
from assignment_engine.files.readers import read_columns, read_pairs
from assignment_engine.plan.deals import read_deals
from conftest import write_xlsx

Columns = dict[str, list[Any]]


def xlsx_of(path: Path, columns: Columns) -> Path:
    names = list(columns)
    return write_xlsx(path, {"Export": [names, *map(list, zip(*columns.values(), strict=True))]})


def parquet_of(path: Path, columns: Columns) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def typed(path: Path, kinds: dict[str, str]) -> Columns:
    """A CSV's columns with each value as a spreadsheet or Parquet export holds it: numbers, booleans, dates, None."""

    def cell(text: str, kind: str) -> Any:
        if text == "":
            return None
        if kind in ("number", "integer"):
            return float(text) if kind == "number" else int(text)
        if kind == "boolean":
            return text == "true"
        if kind == "date":
            return dt.date.fromisoformat(text)
        return text

    with path.open(newline="", encoding="utf-8") as handle:
        records = list(csv.DictReader(handle))
    return {name: [cell(r[name], kinds.get(name, "string")) for r in records] for name in records[0]}


@pytest.fixture(scope="module")
def demo() -> dict[str, Any]:
    files = demo_files()
    rules = load_rules(files["rules"])
    return {"files": files, "rules": rules}


@pytest.fixture(scope="module")
def copies(demo, tmp_path_factory) -> dict[str, dict[str, Path]]:
    """The demo's accounts, users, opportunities and a pairs file as CSV, .xlsx and .parquet."""
    rules, files = demo["rules"], demo["files"]
    base = tmp_path_factory.mktemp("copies")
    pairs = base / "pairs.csv"
    pairs.write_text(
        "account_id,user_id,cost,workload\n" + "".join(f"A{i:07d},u{6 + i % 30:02d},{i % 5},{i * 1.5}\n" for i in range(1, 41)),
        encoding="utf-8",
    )
    kinds = {
        "accounts": {**rules.field_types, "locked": "boolean", "excluded": "boolean"},
        "users": {"weight": "number", "active": "boolean"},
        "opportunities": {**rules.deal_field_types, "locked": "boolean", "excluded": "boolean"},
        "pairs": {"cost": "number", "workload": "number"},
    }
    sources = {"accounts": files["accounts"], "users": files["users"], "opportunities": files["opportunities"], "pairs": pairs}
    out: dict[str, dict[str, Path]] = {}
    for role, source in sources.items():
        columns = typed(source, kinds[role])
        out[role] = {
            "csv": source,
            "xlsx": xlsx_of(base / f"{role}.xlsx", columns),
            "parquet": parquet_of(base / f"{role}.parquet", columns),
        }
    return out


def records(table) -> list[dict[str, Any]]:
    return [table.record(i) for i in range(len(table))]


# --- the readers of readers.py on every format ----------------------------------------------------


@pytest.mark.parametrize("fmt", ["xlsx", "parquet"])
def test_accounts_read_as_from_the_csv(demo, copies, fmt):
    expected = read_accounts(copies["accounts"]["csv"], demo["rules"].field_types)
    table = read_accounts(copies["accounts"][fmt], demo["rules"].field_types)
    assert table.ids == expected.ids
    assert records(table) == records(expected)
    assert list(table.rows) == list(expected.rows)  # the spreadsheet row is the CSV line: messages point at the same record
    assert table.record(1)["postal_code"] == "06004"  # text cells keep their leading zeros


@pytest.mark.parametrize("fmt", ["xlsx", "parquet"])
def test_users_deals_and_pairs_read_as_from_the_csv(demo, copies, fmt):
    rules = demo["rules"]
    measures = list(rules.measures)
    assert read_users(copies["users"][fmt], measures) == read_users(copies["users"]["csv"], measures)
    accounts = read_accounts(copies["accounts"]["csv"], rules.field_types)
    deals, expected = read_deals(copies["opportunities"][fmt], rules, accounts), read_deals(copies["opportunities"]["csv"], rules, accounts)
    assert records(deals.table) == records(expected.table)
    assert deals.account.tolist() == expected.account.tolist()
    assert deals.previous_overlay == expected.previous_overlay
    users = read_users(copies["users"]["csv"], measures)
    pairs, expected_pairs = read_pairs(copies["pairs"][fmt], accounts, users), read_pairs(copies["pairs"]["csv"], accounts, users)
    for name in ("account", "user", "cost", "workload"):
        np.testing.assert_array_equal(getattr(pairs, name), getattr(expected_pairs, name))


# --- spreadsheets ------------------------------------------------------------------------------------


@pytest.fixture
def workbook(tmp_path) -> Path:
    return write_xlsx(
        tmp_path / "book.xlsx",
        {
            "Accounts": [
                ["id", " postal_code ", "revenue", "signed", "active", "note"],
                ["A1", 1234, 1.5, dt.date(2024, 1, 2), True, "x"],
                [None, None, None, None, None, None],
                ["A2", "01234", 2000.0, dt.datetime(2024, 3, 4, 5, 6), False, None],
            ],
            "Users": [["id", "name"], ["u1", "One"]],
        },
    )


def test_the_first_sheet_is_read_with_typed_cells(workbook):
    columns, rows = read_columns(workbook)
    assert list(rows) == [2, 4]  # the blank row 3 is skipped, as a blank CSV line is
    assert columns["postal_code"] == [1234, "01234"]  # header stripped; a number stays a number (the typing layer reports it)
    assert type(columns["postal_code"][0]) is int
    assert columns["revenue"] == [1.5, 2000] and type(columns["revenue"][1]) is int
    assert columns["signed"] == [dt.date(2024, 1, 2), dt.datetime(2024, 3, 4, 5, 6)]
    assert columns["active"] == [True, False]
    assert columns["note"] == ["x", None]


def test_only_wanted_columns_of_a_named_sheet(workbook):
    columns, rows = read_columns(workbook, {"name", "absent"}, "Users")
    assert columns == {"name": ["One"]}
    assert list(rows) == [2]


def test_an_unknown_sheet_names_the_sheets(workbook):
    with pytest.raises(DataError) as caught:
        read_columns(workbook, None, "Acounts")
    assert str(caught.value) == f"{workbook}: no sheet named 'Acounts' (did you mean 'Accounts'?); the sheets are 'Accounts', 'Users'"


def test_dates_in_a_sheet_are_read_as_dates(tmp_path):
    path = write_xlsx(
        tmp_path / "a.xlsx", {"S": [["id", "signed"], ["A1", dt.date(2024, 1, 2)], ["A2", dt.datetime(2024, 3, 4, 23, 59)], ["A3", None]]}
    )
    table = read_accounts(path, {"signed": "date"})
    assert [table.record(i)["signed"] for i in range(3)] == [dt.date(2024, 1, 2), dt.date(2024, 3, 4), None]


def test_rows_are_the_spreadsheet_rows(tmp_path):
    """Blank rows above the header and between records, and a note under a blank header, leave row numbers as Excel shows them."""
    path = write_xlsx(tmp_path / "a.xlsx", {"S": [[], [None, "id", "revenue"], [None, "A1", 5], [], [None, "A2", "lots"], ["see row 5"]]})
    columns, rows = read_columns(path)
    assert columns == {"id": ["A1", "A2"], "revenue": [5, "lots"]}
    assert list(rows) == [3, 5]
    with pytest.raises(DataError) as caught:
        read_accounts(path, {"revenue": "number"})
    assert str(caught.value) == f"{path}:5:revenue: 'lots' is not a number"


def test_a_sheet_without_records_or_header(tmp_path):
    columns, rows = read_columns(write_xlsx(tmp_path / "h.xlsx", {"S": [["id", "name"]]}))
    assert columns == {"id": [], "name": []} and list(rows) == []
    empty = write_xlsx(tmp_path / "e.xlsx", {"S": []})
    with pytest.raises(DataError, match=r"e\.xlsx:1: the sheet is empty \(expected a header row\)"):
        read_columns(empty)


def test_a_duplicate_header_in_a_sheet(tmp_path):
    path = write_xlsx(tmp_path / "d.xlsx", {"S": [[], ["id", "id ", "name"], ["A1", "A2", "x"]]})
    with pytest.raises(DataError) as caught:
        read_columns(path)
    assert str(caught.value) == f"{path}:2: duplicate column(s) in header: 'id'"


@pytest.mark.parametrize("content", [b"", b"not a workbook", b"PK\x03\x04 truncated zip"])
def test_a_damaged_workbook_cannot_be_read(tmp_path, content):
    path = tmp_path / "bad.xlsx"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"^\S+bad\.xlsx: cannot read: \S") as caught:
        read_columns(path)
    assert "\n" not in str(caught.value)


def test_reading_a_sheet_without_the_extra_says_what_to_install(workbook, monkeypatch):
    monkeypatch.setitem(sys.modules, "python_calamine", None)
    with pytest.raises(DataError) as caught:
        read_columns(workbook)
    assert str(caught.value) == f"{workbook}: reading .xlsx needs the xlsx extra: pip install 'assignment-engine[xlsx]'"


# --- Parquet in --------------------------------------------------------------------------------------


def salesforce_like(path: Path) -> Path:
    address = pa.struct([("country", pa.string()), ("city", pa.string()), ("geo", pa.struct([("lat", pa.float64())]))])
    table = pa.table(
        {
            "Id": ["001A", "001B", "001C"],
            "BillingAddress": pa.array(
                [{"country": "US", "city": "Austin", "geo": {"lat": 30.3}}, None, {"country": "DE", "city": None, "geo": None}], address
            ),
            "Tags": [["a", "b"], [], None],
            "AnnualRevenue": pa.array([decimal.Decimal("1200.50"), None, decimal.Decimal(7)], pa.decimal128(12, 2)),
            "CreatedDate": pa.array([dt.datetime(2024, 1, 2, 3, 4), None, dt.datetime(2023, 5, 6)], pa.timestamp("ns", "UTC")),
            "IsDeleted": [False, None, True],
        }
    )
    pq.write_table(table, path)
    return path


def test_struct_fields_by_dotted_path(tmp_path):
    path = salesforce_like(tmp_path / "accounts.parquet")
    columns, rows = read_columns(path, {"Id", "BillingAddress.country", "BillingAddress.geo.lat"})
    assert columns == {
        "Id": ["001A", "001B", "001C"],
        "BillingAddress.country": ["US", None, "DE"],
        "BillingAddress.geo.lat": [30.3, None, None],
    }
    assert list(rows) == [2, 3, 4]


def test_parquet_values_are_python_values(tmp_path):
    columns, _ = read_columns(salesforce_like(tmp_path / "a.parquet"))
    assert sorted(columns) == [
        "AnnualRevenue",
        "BillingAddress.city",
        "BillingAddress.country",
        "BillingAddress.geo.lat",
        "CreatedDate",
        "Id",
        "IsDeleted",
        "Tags",
    ]
    assert columns["Tags"] == ['["a", "b"]', "[]", None]  # a list as its JSON text, as in JSON Lines
    assert columns["AnnualRevenue"] == [1200.5, None, 7.0]
    assert columns["CreatedDate"][0] == dt.datetime(2024, 1, 2, 3, 4, tzinfo=dt.UTC) and type(columns["CreatedDate"][0]) is dt.datetime
    assert columns["IsDeleted"] == [False, None, True]


def test_only_the_wanted_columns_are_read_from_parquet(tmp_path, monkeypatch):
    path = salesforce_like(tmp_path / "a.parquet")
    asked: list[list[str]] = []
    batches = pq.ParquetFile.iter_batches
    monkeypatch.setattr(
        pq.ParquetFile, "iter_batches", lambda self, columns=None, **kw: asked.append(columns) or batches(self, columns=columns, **kw)
    )
    columns, _ = read_columns(path, {"Id", "BillingAddress.city", "Missing"})
    assert asked == [["Id", "BillingAddress.city"]]  # nothing else decoded
    assert list(columns) == ["Id", "BillingAddress.city"]


def test_an_empty_parquet_file_has_its_columns_and_no_records(tmp_path):
    path = parquet_of(tmp_path / "a.parquet", {"id": pa.array([], pa.string()), "revenue": pa.array([], pa.float64())})
    columns, rows = read_columns(path)
    assert columns == {"id": [], "revenue": []} and list(rows) == []
    assert len(read_accounts(path, {"revenue": "number"})) == 0


def test_a_duplicate_parquet_column(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array(["A1"]), pa.array(["A2"])], names=["id", " id"]), path)
    with pytest.raises(DataError) as caught:
        read_columns(path)
    assert str(caught.value) == f"{path}:1: duplicate column(s) in header: 'id'"


@pytest.mark.parametrize("content", [b"", b"PAR1 not really PAR1", b"id,name\nA1,x\n"])
def test_a_damaged_parquet_file_cannot_be_read(tmp_path, content):
    path = tmp_path / "bad.parquet"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"^\S+bad\.parquet: cannot read: \S") as caught:
        read_columns(path)
    assert "\n" not in str(caught.value)


def test_a_damaged_page_names_its_column(tmp_path):
    path = tmp_path / "page.parquet"
    pq.write_table(
        pa.table({"id": [f"A{i}" for i in range(50)], "owner_id": [f"u{i % 3}" for i in range(50)]}),
        path,
        compression="none",
        use_dictionary=False,
    )
    offset = pq.ParquetFile(path).metadata.row_group(0).column(1).data_page_offset
    with path.open("r+b") as handle:  # the page header of owner_id's first page, overwritten
        handle.seek(offset)
        handle.write(b"\xff" * 16)
    with pytest.raises(DataError) as caught:
        read_columns(path)
    assert str(caught.value).startswith(f"{path}: cannot read column 'owner_id' from row 2 on: ")
    assert read_columns(path, {"id"})[0]["id"][:2] == ["A0", "A1"]  # the column that is whole still reads


def test_a_value_python_cannot_hold_names_its_column_and_batch(tmp_path):
    path = tmp_path / "late.parquet"
    days = pa.array([0, 1, 3_000_000], type=pa.int32()).cast(pa.date32())  # the last one is in the year 10183
    pq.write_table(pa.table({"id": ["A1", "A2", "A3"], "close_date": days}), path)
    with pytest.raises(DataError) as caught:
        read_columns(path)
    assert str(caught.value).startswith(f"{path}: cannot read column 'close_date' from row 2 on: ")
    with pytest.raises(DataError) as caught:
        list(parquet_module.parquet_chunks(path, None, 2))  # two records a batch: the second batch holds it
    assert str(caught.value).startswith(f"{path}: cannot read column 'close_date' from row 4 on: ")


def test_reading_parquet_without_the_extra_says_what_to_install(tmp_path, monkeypatch):
    path = salesforce_like(tmp_path / "a.parquet")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(DataError) as caught:
        read_columns(path)
    assert str(caught.value) == f"{path}: reading .parquet needs the parquet extra: pip install 'assignment-engine[parquet]'"
    with pytest.raises(OptionError, match=r"^--parquet: writing Parquet needs the parquet extra"):
        require_pyarrow()


# --- Parquet out -------------------------------------------------------------------------------------


def test_write_parquet_types_and_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(parquet_module, "BATCH", 2)  # three batches, the first of them without any owner list
    rows = [
        {"id": "A1", "value": 1.5, "size": 1, "moved": True, "owners": [], "note": None},
        {"id": "A2", "value": 2.0, "size": 2, "moved": False, "owners": [], "note": None},
        {"id": "A3", "value": 0.0, "size": 3, "moved": False, "owners": ["u1", "u2"], "note": "x"},
        {"id": "A4", "value": 4.0, "size": 4, "moved": True, "owners": ["u3"], "note": None},
        {"id": "A5", "value": 5.0, "size": 5, "moved": True, "owners": [], "note": None},
    ]
    path = tmp_path / "p.parquet"
    write_parquet(path, ["id", "value", "size", "moved", "owners", "note"], iter(rows))
    table = pq.read_table(path)
    assert table.schema.types == [pa.string(), pa.float64(), pa.int64(), pa.bool_(), pa.list_(pa.string()), pa.string()]
    assert table.to_pylist() == rows
    assert pq.ParquetFile(path).metadata.num_row_groups == 3


def test_write_parquet_of_no_rows(tmp_path):
    path = tmp_path / "p.parquet"
    write_parquet(path, ["id", "owner_id"], [])
    table = pq.read_table(path)
    assert table.num_rows == 0 and table.column_names == ["id", "owner_id"]


def test_a_plan_written_as_parquet_holds_what_the_json_lines_hold(demo, tmp_path):
    files = demo["files"]
    out = tmp_path / "plan"
    run = assign_files(
        files["rules"],
        files["accounts"],
        files["users"],
        out,
        parquet=True,
        report=False,
        opportunities=files["opportunities"],
        workers=1,
        effort=1.0,
    )
    for name in ("accounts", "opportunities"):
        lines = [json.loads(line) for line in (out / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]
        assert pq.read_table(out / f"{name}.parquet").to_pylist() == lines
    schema = pq.read_schema(out / "accounts.parquet")
    assert (
        schema.field("moved").type == pa.bool_()
        and schema.field("value").type == pa.float64()
        and schema.field("family_size").type == pa.int64()
    )
    assert pq.read_schema(out / "opportunities.parquet").field("overlay_owner_ids").type == pa.list_(pa.string())
    assert {"accounts.parquet", "opportunities.parquet"} <= set(json.loads((out / "plan.json").read_text(encoding="utf-8"))["outputs"])
    assert run.summary["opportunities"]


def test_assign_parquet_flag(tmp_path):
    files = demo_files()
    out = tmp_path / "plan"
    args = ["assign", "--rules", str(files["rules"]), "--accounts", str(files["accounts"]), "--users", str(files["users"])]
    result = CliRunner().invoke(main, [*args, "--out", str(out), "--workers", "1", "--effort", "0.5", "--quiet", "--parquet"])
    assert result.exit_code == 0, result.output
    assert pq.read_table(out / "accounts.parquet").num_rows == 2000


def test_assign_parquet_without_pyarrow_stops_before_any_work(tmp_path, monkeypatch):
    files = demo_files()
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    out = tmp_path / "plan"
    args = ["assign", "--rules", str(files["rules"]), "--accounts", str(files["accounts"]), "--users", str(files["users"])]
    result = CliRunner().invoke(main, [*args, "--out", str(out), "--parquet"])
    assert result.exit_code == 2
    assert result.stderr == "--parquet: writing Parquet needs the parquet extra: pip install 'assignment-engine[parquet]'\n"
    assert not out.exists()


# --- spreadsheets checked before calamine reads them ------------------------------------------------

_PARTS = {
    "[Content_Types].xml": '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default '
    'Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/worksheets/sheet1.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>',
    "_rels/.rels": '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
    'Target="xl/workbook.xml"/></Relationships>',
    "xl/workbook.xml": '<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets><sheet '
    'name="S" sheetId="1" r:id="rId1"/></sheets></workbook>',
    "xl/_rels/workbook.xml.rels": '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" '
    'Target="worksheets/sheet1.xml"/></Relationships>',
}


def crafted_xlsx(path: Path, cells: str, dimension: str | None = None, padding: int = 0) -> Path:
    """A minimal workbook (the parts calamine needs) whose one sheet holds ``cells`` (XML rows) after a header id, revenue."""
    declared = f'<dimension ref="{dimension}"/>' if dimension else ""
    header = '<row r="1"><c r="A1" t="inlineStr"><is><t>id</t></is></c><c r="B1" t="inlineStr"><is><t>revenue</t></is></c></row>'
    sheet = (
        f'<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">{declared}'
        f"<sheetData>{header}{cells}</sheetData>{' ' * padding}</worksheet>"
    )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in _PARTS.items():
            archive.writestr(name, text)
        archive.writestr("xl/worksheets/sheet1.xml", sheet)
    return path


def _read_in_a_child(path: Path) -> subprocess.CompletedProcess[str]:
    """Read ``path`` as accounts in another process: a regression aborting in calamine must not take pytest with it."""
    code = (
        f"from assignment_engine import read_accounts, DataError\ntry:\n    read_accounts({str(path)!r}, "
        "{'revenue': 'number'})\nexcept DataError as e:\n    print(e)\n    raise SystemExit(1)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60, env=env)


_A = '<row r="2"><c r="A2" t="inlineStr"><is><t>A1</t></is></c><c r="B2"><v>5</v></c></row>'


@pytest.mark.parametrize(
    ("cells", "dimension", "says"),
    [
        (
            _A + '<row r="1048576"><c r="XFD1048576"><v>1</v></c></row>',
            None,
            "a cell in row 1,048,576 and one in column XFD, a grid of 17,179,869,184 cells",
        ),
        (
            _A + '<row r="1048576"><c r="CV1048576"><v>1</v></c></row>',
            "A1:B2",
            "a cell in row 1,048,576 and one in column CV, a grid of 104,857,600 cells",
        ),
        (_A.replace('r="B2"', 'r="CV1048576"'), None, "a cell in row 1,048,576 and one in column CV"),  # a cell's own row, not its row's
        (
            _A + '<row r="3"><c r="A3"><v>1</v></c>' + "<c><v>1</v></c>" * 40 + '</row><row r="600000"><c r="A600000"><v>1</v></c></row>',
            None,
            "row 600,000 and one in column AO, a grid of 24,600,000 cells",
        ),  # cells without r: where the previous one was, plus one
        (_A, "A1:XFD1048576", "declares the cell area A1:XFD1048576, a grid of 17,179,869,184 cells"),
    ],
)
def test_a_sheet_over_the_cell_limit_is_refused_before_calamine_reads_it(tmp_path, cells, dimension, says):
    """A 5 KB workbook with one far cell made calamine ask for 549 GB and abort (exit 134); now a located error, at once."""
    path = crafted_xlsx(tmp_path / "far.xlsx", cells, dimension)
    started = time.monotonic()
    child = _read_in_a_child(path)
    assert (child.returncode, child.stderr) == (1, "")
    assert time.monotonic() - started < 20
    assert child.stdout.startswith(f"{path}: the sheet ") and says in child.stdout
    assert f"over the limit of {sheets.MAX_CELLS:,}: save the sheet as CSV" in child.stdout


def test_a_zip_bomb_is_refused_by_its_ratio_and_its_size(tmp_path, monkeypatch):
    bomb = crafted_xlsx(tmp_path / "bomb.xlsx", _A, padding=50 << 20)  # 50 MB of blanks pack to 50 KB
    with pytest.raises(
        DataError, match=r"bomb\.xlsx: part 'xl/worksheets/sheet1\.xml' unpacks to more than 200 times its [0-9,]+ packed bytes"
    ):
        read_columns(bomb)
    monkeypatch.setattr(sheets, "MAX_RATIO", 10_000)
    monkeypatch.setattr(sheets, "MAX_UNPACKED", 10 << 20)
    with pytest.raises(DataError, match=r"bomb\.xlsx: the workbook unpacks to more than 10,485,760 bytes, the limit"):
        read_columns(bomb)


def test_sizes_an_archive_declares_are_not_trusted(tmp_path, monkeypatch):
    """A part whose header says 1 KB unpacks to what its packed bytes hold: that is what is counted."""
    path = crafted_xlsx(tmp_path / "liar.xlsx", _A, padding=3 << 20)
    original = zipfile.ZipFile.infolist

    def lying(self):
        infos = original(self)
        for info in infos:
            info.file_size = 1000
        return infos

    monkeypatch.setattr(zipfile.ZipFile, "infolist", lying)
    monkeypatch.setattr(sheets, "MAX_UNPACKED", 2 << 20)
    with pytest.raises(DataError, match="unpacks to more than 2,097,152 bytes"):
        sheets.check_workbook(path, None)


def test_an_ods_repeating_one_cell_over_a_grid_is_refused(tmp_path):
    content = (
        '<?xml version="1.0" encoding="UTF-8"?><office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
        'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2">'
        "<office:body><office:spreadsheet><table:table "
        'table:name="S"><table:table-row><table:table-cell office:value-type="string"><text:p>id</text:p>'
        "</table:table-cell></table:table-row><table:table-row "
        'table:number-rows-repeated="1000000"><table:table-cell table:number-columns-repeated="1000" '
        'office:value-type="string"><text:p>x</text:p></table:table-cell></table:table-row></table:table></office:spreadsheet></office:body></office:document-content>'
    )
    path = tmp_path / "r.ods"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("mimetype", "application/vnd.oasis.opendocument.spreadsheet", compress_type=zipfile.ZIP_STORED)
        archive.writestr("content.xml", content)
    child = _read_in_a_child(path)
    assert (
        child.returncode == 1 and "1,000,001 rows by 1,000 columns, a grid of 1,000,001,000 cells from A1: over the limit" in child.stdout
    )


def test_a_sheet_within_the_limits_is_read_whatever_it_declares_within_them(tmp_path):
    path = crafted_xlsx(
        tmp_path / "ok.xlsx", _A + '<row r="9"><c r="A9" t="inlineStr"><is><t>A9</t></is></c><c r="B9"><v>7</v></c></row>', "A1:T1000000"
    )
    table = read_accounts(path, {"revenue": "number"})
    assert table.ids.tolist() == ["A1", "A9"] and list(table.rows) == [2, 9]


_UNCALCULATED = "a formula without a calculated value (the file was saved by a program that does not calculate)"


@pytest.mark.parametrize(
    ("cell", "says"),
    [
        ('<c r="B3" t="e"><v>#N/A</v></c>', "#N/A is an Excel error, not a value"),
        ('<c r="B3" t="e"><f>1/0</f><v>#DIV/0!</v></c>', "#DIV/0! is an Excel error, not a value"),
        ('<c r="B3"><f>SUM(B2:B2)</f><v></v></c>', _UNCALCULATED),
        ('<c r="B3"><f>SUM(B2:B2)</f></c>', _UNCALCULATED),
    ],
)
def test_an_error_cell_is_a_located_error_not_a_missing_value(tmp_path, cell, says):
    """calamine reads #N/A and an uncalculated formula as an empty cell: revenue counted as 0, silently."""
    path = crafted_xlsx(tmp_path / "e.xlsx", _A + f'<row r="3"><c r="A3" t="inlineStr"><is><t>A3</t></is></c>{cell}</row>')
    with pytest.raises(DataError) as caught:
        read_accounts(path, {"revenue": "number"})
    assert str(caught.value) == f"{path}:3:revenue: {says}: fix it in the workbook (or clear the cell) and save again"
    assert read_columns(path, {"id"})[0] == {"id": ["A1", "A3"]}  # a column not read is not looked at


def test_error_cells_written_by_openpyxl_are_located_in_the_sheets_own_columns(tmp_path):
    path = write_xlsx(
        tmp_path / "o.xlsx",
        {"S": [[], [None, None, "id", "name", "revenue"], [None, None, "A1", "#REF!", 5], [None, None, "A2", "x", "=1+1"]]},
    )
    with pytest.raises(DataError) as caught:
        read_columns(path)
    assert [str(f) for f in caught.value.findings] == [
        f"{path}:3:name: #REF! is an Excel error, not a value: fix it in the workbook (or clear the cell) and save again",
        f"{path}:4:revenue: a formula without a calculated value (the file was saved by a program "
        "that does not calculate): fix it in the workbook (or clear the cell) and save again",
    ]


def test_a_formula_with_its_value_and_an_empty_text_result_are_values(tmp_path):
    cells = (
        '<row r="3"><c r="A3" t="inlineStr"><is><t>A3</t></is></c><c '
        'r="B3"><f>2+2</f><v>4</v></c><c r="C3" t="str"><f>""</f><v></v></c></row>'
    )
    path = crafted_xlsx(tmp_path / "f.xlsx", _A + cells)
    assert read_columns(path)[0]["revenue"] == [5, 4]


def test_excels_day_zero_is_refused_as_a_time_not_a_date(tmp_path):
    """1899-12-30 (Excel's day 0) comes back from calamine as datetime.time(0, 0): "datetime.time(0, 0) is not a date" said nothing."""
    path = write_xlsx(tmp_path / "z.xlsx", {"S": [["id", "signed"], ["A1", dt.datetime(1899, 12, 30)], ["A2", dt.time(8, 30)]]})
    with pytest.raises(DataError) as caught:
        read_accounts(path, {"signed": "date"})
    assert [str(f) for f in caught.value.findings] == [
        f"{path}:2:signed: 00:00:00 is a time of day, not a date (Excel's 1899-12-30 is read as the time 00:00): enter the date",
        f"{path}:3:signed: 08:30:00 is a time of day, not a date (Excel's 1899-12-30 is read as the time 00:00): enter the date",
    ]
