"""conditions: every operator, missing values, case rules, RE2, and a per-row oracle property."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assignment_engine import AccountTable, Engine, RuleFileError, compile_rules
from assignment_engine.rules.conditions import ConditionError, parse_condition
from conftest import line_col, oracle, rules_text

FIELDS = {"s": "string", "n": "number", "i": "integer", "b": "boolean", "d": "date"}

BOOK = [
    {"id": "r0", "s": "Apple", "n": 5, "i": 3, "b": True, "d": "2024-01-15"},
    {"id": "r1", "s": "apple", "n": -2.5, "i": 0, "b": False, "d": "2023-12-31"},
    {"id": "r2", "s": "Banana", "n": 10, "i": 10, "b": "yes", "d": "2024-06-01"},
    {"id": "r3", "s": None, "n": None, "i": None, "b": None, "d": None},
    {"id": "r4", "s": "cherry pie", "n": 0, "i": -1, "b": "no", "d": "2020-02-29"},
    {"id": "r5", "s": "", "n": 7.5, "i": 7, "b": "false", "d": ""},
]


def parse(when, fields=FIELDS):
    errors: list[ConditionError] = []
    condition = parse_condition(when, ("when",), fields, errors)
    assert errors == [], [str(e) for e in errors]
    return condition


def holding(when, records=BOOK, fields=FIELDS) -> list[str]:
    table = AccountTable.from_records(records, fields)
    mask = parse(when, fields).mask(table)
    assert mask.dtype == bool and mask.shape == (len(records),)
    return [r["id"] for r, m in zip(records, mask, strict=True) if m]


def errors_of(when, fields=FIELDS) -> list[str]:
    errors: list[ConditionError] = []
    parse_condition(when, ("when",), fields, errors)
    return [str(e) for e in errors]


# ---------------------------------------------------------------- operators, one by one


@pytest.mark.parametrize(
    "when, expected",
    [
        ({"s": {"eq": "APPLE"}}, ["r0", "r1"]),
        ({"s": "apple"}, ["r0", "r1"]),  # shorthand scalar = eq
        ({"s": {"ne": "apple"}}, ["r2", "r3", "r4", "r5"]),  # ne holds for missing (r3 None, r5 empty)
        ({"s": {"in": ["banana", "CHERRY PIE"]}}, ["r2", "r4"]),
        ({"s": ["banana", "CHERRY PIE"]}, ["r2", "r4"]),  # shorthand list = in
        ({"s": {"not_in": ["apple", "banana"]}}, ["r3", "r4", "r5"]),  # not_in holds for missing
        ({"s": {"starts_with": "AP"}}, ["r0", "r1"]),
        ({"s": {"starts_with": ["x", "ban"]}}, ["r2"]),
        ({"s": {"ends_with": "PIE"}}, ["r4"]),
        ({"s": {"contains": "an"}}, ["r2"]),
        ({"s": {"contains": ["RR", "pp"]}}, ["r0", "r1", "r4"]),
        ({"s": {"matches": "^[A-Z]"}}, ["r0", "r2"]),  # regex is case-sensitive
        ({"s": {"matches": "y p"}}, ["r4"]),  # search, not full match
        ({"s": {"exists": True}}, ["r0", "r1", "r2", "r4"]),
        ({"s": {"exists": False}}, ["r3", "r5"]),
        ({"s": {"is_null": True}}, ["r3", "r5"]),
        ({"s": {"is_null": False}}, ["r0", "r1", "r2", "r4"]),
        ({"s": {"lt": "B"}}, ["r0"]),  # ordering compares strings as strings (case-sensitive)
        ({"s": {"gte": "a"}}, ["r1", "r4"]),
        ({"s": {"between": ["Apple", "Banana"]}}, ["r0", "r2"]),
    ],
)
def test_string_operators(when, expected):
    assert holding(when) == expected


@pytest.mark.parametrize(
    "when, expected",
    [
        ({"n": {"eq": 5}}, ["r0"]),
        ({"n": 10}, ["r2"]),
        ({"n": {"ne": 5}}, ["r1", "r2", "r3", "r4", "r5"]),  # ne holds for missing
        ({"n": {"in": [0, 7.5]}}, ["r4", "r5"]),
        ({"n": [0, 7.5]}, ["r4", "r5"]),
        ({"n": {"not_in": [0, 7.5]}}, ["r0", "r1", "r2", "r3"]),  # not_in holds for missing
        ({"n": {"lt": 0}}, ["r1"]),
        ({"n": {"lte": 0}}, ["r1", "r4"]),
        ({"n": {"gt": 5}}, ["r2", "r5"]),
        ({"n": {"gte": 5}}, ["r0", "r2", "r5"]),
        ({"n": {"between": [0, 7.5]}}, ["r0", "r4", "r5"]),  # inclusive both ends
        ({"n": {"exists": True}}, ["r0", "r1", "r2", "r4", "r5"]),
        ({"n": {"is_null": True}}, ["r3"]),
        ({"n": {"gt": 0, "lt": 10}}, ["r0", "r5"]),  # several operators = AND
        ({"i": {"gte": 3}}, ["r0", "r2", "r5"]),
        ({"b": True}, ["r0", "r2"]),
        ({"b": {"ne": True}}, ["r1", "r3", "r4", "r5"]),
        ({"d": {"gte": "2024-01-01"}}, ["r0", "r2"]),
        ({"d": {"between": ["2020-01-01", "2023-12-31"]}}, ["r1", "r4"]),
        ({"d": {"is_null": True}}, ["r3", "r5"]),
    ],
)
def test_typed_operators(when, expected):
    assert holding(when) == expected


@pytest.mark.parametrize("op", ["eq", "lt", "lte", "gt", "gte", "in", "between", "starts_with", "ends_with", "contains", "matches"])
def test_comparisons_fail_on_missing_values(op):
    operand = {"in": ["x"], "between": ["a", "z"], "matches": ".*"}.get(op, "x")
    records = [{"id": "missing", "s": None}, {"id": "empty", "s": "   "}]
    assert holding({"s": {op: operand}}, records, {"s": "string"}) == []


@pytest.mark.parametrize("op", ["eq", "lt", "lte", "gt", "gte", "in", "between"])
def test_numeric_comparisons_fail_on_missing_values(op):
    operand = {"in": [1], "between": [-1e9, 1e9]}.get(op, 0)
    assert holding({"n": {op: operand}}, [{"id": "m", "n": None}], {"n": "number"}) == []


def test_all_any_not():
    assert holding({"all": [{"s": "apple"}, {"n": {"gt": 0}}]}) == ["r0"]
    assert holding({"any": [{"s": "banana"}, {"n": {"lt": 0}}]}) == ["r1", "r2"]
    assert holding({"not": {"s": "apple"}}) == ["r2", "r3", "r4", "r5"]
    assert holding({"not": {"any": [{"s": {"exists": False}}, {"n": {"gte": 5}}]}}) == ["r1", "r4"]
    # a list is an implicit all; several keys in one mapping are AND
    assert holding([{"s": "apple"}, {"i": 0}]) == ["r1"]
    assert holding({"s": "apple", "i": 3}) == ["r0"]


def test_case_insensitive_text_equality_uses_casefold():
    records = [{"id": "a", "s": "STRASSE"}, {"id": "b", "s": "Straße"}, {"id": "c", "s": "strasse"}]
    assert holding({"s": "Strasse"}, records, {"s": "string"}) == ["a", "b", "c"]


def test_postal_code_string_ranges_keep_leading_zeros():
    fields = {"postal_code": "string"}
    records = [
        {"id": "a", "postal_code": "01234"},
        {"id": "b", "postal_code": "10000"},
        {"id": "c", "postal_code": "15432"},
        {"id": "d", "postal_code": "19999"},
        {"id": "e", "postal_code": "20000"},
        {"id": "f", "postal_code": "9999"},  # "9999" > "19999" as strings
        {"id": "g", "postal_code": "1999"},  # "1999" < "19999" but > "10000"
        {"id": "h", "postal_code": None},
    ]
    assert holding({"postal_code": {"between": ["10000", "19999"]}}, records, fields) == ["b", "c", "d", "g"]
    assert holding({"postal_code": "01234"}, records, fields) == ["a"]


def test_hostile_regex_returns():
    """RE2 is linear-time: a catastrophic-backtracking pattern must not hang."""
    records = [{"id": "x", "s": "a" * 50_000 + "!"}, {"id": "y", "s": "aaaa"}]
    result: list[list[str]] = []
    worker = threading.Thread(target=lambda: result.append(holding({"s": {"matches": "(a+)+$"}}, records, {"s": "string"})), daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "the (a+)+$ pattern did not return"
    assert result == [["y"]]


def test_regex_is_re2_not_python_re():
    # backreferences and lookarounds are not RE2: they are errors, not silently-slow patterns
    assert any("bad regular expression" in e for e in errors_of({"s": {"matches": r"(a)\1"}}))
    assert any("bad regular expression" in e for e in errors_of({"s": {"matches": r"a(?=b)"}}))


@pytest.mark.parametrize(
    "pattern, message",
    [
        ("(", "bad regular expression '(': missing ): ("),
        ("[z-a]é", "bad regular expression '[z-a]é': invalid character class range: z-a"),
        ("a{2,1}", "bad regular expression 'a{2,1}': invalid repetition size: {2,1}"),
    ],
)
def test_bad_regex_message_is_plain_text_and_re2_logs_nothing(capfd, pattern, message):
    capfd.readouterr()
    assert errors_of({"s": {"matches": pattern}}) == [message]  # no b'...' bytes repr
    assert capfd.readouterr().err == ""  # RE2 logs through absl to stderr unless told not to


def test_numbers_too_large_for_a_float_are_errors_not_overflows():
    assert errors_of({"n": {"gte": 1e309}}) == ["'n' is a number field: inf is not a number"]
    assert errors_of({"n": {"in": [1, int("9" * 300)]}}) == []  # the largest integer the loader makes
    long_text = {"s": {"eq": 10**299}, "n": {"gte": "9" * 400}}  # longer ones stay text: right for a code, wrong for a number
    (error,) = errors_of(long_text)
    assert error.startswith("'n' is a number field: '999") and error.endswith("… is not a number") and len(error) < 120


def test_bad_regex_in_rule_file_is_located():
    text = rules_text(
        """
        - id: t
          type: geo
          rules:
            - when:
                state: {matches: "[unclosed"}
        """
    )
    with pytest.raises(RuleFileError) as info:
        compile_rules(text, "r.yaml")
    (finding,) = info.value.findings
    assert (finding.location.line, finding.location.col) == line_col(text, '"[unclosed"')
    assert "bad regular expression" in finding.message


@pytest.mark.parametrize(
    "when, fragment",
    [
        ({"s": {"between": ["a"]}}, "two values"),
        ({"s": {"in": []}}, "at least one value"),
        ({"n": {"starts_with": "1"}}, "needs a string field"),
        ({"n": {"matches": "1"}}, "needs a string field"),
        ({"n": {"eq": "abc"}}, "not a number"),
        ({"b": {"eq": "yes"}}, "boolean field"),
        ({"d": {"gte": "31/12/2024"}}, "YYYY-MM-DD"),
        ({"s": {"exists": "yes"}}, "true or false"),
        ({"s": {"eq": None}}, "got null; use exists/is_null"),
        ({"s": {}}, "no operator"),
        ({"all": []}, "non-empty list"),
        ({}, "non-empty mapping"),
    ],
)
def test_bad_operands_are_errors(when, fragment):
    errors = errors_of(when)
    assert errors and any(fragment in e for e in errors), errors


def test_every_error_in_a_condition_is_collected():
    errors = errors_of({"any": [{"sx": 1}, {"n": {"foo": 1}}, {"s": {"between": [1]}}]})
    assert len(errors) == 3


def test_norway_in_data_and_rules():
    text = rules_text(
        """
        - id: nordics
          type: geo
          rules: [{when: {country: [NO, SE, DK]}}]
          members: [{user: u1}]
        """
    )
    engine = Engine(compile_rules(text))
    table = engine.table([{"id": i, "country": c, "state": None, "revenue": None} for i, c in [("a", "NO"), ("b", "no"), ("c", "False")]])
    mask = engine.rules.territories["nordics"].rules[0].condition.mask(table)
    assert mask.tolist() == [True, True, False]


def test_trace_explains_each_part():
    table = AccountTable.from_records(BOOK, FIELDS)
    condition = parse({"any": [{"s": "banana"}, {"n": {"lt": 0}}]})
    lines = condition.trace(table, 1)
    assert lines[0] == (0, "any of:", True)
    assert lines[1][2] is False and "s = banana" in lines[1][1] and "'apple'" in lines[1][1]
    assert lines[2][2] is True and "n < 0" in lines[2][1]


# ---------------------------------------------------------------- the oracle property

STRING_VALUES = ["a", "A", "ab", "Ab", "b", "ba", "abc", "B", "10000", "15000", "19999", "20000", "0999", "NO", "no"]
DATA_STRINGS = st.sampled_from([*STRING_VALUES, None, ""])
DATA_NUMBERS = st.one_of(st.none(), st.integers(-4, 4), st.sampled_from([0.5, -1.5, 2.25, 1e9]))
RULE_STRING = st.sampled_from(STRING_VALUES)
RULE_NUMBER = st.one_of(st.integers(-4, 4), st.sampled_from([0.5, -1.5, 2.25]))
REGEXES = ["^a", "b$", "[0-9]+", "A|b", "^[a-z]+$", "0{3}", "^N"]


def _string_leaf():
    def operand(op):
        if op in ("in", "not_in"):
            return st.lists(RULE_STRING, min_size=1, max_size=3)
        if op == "between":
            return st.lists(RULE_STRING, min_size=2, max_size=2)
        if op in ("starts_with", "ends_with", "contains"):
            return st.one_of(RULE_STRING, st.lists(RULE_STRING, min_size=1, max_size=2))
        if op == "matches":
            return st.sampled_from(REGEXES)
        if op in ("exists", "is_null"):
            return st.booleans()
        return RULE_STRING

    ops = st.sampled_from(
        [
            "eq",
            "ne",
            "in",
            "not_in",
            "lt",
            "lte",
            "gt",
            "gte",
            "between",
            "starts_with",
            "ends_with",
            "contains",
            "matches",
            "exists",
            "is_null",
        ]
    )
    explicit = ops.flatmap(lambda op: operand(op).map(lambda v: {"s": {op: v}}))
    shorthand = st.one_of(RULE_STRING.map(lambda v: {"s": v}), st.lists(RULE_STRING, min_size=1, max_size=3).map(lambda v: {"s": v}))
    return st.one_of(explicit, shorthand)


def _number_leaf():
    def operand(op):
        if op in ("in", "not_in"):
            return st.lists(RULE_NUMBER, min_size=1, max_size=3)
        if op == "between":
            return st.lists(RULE_NUMBER, min_size=2, max_size=2)
        if op in ("exists", "is_null"):
            return st.booleans()
        return RULE_NUMBER

    ops = st.sampled_from(["eq", "ne", "in", "not_in", "lt", "lte", "gt", "gte", "between", "exists", "is_null"])
    explicit = ops.flatmap(lambda op: operand(op).map(lambda v: {"n": {op: v}}))
    shorthand = st.one_of(RULE_NUMBER.map(lambda v: {"n": v}), st.lists(RULE_NUMBER, min_size=1, max_size=3).map(lambda v: {"n": v}))
    return st.one_of(explicit, shorthand)


CONDITIONS = st.recursive(
    st.one_of(_string_leaf(), _number_leaf()),
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda xs: {"all": xs}),
        st.lists(inner, min_size=1, max_size=3).map(lambda xs: {"any": xs}),
        inner.map(lambda x: {"not": x}),
        st.tuples(_string_leaf(), _number_leaf()).map(lambda p: {**p[0], **p[1]}),
    ),
    max_leaves=6,
)


@settings(max_examples=300)
@given(
    rows=st.lists(st.fixed_dictionaries({"s": DATA_STRINGS, "n": DATA_NUMBERS}), min_size=0, max_size=12),
    condition=CONDITIONS,
)
def test_mask_equals_a_per_row_oracle(rows, condition):
    records = [{"id": f"a{i}", **r} for i, r in enumerate(rows)]
    fields = {"s": "string", "n": "number"}
    table = AccountTable.from_records(records, fields)
    mask = parse(condition, fields).mask(table)
    expected = [oracle(condition, r) for r in records]
    assert mask.tolist() == expected
