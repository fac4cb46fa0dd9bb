"""Fuzzing the data files: whatever the accounts, users, opportunities and pairs files hold, a plan or a located error.

Each example writes a small book as CSV or JSON Lines from hostile cells (huge,
negative and odd numbers, control and bidi characters, formula-like text, a
BOM, very long cells, duplicate and unknown ids), then breaks a file on
purpose (header only, empty, a column dropped or added, a ragged row, random
bytes, a line cut short, JSON nested a hundred thousand deep or not an
object). Reading and planning it with a small rule file either raises an
AssignmentEngineError whose every finding is one line in an input file, or gives a
plan in which every account and every opportunity of the files appears
exactly once. Records a CRM passes to Engine.match and Engine.table are
fuzzed the same way. Anything else (a RecursionError, a TypeError from numpy, an
OR-Tools overflow) is a bug.

The suite runs a few seconds of examples, the same ones every run;
``HYPOTHESIS_PROFILE=long`` runs fifty times more, each run different.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from assignment_engine import (
    AssignmentEngineError,
    DataError,
    Engine,
    HierarchyError,
    RuleFileError,
    User,
    compile_rules,
    plan_files,
    read_accounts,
    read_users,
)
from assignment_engine.files.readers import read_columns
from assignment_engine.tables.table import RECORD_KEYS

RULES = """\
version: 1
fields: {country: string, state: string, revenue: number, employees: integer, since: date, vip: boolean}
measures: {revenue: {field: revenue}, accounts: {constant: 1}, pipeline: {deals: amount}, effort: {pair: workload, constant: 1}}
territory_types: [{name: named, priority: 1}, {name: geo, priority: 2}, {name: specialist, priority: 3, overlay: true}]
territories:
  - {id: key, type: named, rules: [{when: {vip: true}}], members: [{user: u1}]}
  - id: us
    type: geo
    rules: [{inherit: true, when: {country: US}}]
    children:
      - {id: west, rules: [{when: {state: {in: [CA, WA]}}}], members: [{user: u1}, {user: u2}]}
      - {id: east, rules: [{when: {any: [{state: NY}, {employees: {gte: 100}}]}}], members: [{user: u2}, {user: u3}]}
  - {id: analytics, type: specialist, rules: [{when: {product_line: analytics}}], members: [{user: s1, role: overlay}]}
assignment:
  hierarchy: follow_ultimate_parent
  balance: [{measure: revenue, tolerance: 0.2}, {measure: accounts, tolerance: 0.5}]
  effort: 0.2
  as_of: "2026-06-01"
opportunities:
  fields: {amount: number, product_line: string}
  keep_owner: {when: {stage: negotiation}, closing_within_days: 30}
  measures: {amount: {field: amount}}
