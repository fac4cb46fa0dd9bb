"""yamlfile: YAML-1.2-like scalars (codes stay strings), positions, located syntax errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from assignment_engine import RuleFileError
from assignment_engine.yamlfile import load_yaml

from conftest import line_col


@pytest.mark.parametrize(
    "text",
    ["NO", "no", "No", "ON", "on", "OFF", "off", "yes", "Yes", "Y", "n", "y"],
)
def test_yaml_11_booleans_stay_strings(text):
    loaded = load_yaml(f"value: {text}\n", "f.yaml")
    assert loaded.data == {"value": text}


@pytest.mark.parametrize("text", ["01234", "0755", "010", "0o17", "0x1F", "1_000", "1:20", "2024-01-31", ".inf", "0b101"])
def test_yaml_11_numbers_octals_and_timestamps_stay_strings(text):
    loaded = load_yaml(f"value: {text}\n", "f.yaml")
    assert loaded.data["value"] == text
    assert isinstance(loaded.data["value"], str)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0", 0),
        ("12", 12),
        ("-7", -7),
        ("+3", 3),
        ("1000000000", 1000000000),
        ("0.5", 0.5),
        ("-2.25", -2.25),
        ("1e3", 1000.0),
        ("true", True),
        ("false", False),
        ("TRUE", True),
        ("null", None),
        ("~", None),
        ("", None),
    ],
)
def test_yaml_12_core_scalars_are_resolved(text, expected):
    loaded = load_yaml(f"value: {text}\n", "f.yaml")
    value = loaded.data["value"]
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize("text", ["'true'", '"12"', "'NO'", '"01234"', "'null'"])
def test_quoted_scalars_are_always_strings(text):
    loaded = load_yaml(f"value: {text}\n", "f.yaml")
    assert loaded.data["value"] == text[1:-1]


@given(st.from_regex(r"0[0-9]{1,6}", fullmatch=True))
def test_leading_zero_codes_keep_their_digits(code):
    loaded = load_yaml(f"postal_code: {code}\n", "f.yaml")
    assert loaded.data["postal_code"] == code


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_plain_decimal_integers_round_trip(n):
    assert load_yaml(f"n: {n}\n", "f.yaml").data["n"] == n


def test_tags_are_not_honoured_no_objects_are_built():
    text = "a: !!python/object/apply:os.system ['echo hi']\nb: !!int '12'\n"
    loaded = load_yaml(text, "f.yaml")
    # The composer only: a python tag produces plain data, never a call.
    assert loaded.data["a"] == ["echo hi"]
    assert loaded.data["b"] == "12"


def test_positions_are_one_based_line_and_column():
    text = "version: 1\nterritories:\n  - id: west\n    rules: []\n"
    loaded = load_yaml(text, "f.yaml")
    assert loaded.positions[("territories", 0, "id")] == line_col(text, "west")
    assert loaded.key_positions[("territories", 0, "rules")] == line_col(text, "rules")
    loc = loaded.location(("territories", 0, "missing", "deeper"))
    # falls back to the nearest known ancestor: the mapping at list item 0
    assert (loc.line, loc.col) == line_col(text, "id: west")


def test_syntax_error_is_located():
    text = "version: 1\nterritories:\n  - id: a\n    rules: [\n      {when: {x: 1}\n"
    with pytest.raises(RuleFileError) as info:
        load_yaml(text, "bad.yaml")
    finding = info.value.findings[0]
    assert finding.location.file == "bad.yaml"
    assert finding.location.line is not None and finding.location.line >= 4
    assert "YAML syntax error" in finding.message
    assert str(info.value).startswith(f"bad.yaml:{finding.location.line}:{finding.location.col}: ")


def test_bad_indentation_error_points_at_the_offending_line():
    text = "version: 1\nfields:\n  a: string\n b: string\n"
    with pytest.raises(RuleFileError) as info:
        load_yaml(text, "bad.yaml")
    assert info.value.findings[0].location.line == 4


def test_duplicate_keys_and_merge_keys_are_reported_together():
    text = "a: 1\nb: 2\na: 3\nbase: &x {k: 1}\nc:\n  <<: *x\n"
    with pytest.raises(RuleFileError) as info:
        load_yaml(text, "f.yaml")
    messages = [(f.location.line, f.message) for f in info.value.findings]
    assert (3, "duplicate key 'a'") in messages
    assert any(line == 6 and "merge keys" in msg for line, msg in messages)


def test_empty_file_is_an_error():
    with pytest.raises(RuleFileError, match="empty"):
        load_yaml("# nothing\n", "f.yaml")


def test_alias_bomb_is_refused():
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    with pytest.raises(RuleFileError, match="too many nodes"):
        load_yaml("\n".join(lines) + "\n", "bomb.yaml")
