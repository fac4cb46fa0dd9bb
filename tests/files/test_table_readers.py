"""table + readers: typed columns, codes kept as text, located data errors, CSV ≡ JSONL."""

from __future__ import annotations

import datetime as dt
import math
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from assignment_engine import AccountTable, DataError, Engine, HierarchyError, User, compile_rules, read_accounts, read_users
from assignment_engine.files import readers
from assignment_engine.matching.families import build_families
from assignment_engine.tables.cells import FieldType, OptionalTexts, Texts
from conftest import EXAMPLE_FIELDS, EXAMPLE_RULES, EXAMPLE_USERS, rows_by_id, write_csv, write_jsonl

FIELDS = {
    "country": "string",
    "state": "string",
    "postal_code": "string",
    "industry": "string",
    "annual_revenue": "number",
    "employees": "integer",
}
HEADER = "id,name,country,state,postal_code,industry,annual_revenue,employees"


def test_example_fields_are_the_declared_ones():
    assert compile_rules(EXAMPLE_RULES).field_types == FIELDS


def test_csv_codes_stay_strings(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text(HEADER + "\nA1,Nordic,NO,ON,01234,oil,10,3\nA2,x,no,on,00501,,,\n", encoding="utf-8")
    table = read_accounts(path, FIELDS)
    assert table.record(0)["country"] == "NO"
    assert table.record(0)["state"] == "ON"
    assert table.record(0)["postal_code"] == "01234"
    assert table.record(1)["postal_code"] == "00501"
    assert table.record(1)["industry"] is None  # empty cell = missing
    assert table.record(1)["annual_revenue"] is None
    assert table.record(0)["annual_revenue"] == 10.0
    assert table.record(0)["employees"] == 3 and isinstance(table.record(0)["employees"], int)
    assert table.rows is not None and list(table.rows) == [2, 3]


def test_excel_bom_and_whitespace_in_header_are_accepted(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(
        ("\ufeff" + "id , country,state,postal_code,industry,annual_revenue,employees\nA1,US,CA,02139,x,1,1\n").encode("utf-8")
    )
    table = read_accounts(path, FIELDS)
    assert table.ids == ["A1"]
    assert table.record(0)["postal_code"] == "02139"


def test_bad_numeric_cell_names_file_row_and_column(tmp_path):
    path = tmp_path / "accounts.csv"
    path.write_text(HEADER + "\nA1,a,US,CA,1,x,10,1\nA2,b,US,CA,1,x,20,1\nA3,c,US,CA,1,x,abc,1\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_accounts(path, FIELDS)
    (finding,) = info.value.findings
    assert finding.location.line == 4  # header is row 1, A3 is on row 4
    assert finding.location.column == "annual_revenue"
    assert str(info.value).startswith(f"{path}:4:annual_revenue: ")
    assert "'abc'" in finding.message


def test_row_numbers_count_physical_lines(tmp_path):
    """A quoted multi-line name and a blank line before the bad row: the reported row is its line."""
    path = tmp_path / "accounts.csv"
    path.write_text(HEADER + '\nA1,"two\nlines",US,CA,1,x,10,1\n\nA2,b,US,CA,1,x,1.5,oops\n', encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_accounts(path, FIELDS)
    (finding,) = info.value.findings
    assert (finding.location.line, finding.location.column) == (5, "employees")


def test_all_bad_cells_are_reported_together(tmp_path):
    path = tmp_path / "accounts.csv"
    path.write_text(HEADER + "\nA1,a,US,CA,1,x,abc,1\nA2,b,US,CA,1,x,5,2.5\nA3,c,US,CA,1,x,inf,1\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_accounts(path, FIELDS)
    where = sorted((f.location.line, f.location.column) for f in info.value.findings)
    assert where == [(2, "annual_revenue"), (3, "employees"), (4, "annual_revenue")]


def test_missing_declared_column(tmp_path):
    path = tmp_path / "accounts.csv"
    path.write_text("id,country,state,postal_code,industry,annual_revenu\nA1,US,CA,1,x,10\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_accounts(path, FIELDS)
    messages = " | ".join(f.message for f in info.value.findings)
    assert "'annual_revenue'" in messages and "'employees'" in messages
    assert "did you mean 'annual_revenu'" in messages
    assert all(f.location.line == 1 for f in info.value.findings)


def test_missing_id_column(tmp_path):
    path = tmp_path / "accounts.csv"
    path.write_text("name\nx\n", encoding="utf-8")
    with pytest.raises(DataError, match="'id'"):
        read_accounts(path, {})


def test_duplicate_account_ids_are_located(tmp_path):
    path = tmp_path / "accounts.csv"
    path.write_text(HEADER + "\nA1,a,US,CA,1,x,1,1\nA2,b,US,CA,1,x,1,1\nA1,c,US,CA,1,x,1,1\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_accounts(path, FIELDS)
    (finding,) = info.value.findings
    assert finding.location.line == 4 and finding.location.column == "id"
    assert "duplicate account id 'A1'" in finding.message and "row 2" in finding.message


def test_duplicate_ids_from_records():
    with pytest.raises(DataError) as info:
        AccountTable.from_records([{"id": "x"}, {"id": "y"}, {"id": "x"}], {})
    assert info.value.findings[0].location.line == 3


def test_ragged_csv_row_is_located(tmp_path):
    path = tmp_path / "accounts.csv"
    path.write_text(HEADER + "\nA1,a,US,CA,1,x,1,1\nA2,b,US\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_accounts(path, FIELDS)
    assert info.value.findings[0].location.line == 3


def test_bad_jsonl_cell_names_line_and_column(tmp_path):
    path = tmp_path / "accounts.jsonl"
    write_jsonl(
        path,
        [
            {"id": "A1", "country": "US", "state": "CA", "postal_code": "1", "industry": "x", "annual_revenue": 1, "employees": 1},
            {"id": "A2", "country": "US", "state": "CA", "postal_code": "1", "industry": "x", "annual_revenue": "abc", "employees": 1},
        ],
    )
    with pytest.raises(DataError) as info:
        read_accounts(path, FIELDS)
    (finding,) = info.value.findings
    assert (finding.location.line, finding.location.column) == (2, "annual_revenue")


def test_invalid_json_line_is_located(tmp_path):
    path = tmp_path / "accounts.jsonl"
    path.write_text('{"id": "A1"}\n\n{"id": "A2",,}\n', encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_accounts(path, {})
    assert info.value.findings[0].location.line == 3


def test_jsonl_missing_declared_column(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"id": "A1", "country": "US"}])
    with pytest.raises(DataError, match="missing column 'state'"):
        read_accounts(path, {"country": "string", "state": "string"})


def test_boolean_flags_and_bad_flag(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("id,locked,excluded\nA,true,no\nB,0,Y\nC,,\n", encoding="utf-8")
    table = read_accounts(path, {})
    assert table.locked.tolist() == [True, False, False]
    assert table.excluded.tolist() == [False, True, False]
    path.write_text("id,locked\nA,maybe\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_accounts(path, {})
    assert (info.value.findings[0].location.line, info.value.findings[0].location.column) == (2, "locked")


def test_users_file_with_capacity_and_weight(tmp_path):
    path = tmp_path / "users.csv"
    path.write_text("id,name,weight,active,max_accounts,max_revenue\nu1,One,1,true,5,\nu2,Two,0.5,false,,1000\n", encoding="utf-8")
    users = read_users(path, ["revenue", "accounts"])
    assert [u.id for u in users] == ["u1", "u2"]
    assert users[0].capacity == {"accounts": 5.0}
    assert users[1].capacity == {"revenue": 1000.0}
    assert users[1].weight == 0.5 and users[1].active is False


def test_users_file_errors(tmp_path):
    path = tmp_path / "users.csv"
    path.write_text("id,weight,max_revenu\nu1,-1,3\nu1,x,2\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_users(path, ["revenue"])
    text = str(info.value)
    assert "max_revenu" in text and "did you mean 'max_revenue'" in text
    assert f"{path}:2:weight: weight must be between 0 and 1e15, got -1" in text
    assert f"{path}:3:id: duplicate user id 'u1'" in text
    assert f"{path}:3:weight:" in text


ROWS = [
    {
        "id": "W1",
        "name": "West",
        "owner_id": "u010",
        "country": "US",
        "state": "CA",
        "postal_code": "01234",
        "industry": "tech",
        "annual_revenue": 500.5,
        "employees": 5,
    },
    {
        "id": "E1",
        "name": "East",
        "owner_id": "u012",
        "country": "US",
        "state": "NY",
        "postal_code": "10001",
        "industry": "",
        "annual_revenue": 300,
        "employees": None,
    },
    {
        "id": "E2",
        "name": "Zip",
        "owner_id": "",
        "country": "us",
        "state": "PA",
        "postal_code": "15000",
        "industry": "retail",
        "annual_revenue": None,
        "employees": 7,
    },
    {
        "id": "N1",
        "name": "Nordic",
        "owner_id": "u013",
        "country": "NO",
        "state": "ON",
        "postal_code": "00501",
        "industry": "oil",
        "annual_revenue": 2e9,
        "employees": 9,
        "parent_id": "W1",
    },
]


def test_jsonl_input_gives_the_same_table_and_plan_as_csv(tmp_path):
    engine = Engine(compile_rules(EXAMPLE_RULES))
    columns = ["id", "name", "owner_id", "parent_id", *EXAMPLE_FIELDS]
    csv_table = read_accounts(write_csv(tmp_path / "a.csv", ROWS, columns), engine.rules.field_types)
    jsonl_rows = [{k: v for k, v in r.items() if v is not None} for r in ROWS]
    jsonl_table = read_accounts(write_jsonl(tmp_path / "a.jsonl", jsonl_rows), engine.rules.field_types)
    assert [csv_table.record(i) for i in range(len(ROWS))] == [jsonl_table.record(i) for i in range(len(ROWS))]
    assert jsonl_table.record(3)["postal_code"] == "00501"
    assert jsonl_table.record(0)["postal_code"] == "01234"
    users = [User(u) for u in EXAMPLE_USERS]
    a = list(engine.assign(csv_table, users, effort=1.0).rows())
    b = list(engine.assign(jsonl_table, users, effort=1.0).rows())
    assert a == b
    assert [r["account_id"] for r in a] == ["W1", "E1", "E2", "N1"]


def test_codes_survive_into_the_plan_explanation(example_engine, example_users):
    table = example_engine.table(
        [{"id": "A", "country": "US", "state": "NY", "postal_code": "01234", "industry": None, "annual_revenue": 1, "employees": None}]
    )
    assert table.record(0)["postal_code"] == "01234"
    plan = example_engine.assign(table, example_users, effort=1.0)
    assert rows_by_id(plan)["A"]["territory_id"] == "amer-east"
    assert any("'01234'" in line for line in plan.explain("A"))


@given(st.lists(st.one_of(st.none(), st.text(alphabet="abcXYZ019 ", max_size=5)), max_size=20))
def test_string_columns_round_trip_stripped_and_empty_as_missing(values):
    table = AccountTable.from_records([{"id": str(i), "s": v} for i, v in enumerate(values)], {"s": "string"})
    for i, v in enumerate(values):
        expected = None if v is None or v.strip() == "" else v.strip()
        assert table.record(i)["s"] == expected


@given(
    st.lists(st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False, width=32), st.integers(-(10**9), 10**9)), max_size=20)
)
def test_number_columns_round_trip(values):
    table = AccountTable.from_records([{"id": str(i), "x": v} for i, v in enumerate(values)], {"x": "number"})
    got = table.fields["x"].values
    for i, v in enumerate(values):
        if v is None:
            assert math.isnan(got[i])
        else:
            assert got[i] == float(v)
    assert got.dtype == np.float64


# ---------------------------------------------------------------- hostile and nonsense cells


def test_deeply_nested_json_in_an_ignored_column_is_a_located_error(tmp_path):
    path = tmp_path / "accounts.jsonl"
    good = '{"id": "A1", "country": "US"}\n'
    path.write_text(good + '{"id": "A2", "country": "US", "notes": ' + "[" * 100_000 + "}\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_accounts(path, {"country": "string"})
    assert str(info.value) == f"{path}:2:1: invalid JSON: nested too deeply"
    path.write_text(good + '{"id": "A2", "employees": ' + "9" * 5000 + "}\n", encoding="utf-8")
    with pytest.raises(DataError, match=r":2:1: invalid JSON: a number of more than 4,300 digits"):
        read_accounts(path, {"country": "string"})


@pytest.mark.parametrize("cell", ["1_000", "nan", "NaN", "inf", "-inf", "infinity", "-Infinity", "1,000", "0x10"])
def test_numbers_are_plain_decimals(tmp_path, cell):
    path = tmp_path / "a.csv"
    path.write_text(f'id,annual_revenue\nA1,5\nA2,"{cell}"\n', encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_accounts(path, {"annual_revenue": "number"})
    (finding,) = info.value.findings
    assert (finding.location.line, finding.location.column) == (3, "annual_revenue")
    assert repr(cell) in finding.message


def test_usual_number_forms_are_read(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text('id,annual_revenue\nA1,1e6\nA2,-3.5\nA3," 42 "\nA4,+7\nA5,0.25\n', encoding="utf-8")
    table = read_accounts(path, {"annual_revenue": "number"})
    assert table.fields["annual_revenue"].values.tolist() == [1e6, -3.5, 42.0, 7.0, 0.25]


def test_a_long_cell_is_quoted_short(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("id,annual_revenue\nA1," + "x" * 100_000 + "\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_accounts(path, {"annual_revenue": "number"})
    assert len(str(info.value)) < 200 and "is not a number" in str(info.value)


def test_a_datetime_is_taken_as_its_day():
    table = AccountTable.from_records([{"id": "A", "d": dt.datetime(2024, 2, 29, 13, 30)}], {"d": "date"})
    assert table.record(0)["d"] == dt.date(2024, 2, 29)


@pytest.mark.parametrize(
    ("header", "row", "where", "says"),
    [
        ("max_revenue", "1e308", "max_revenue", "max_revenue must be between 0 and 1e15, got 1e308"),
        ("max_revenue", "-5", "max_revenue", "max_revenue must be between 0 and 1e15, got -5"),
        ("max_accounts", "-1", "max_accounts", "max_accounts must be between 0 and 1e15, got -1"),
        ("weight", "1e300", "weight", "weight must be between 0 and 1e15, got 1e300"),
    ],
)
def test_capacities_and_weights_out_of_bounds_are_located(tmp_path, header, row, where, says):
    path = tmp_path / "users.csv"
    path.write_text(f"id,{header}\nu1,1\nu2,{row}\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_users(path, ["revenue"])
    assert str(info.value) == f"{path}:3:{where}: {says}"


def test_capacities_at_the_bound_and_zero_are_read(tmp_path):
    path = tmp_path / "users.csv"
    path.write_text("id,max_revenue,max_accounts\nu1,1e15,0\n", encoding="utf-8")
    assert read_users(path, ["revenue"])[0].capacity == {"revenue": 1e15, "accounts": 0.0}


@pytest.mark.parametrize(("cell", "says"), [("-5", "got -5"), ("1e300", "got 1e300"), ("-0.01", "got -0.01")])
def test_a_measure_value_that_cannot_be_a_load_is_located(tmp_path, example_engine, example_users, cell, says):
    """annual_revenue is measure 'revenue' in the example: a workload, so neither negative nor astronomical."""
    path = tmp_path / "accounts.csv"
    path.write_text(HEADER + f"\nA1,a,US,CA,1,x,10,1\nA2,b,US,CA,1,x,,1\nA3,c,US,CA,1,x,{cell},1\n", encoding="utf-8")
    table = read_accounts(path, FIELDS)  # the file itself is fine: annual_revenue is a number
    with pytest.raises(DataError) as info:
        example_engine.assign(table, example_users, effort=1.0)
    assert str(info.value) == f"{path}:4:annual_revenue: measure 'revenue' must be between 0 and 1e15, {says}"


def test_negative_values_of_a_field_no_measure_uses_are_fine(example_engine, example_users):
    table = example_engine.table(
        [{"id": "A", "country": "US", "state": "CA", "postal_code": "9", "industry": "x", "annual_revenue": 5, "employees": -3}]
    )
    assert example_engine.assign(table, example_users, effort=1.0).owner_ids[0] in ("u010", "u011")


def test_a_message_stays_on_one_line_whatever_an_id_holds(tmp_path):
    path = tmp_path / "accounts.csv"
    path.write_text('id,parent_id\n"A\nB",\n"A\nB",\nC,"Z\r\n"\n', encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_accounts(path, {})
    assert str(info.value) == f"{path}:4:id: duplicate account id 'A\\nB' (first at row 2)"
    path.write_text('id,parent_id\n"A\nB",\nC,"Z\rZ"\n', encoding="utf-8")
    with pytest.raises(HierarchyError) as hierarchy:
        build_families(read_accounts(path, {}))
    assert str(hierarchy.value) == f"{path}:4:parent_id: account 'C' names parent 'Z\\rZ', which is not in the accounts file"


TEXTS = st.text(alphabet="aAé0 -xyz", max_size=20)  # past 15 bytes numpy keeps text outside the array: both kinds


@given(st.lists(TEXTS, max_size=30), st.lists(TEXTS, max_size=10))
def test_texts_find_values_as_a_dict_of_first_rows_does(values, wanted):
    texts = Texts(values)
    first: dict[str, int] = {}
    for i, v in enumerate(values):
        first.setdefault(v, i)
    assert texts.positions(wanted).tolist() == [first.get(w, -1) if w else -1 for w in wanted]
    assert [texts.position(w) for w in wanted] == [first.get(w) if w else None for w in wanted]
    again, earlier = texts.repeats()
    assert again.tolist() == [i for i, v in enumerate(values) if first[v] != i]
    assert earlier.tolist() == [first[values[i]] for i in again.tolist()]
    assert texts == values and list(texts) == values and texts[1:3] == values[1:3]


def test_optional_texts_read_empty_as_none():
    owners = OptionalTexts(["u1", None, ""])
    assert owners == ["u1", None, None] and owners.tolist() == ["u1", None, None] and owners.array.tolist() == ["u1", "", ""]


CHUNKED_FIELDS: dict[str, FieldType] = {"country": "country", "postal_code": "string", "revenue": "number"}
CELLS = {
    "id": st.sampled_from(["A1", "A2", "B3", "Long-account-id-0001", "Long-account-id-0002", ""]),
    "parent_id": st.sampled_from(["", "A1", "Long-account-id-0001", "nobody"]),
    "owner_id": st.sampled_from(["", "u1", "u2"]),
    "locked": st.sampled_from(["", "true", "no", "maybe"]),
    "country": st.sampled_from(["US", "de", "Germany", "Narnia", ""]),
    "postal_code": st.sampled_from(["01234", "99", "", "Long-postal-code-value"]),
    "revenue": st.sampled_from(["10", "", "2.5", "abc"]),
}


@given(st.lists(st.fixed_dictionaries(CELLS), max_size=12), st.integers(1, 5))
def test_a_book_read_in_chunks_is_the_book_read_whole(tmp_path_factory, records, size):
    path = tmp_path_factory.mktemp("chunks") / "a.csv"
    write_csv(path, records, list(CELLS))

    def read(chunk: int) -> AccountTable | str:
        with patch.object(readers, "CHUNK", chunk):
            try:
                return read_accounts(path, CHUNKED_FIELDS)
            except DataError as exc:
                return str(exc)

    whole, chunked = read(10_000), read(size)
    if isinstance(whole, str):
        assert chunked == whole  # the same findings, at the same rows
        return
    assert isinstance(chunked, AccountTable)
    assert [chunked.record(i) for i in range(len(chunked))] == [whole.record(i) for i in range(len(whole))]
    assert list(chunked.rows) == list(whole.rows) and [str(w) for w in chunked.warnings] == [str(w) for w in whole.warnings]
    assert chunked.notes == whole.notes