"""

LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"


def fuzz(examples: int) -> settings:
    """``examples`` in the suite (derandomized, from conftest's profile); fifty times more, at random, when long."""
    return settings(max_examples=examples * 50, derandomize=False) if LONG else settings(max_examples=examples)


ODD = [
    "",
    " ",
    "0",
    "-1",
    "-0.5",
    "1e15",
    "1e16",
    "-1e16",
    "1e300",
    "-1e300",
    "1_000",
    "1,000",
    "nan",
    "inf",
    "-Infinity",
    "0x1F",
    "१२३",
    "true",
    "no",
    "maybe",
    "2026-02-30",
    "2026-06-15",
    "20260615",
    '=HYPERLINK("http://evil.example","click")',
    "@SUM(A1)",
    "+1+1",
    "-2+3",
    "\x00",
    "\x1b[31mred\x1b[0m",
    "\u202egnp.exe",
    "\ufeffUS",
    "a\nb",
    "a\rb",
    '"',
    "'; DROP TABLE accounts; --",
    "𝔘𝔖",
    "x" * 200_000,  # past the csv module's field limit
    "9" * 5_000,  # past Python's integer digits limit when it is a JSON number
]
TEXT = st.one_of(st.sampled_from(ODD), st.text(max_size=8), st.integers(-(10**20), 10**20).map(str), st.floats().map(repr))
ACCOUNT_IDS = ["A1", "A2", "A3", "A4", "A5"]
USER_IDS = ["u1", "u2", "u3", "s1"]

# per column, the values of a sound file; a hostile file also has odd ones, and ids that repeat, are blank or unknown
ACCOUNT = {
    "id": ACCOUNT_IDS,
    "name": ["Acme", "Globex", ""],
    "parent_id": ["", "", "", "A1", "A2"],
    "owner_id": ["", *USER_IDS],
    "locked": ["", "", "true", "no"],
    "excluded": ["", "", "yes", "0"],
    "country": ["US", "US", "CA", "us"],
    "state": ["CA", "NY", "WA", "TX", ""],
    "revenue": ["", "0", "10", "250.5", "1e6", "1e15"],
    "employees": ["", "1", "150"],
    "since": ["", "2020-01-31"],
    "vip": ["", "false", "true"],
    "street": ["1 Main St", ""],  # a column no rule reads
}
USER = {
    "id": USER_IDS,
    "name": ["Ann", ""],
    "weight": ["", "1", "0.5"],
    "active": ["", "true", "no"],
    "max_accounts": ["", "3", "1e15"],
    "max_revenue": ["", "500", "1e15"],
}
DEAL = {
    "id": ["D1", "D2", "D3", "D4"],
    "account_id": ACCOUNT_IDS,
    "owner_id": ["", "gone", *USER_IDS],  # gone: a rep who left, not a user
    "locked": ["", "false"],
    "stage": ["prospecting", "negotiation", "closed_won"],
    "close_date": ["", "2026-06-10", "2027-01-01"],
    "amount": ["", "5", "1e15"],
    "product_line": ["analytics", "core"],
    "overlay_owner_ids": ["", "s1", "s1;u1"],
}
PAIR = {"account_id": ACCOUNT_IDS, "user_id": USER_IDS, "cost": ["", "1", "-3", "1e15"], "workload": ["", "2", "0.5", "1e15"]}
KEYS = {
    "id": [" A1 ", "", "ZZ", "A1"],
    "account_id": ["ZZ", "", "A1"],
    "user_id": ["nobody", "", "u1"],
    "parent_id": ["ZZ", "A3"],
    "owner_id": ["gone"],
}

BREAKS = ["none"] * 8 + [
    "bom",
    "header only",
    "empty",
    "drop a column",
    "add a column",
    "ragged row",
    "random bytes",
    "cut short",
    "deep json",
    "not an object",
]


@st.composite
def data_file(draw: st.DrawFn, columns: dict[str, list[str]], rows_from: int, cycled: tuple[str, ...] = ("id",)) -> dict[str, Any]:
    """One file: a format, its columns (a subset, in some order), rows of cells, and how it is broken.

    A sound file (two in three) has ``rows_from`` rows or more, the ``cycled``
    columns taking their values in turn (distinct ids, one pair per account).
    In a hostile file one cell in four is odd (hostile text, or an id that
    repeats, is blank or is unknown) and the file may be broken.
    """
    hostile = draw(st.integers(0, 2)) == 0
    names = draw(st.permutations(list(columns)))
    keep = [n for n in names if not hostile or n in ("id", "account_id", "user_id") or draw(st.integers(0, 9)) > 0]
    n = draw(st.integers(0 if hostile else rows_from, len(columns[cycled[0]])))
    rows = []
    for i in range(n):
        row = {}
        for name in keep:
            normal = columns[name]
            value = normal[i % len(normal)] if name in cycled else draw(st.sampled_from(normal))
            if hostile and draw(st.integers(0, 3)) == 0:
                value = draw(st.one_of(TEXT, st.sampled_from(KEYS.get(name, ODD))))
            row[name] = value
        if not hostile and "parent_id" in row and row["parent_id"] == row["id"]:
            row["parent_id"] = ""  # a sound book has no self-parent (A1 → A1)
        rows.append(row)
    jsonish = st.sampled_from(["number", "list", "null", "bool", "text", "text", "text", "text"])
    return {
        "format": draw(st.sampled_from(["csv", "jsonl"])),
        "columns": keep,
        "rows": rows,
        "break": draw(st.sampled_from(BREAKS)) if hostile else "none",
        "json": [[draw(jsonish) if hostile else "text" for _ in keep] for _ in rows],
        "noise": draw(st.binary(min_size=1, max_size=40)),
        "at": draw(st.floats(0, 1)),
    }


def json_value(text: str, how: str) -> Any:
    """A cell as JSON Lines would hold it: the text, or a number, list, null or boolean made of it."""
    if how == "number":
        try:
            number = float(text) if any(c in text for c in ".eEn") else int(text)
        except ValueError:
            return text
        return number if math.isfinite(number) else text
    return {"list": [text], "null": None, "bool": text == "true"}.get(how, text)


def write(path: Path, spec: dict[str, Any]) -> Path:
    path = path.with_suffix("." + spec["format"])
    columns, rows = list(spec["columns"]), spec["rows"]
    brk = spec["break"]
    if brk == "drop a column" and len(columns) > 1:
        columns.pop()
    if brk == "add a column":
        columns.append("extra")
    if brk in ("header only", "empty"):
        rows = []
    if spec["format"] == "csv":
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            if brk != "empty":
                writer.writerow(columns)
            for i, row in enumerate(rows):
                cells = [row.get(c, "=1+1") for c in columns]
                writer.writerow(cells + ["surplus"] if brk == "ragged row" and i == len(rows) - 1 else cells)
    else:
        lines = []
        # the header-only and empty breaks drop the rows, the column breaks a column, not their JSON kinds
        for row, hows in zip(rows, spec["json"], strict=False):
            lines.append(json.dumps({c: json_value(row.get(c, ""), how) for c, how in zip(columns, hows, strict=False)}))
        if brk == "deep json":
            lines.append('{"id": "A9", "notes": ' + "[" * 100_000 + "}")
        if brk == "not an object":
            lines.append("[1, 2, 3]")
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    data = path.read_bytes()
    cut = int(spec["at"] * len(data))
    if brk == "bom":
        data = b"\xef\xbb\xbf" + data
    elif brk == "random bytes":
        data = data[:cut] + spec["noise"] + data[cut:]
    elif brk == "cut short":
        data = data[:cut]
    path.write_bytes(data)
    return path


def records_in(path: Path) -> int:
    """How many records the file holds, counted without the engine (the oracle)."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix == ".jsonl":
        return sum(1 for line in text.splitlines() if line.strip())
    return sum(1 for row in csv.reader(text.splitlines(keepends=True)) if row) - 1


def check(files: dict[str, Path | None]) -> str:
    """Plan the files; the property: a located AssignmentEngineError, or every account and deal exactly once."""
    try:
        plan, deals = plan_files(
            files["rules"], files["accounts"], files["users"], opportunities=files["opportunities"], pairs=files["pairs"], effort=0.2
        )
        summary = plan.summary()
        if deals is not None:
            summary["opportunities"] = deals.summary()
        json.dumps(summary)
    except AssignmentEngineError as error:
        assert isinstance(error, (DataError, HierarchyError, RuleFileError)), error
        inputs = {str(p) for p in files.values() if p is not None}
        for finding in error.findings:
            assert finding.location.file in inputs, finding
            assert finding.location.line is None or finding.location.line >= 1, finding
            assert "\n" not in finding.render() and "\r" not in finding.render(), finding  # one line, whatever the cells hold
            if isinstance(error, RuleFileError):  # the rule file is valid: only its members can be missing from a broken users file
                assert "is not in the users file" in finding.message, finding
        assert str(error)
        return type(error).__name__
    ids = [r["account_id"] for r in plan.rows()]
    assert ids == plan.accounts.ids and len(set(ids)) == len(ids) == records_in(files["accounts"])
    if deals is not None:
        deal_ids = [r["opportunity_id"] for r in deals.rows()]
        assert len(set(deal_ids)) == len(deal_ids) == records_in(files["opportunities"]) == len(deals.deals)
    return "planned"


BOOK = st.fixed_dictionaries(
    {
        "accounts": data_file(ACCOUNT, len(ACCOUNT_IDS)),
        "users": data_file(USER, len(USER_IDS)),
        "opportunities": st.one_of(st.none(), data_file(DEAL, 0)),
        "pairs": st.one_of(st.none(), data_file(PAIR, 0, ("account_id",))),
    }
)


@fuzz(150)
@given(BOOK)
def test_hostile_data_files_plan_or_fail_located(book):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files: dict[str, Path | None] = {"rules": root / "rules.yaml"}
        (root / "rules.yaml").write_text(RULES, encoding="utf-8")
        for name, spec in book.items():
            files[name] = write(root / name, spec) if spec is not None else None
        event(check(files))


def deep(levels: int) -> list[object]:
    value: list[object] = []
    for _ in range(levels):
        value = [value]
    return value


ENGINE = Engine(compile_rules(RULES))
KEY = st.one_of(
    st.sampled_from([*ENGINE.rules.field_types, *RECORD_KEYS, "Country", "annual_revenue"]), st.text(max_size=4), st.integers(-1, 1)
)
VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**400), 10**400),
    st.floats(),
    st.text(max_size=8),
    st.sampled_from(ODD),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.sampled_from([dt.date(2026, 1, 31), dt.datetime(2026, 1, 31, 12), b"US", deep(100_000)]),
)
SOUND = st.fixed_dictionaries(
    {"id": st.sampled_from(ACCOUNT_IDS), **{k: st.sampled_from(v) for k, v in ACCOUNT.items() if k in ENGINE.rules.field_types}}
)
RECORDS = st.one_of(
    st.lists(SOUND, max_size=4, unique_by=lambda r: r["id"]),
    st.lists(st.one_of(SOUND, st.dictionaries(KEY, VALUE, max_size=8), VALUE), max_size=4),
)


@fuzz(200)
@given(RECORDS)
def test_hostile_records_match_plan_or_fail_located(records):
    """A CRM's records, sound or not: Engine.match and Engine.table give a result or a DataError at <record>/<accounts>:position:key."""
    for record in records:
        try:
            ENGINE.match(record)
        except DataError as error:
            assert all(f.location.file == "<record>" and f.location.line == 1 and "\n" not in f.render() for f in error.findings), error
    try:
        plan = ENGINE.assign(ENGINE.table(records), [User(u) for u in USER_IDS], effort=0.2)
    except (DataError, HierarchyError) as error:
        assert all(f.location.file == "<accounts>" and 1 <= (f.location.line or 1) <= len(records) for f in error.findings), error
        event(type(error).__name__)
        return
    assert [r["account_id"] for r in plan.rows()] == plan.accounts.ids and len(plan.accounts) == len(records)
    event("planned")


# --- spreadsheets ---------------------------------------------------------------------------------------

# cells of every kind a workbook holds; text is what openpyxl can write (no control characters, not a formula or an error name)
SHEET_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), max_size=6).filter(
    lambda s: not s.startswith(("=", "#"))
)
VALUES = st.one_of(
    st.none(),
    SHEET_TEXT,
    st.sampled_from(["US", "CA", "true", "2026-01-02", "0042", " padded "]),
    st.integers(-(10**15), 10**15),
    st.floats(-1e15, 1e15, allow_nan=False).map(lambda x: float(f"{x:.15g}")),  # Excel keeps 15 significant digits
    st.booleans(),
    st.dates(dt.date(1900, 3, 1), dt.date(2100, 1, 1)),
    st.datetimes(dt.datetime(1900, 3, 1), dt.datetime(2100, 1, 1)).map(lambda d: d.replace(second=0, microsecond=0)),
    st.times().map(lambda t: t.replace(microsecond=0)),
)
BROKEN = st.sampled_from(["#N/A", "#REF!", "#DIV/0!", "#VALUE!", "=1+1", "=A1", '=IF(1,"","x")'])
HEADERS = st.lists(
    st.one_of(
        st.sampled_from(["id", "revenue", "since", "vip", "country", "name", "weight", "active", "max_revenue", " id ", ""]), SHEET_TEXT
    ),
    min_size=1,
    max_size=6,
)


