"""Records from a library caller (a CRM on every save): a located DataError where a mistake would match nothing."""

from __future__ import annotations

import datetime as dt

import pytest

from assignment_engine import DataError, Engine, User
from conftest import engine_of, rules_text

GOOD = {"id": "A1", "country": "US", "state": "PA", "postal_code": "19999", "industry": "tech", "annual_revenue": 5e6, "employees": 120}


def record(**changes: object) -> dict[str, object]:
    """The good record with keys changed (a value of ... removes the key)."""
    out = {**GOOD, **changes}
    return {k: v for k, v in out.items() if v is not ...}


def only_finding(engine: Engine, value: object) -> str:
    with pytest.raises(DataError) as info:
        engine.match(value)  # type: ignore[arg-type]
    (finding,) = info.value.findings
    return str(finding)


def test_a_complete_record_matches(example_engine):
    assert example_engine.match(GOOD).territories == ["amer-east"]
    flags = record(name="Acme", parent_id=None, owner_id="u012", locked=False, excluded=True)
    assert example_engine.match(flags).territories == ["amer-east"]


def test_a_misspelt_key_is_named_with_a_suggestion(example_engine):
    with pytest.raises(DataError) as info:
        example_engine.match(record(country=..., Country="US"))
    assert [str(f) for f in info.value.findings] == [
        "<record>:1:Country: unknown key 'Country' (did you mean 'country'?)",
        "<record>:1:country: missing key 'country' (pass None for an unknown value)",
    ]


def test_every_unknown_key_is_reported(example_engine):
    with pytest.raises(DataError) as info:
        example_engine.match(record(Country="US", annual_revenu=5, fax="1"))
    assert [str(f) for f in info.value.findings] == [
        "<record>:1:Country: unknown key 'Country' (did you mean 'country'?)",
        "<record>:1:annual_revenu: unknown key 'annual_revenu' (did you mean 'annual_revenue'?)",
        "<record>:1:fax: unknown key 'fax'",
    ]


def test_a_missing_declared_field_is_named(example_engine):
    assert only_finding(example_engine, record(state=...)) == "<record>:1:state: missing key 'state' (pass None for an unknown value)"
    assert only_finding(example_engine, record(id=...)) == "<record>:1:id: missing key 'id' (pass None for an unknown value)"


def test_none_says_unknown_and_the_trace_says_missing(example_engine):
    m = example_engine.match(record(state=None, postal_code=None))
    assert m.territories == ["amer"]  # the US rule holds; neither child can tell without state or postal code
    assert any("state" in line and "missing" in line for line in m.trace)


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        (
            {"postal_code": 5000},
            "<record>:1:postal_code: postal_code must be text, got int 5000 (a number is not taken as text: 5000 may have been '05000')",
        ),
        ({"country": ["US"]}, "<record>:1:country: country must be text, got list ['US']"),
        ({"country": {"code": "US"}}, "<record>:1:country: country must be text, got dict {'code': 'US'}"),
        ({"country": True}, "<record>:1:country: country must be text, got bool True"),
        ({"annual_revenue": True}, "<record>:1:annual_revenue: annual_revenue must be a number, got bool True"),
        ({"annual_revenue": [5]}, "<record>:1:annual_revenue: annual_revenue must be a number, got list [5]"),
        ({"employees": 2.5}, "<record>:1:employees: 2.5 is not an integer"),
        ({"annual_revenue": "1_000"}, "<record>:1:annual_revenue: '1_000' is not a number"),
        ({"annual_revenue": float("nan")}, "<record>:1:annual_revenue: nan is not a finite number"),
        ({"id": 7}, "<record>:1:id: id must be text, got int 7 (a number is not taken as text: 5000 may have been '05000')"),
        ({"locked": "maybe"}, "<record>:1:locked: 'maybe' is not a boolean (use true/false)"),
        ({"locked": 1}, "<record>:1:locked: locked must be true or false, got int 1"),
    ],
)
def test_a_value_of_the_wrong_type_is_named_with_its_key(example_engine, changes, says):
    assert only_finding(example_engine, record(**changes)) == says


def test_text_for_numbers_and_dates_is_parsed_as_a_file_cell_is():
    engine = engine_of(
        rules_text(
            "[{id: t, type: geo, rules: [{when: {since: {gte: 2020-01-01}}}], members: [{user: u}]}]",
            fields="{since: date, size: number}",
            measures="{size: {field: size}}",
        )
    )
    assert engine.match({"id": "a", "since": "2021-05-01", "size": " 42 "}).territories == ["t"]
    assert engine.match({"id": "a", "since": dt.datetime(2021, 5, 1, 9), "size": 42}).territories == ["t"]
    assert engine.match({"id": "a", "since": dt.date(2019, 5, 1), "size": None}).territories == []


@pytest.mark.parametrize(("value", "kind"), [(None, "NoneType"), (["id", "A1"], "list"), ("A1", "str"), (42, "int")])
def test_a_record_that_is_not_a_mapping_is_refused(example_engine, value, kind):
    assert only_finding(example_engine, value) == f"<record>:1: a record must be a mapping of keys to values, got {kind}"


def test_a_batch_names_each_bad_record_by_position(example_engine):
    records = [GOOD, record(id="A2", postal_code=1000), None, record(id="A4", Industry="x", industry=...)]
    with pytest.raises(DataError) as info:
        example_engine.table(records)
    assert [str(f.location) for f in info.value.findings] == [
        "<accounts>:2:postal_code",
        "<accounts>:3",
        "<accounts>:4:Industry",
        "<accounts>:4:industry",
    ]
    with pytest.raises(DataError, match="expected a list of records, got dict"):
        example_engine.table(GOOD)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="expected a list of records, got generator"):
        example_engine.table(r for r in [GOOD])  # type: ignore[arg-type]


def test_records_from_a_plan_round_trip(example_engine, example_users):
    """A table's own records (typed values, every key) are valid input: explain and re-plan rely on it."""
    table = example_engine.table([GOOD, record(id="A2", state="CA", annual_revenue=None, owner_id="u010", locked=True)])
    again = example_engine.table([table.record(i) for i in range(len(table))])
    assert [again.record(i) for i in range(2)] == [table.record(i) for i in range(2)]
    plan = example_engine.assign(again, example_users, effort=1.0)
    assert any("amer-east" in line for line in plan.explain("A1"))


@pytest.mark.parametrize(
    ("user", "says"),
    [
        (
            lambda: User("u1", capacity={"revenue": 1e308}),
            "<users>: user 'u1': max_revenue must be a number between 0 and 1e15, got 1e+308",
        ),
        (lambda: User("u1", capacity={"accounts": -1}), "<users>: user 'u1': max_accounts must be a number between 0 and 1e15, got -1"),
        (lambda: User("u1", weight=float("nan")), "<users>: user 'u1': weight must be a number between 0 and 1e15, got nan"),
        (lambda: User("u1", capacity={"accounts": "3"}), "<users>: user 'u1': max_accounts must be a number between 0 and 1e15, got '3'"),
    ],
)
def test_a_users_numbers_are_bounded_as_in_a_users_file(user, says):
    with pytest.raises(DataError) as info:
        user()
    assert str(info.value) == says
    assert User("u1", weight=0.5, capacity={"revenue": 1e15, "accounts": 0}).capacity["revenue"] == 1e15