def _workbook(rows: list[list[Any]]) -> Path:
    import openpyxl  # noqa: PLC0415  only the .xlsx cases write a workbook

    book = openpyxl.Workbook()
    for row in rows:
        book.active.append(row)
    handle, name = tempfile.mkstemp(suffix=".xlsx")
    os.close(handle)
    book.save(name)
    return Path(name)


def _expected(value: Any) -> Any:
    """A written cell as the reader gives it back: empty text as missing, a whole float as int, midnight as its day."""
    if value == "" or value is None:
        return None
    if isinstance(value, dt.datetime) and value.time() == dt.time(0):
        return value.date()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@fuzz(30)
@given(HEADERS, st.lists(st.lists(st.one_of(VALUES, BROKEN), max_size=7), max_size=6))
def test_hostile_workbooks_read_as_accounts_and_users_or_fail_located(header, rows):
    """Any workbook read as accounts or users: tables, or an AssignmentEngineError at a cell of the file (never another exception)."""
    path = _workbook([header, *rows])
    try:
        for read in (
            lambda: read_accounts(path, {"revenue": "number", "since": "date", "vip": "boolean", "country": "string"}),
            lambda: read_users(path, ["revenue"]),
        ):
            try:
                read()
                event("read")
            except AssignmentEngineError as exc:
                event(type(exc).__name__)
                assert all(f.location.file == str(path) for f in exc.findings), exc
    finally:
        path.unlink()


@fuzz(30)
@given(st.lists(st.lists(VALUES, min_size=3, max_size=3), min_size=1, max_size=6), st.lists(BROKEN, max_size=1))
def test_workbook_cells_round_trip_and_broken_ones_are_located(rows, broken):
    """What a sheet holds comes back as written (numbers, text, dates, times, booleans, empty); an error cell or an
    uncalculated formula (as openpyxl writes every formula) is an error at its own cell."""
    header = ["id", "a", "b", "c"]
    body = [[f"R{i}", *row] for i, row in enumerate(rows)]
    if broken:
        body[-1][2] = broken[0]
    path = _workbook([header, *body])
    try:
        if broken:
            with pytest.raises(DataError) as caught:
                read_columns(path)
            assert str(caught.value.findings[0].location) == f"{path}:{len(body) + 1}:b"
            return
        columns, lines = read_columns(path)
    finally:
        path.unlink()
    assert list(lines) == list(range(2, len(body) + 2))
    for k, name in enumerate(header):
        assert columns[name] == [_expected(row[k]) for row in body]
