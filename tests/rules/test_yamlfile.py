"""yamlfile: YAML-1.2-like scalars (codes stay strings), positions, located syntax errors, bounded cost."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from assignment_engine import RuleFileError
from assignment_engine.rules import yamlfile
from assignment_engine.rules.yamlfile import MAX_BYTES, MAX_DEPTH, load_yaml, read_text
from conftest import line_col


@pytest.fixture(autouse=True, scope="module", params=["libyaml", "python"])
def parser(request):
    """Every test on both event sources: libyaml, and the pure-Python parser used when PyYAML lacks it."""
    saved = yamlfile._LOADER
    if request.param == "python":
        yamlfile._LOADER = yaml.BaseLoader
    yield request.param
    yamlfile._LOADER = saved


def finding_of(text: str, file: str = "f.yaml"):
    with pytest.raises(RuleFileError) as info:
        load_yaml(text, file)
    (finding,) = info.value.findings
    return finding


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


def test_alias_bomb_is_refused_at_the_alias_that_crosses_the_budget():
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    finding = finding_of("\n".join(lines) + "\n", "bomb.yaml")
    assert "too many nodes" in finding.message and "1,000,000" in finding.message
    assert finding.location.line == 6  # a5 expands to 1,111,111 nodes


# ---------------------------------------------------------------- limits: nesting, cycles, nodes, size, characters


def test_nesting_up_to_the_limit_loads_one_more_level_is_located():
    inside = MAX_DEPTH - 1  # the top-level mapping is the first level
    assert load_yaml("a: " + "[" * inside + "]" * inside + "\n", "f.yaml").data["a"] is not None
    finding = finding_of("a: " + "[" * (inside + 1) + "]" * (inside + 1) + "\n")
    assert (finding.location.line, finding.location.col) == (1, 3 + inside + 1)
    assert f"nested more than {MAX_DEPTH} levels" in finding.message


def test_thousands_of_levels_are_a_finding_not_a_recursion_error():
    finding = finding_of("a:\n  " + "[" * 5000 + "x" + "]" * 5000 + "\n")
    assert finding.location.line == 2 and "nest" in finding.message  # libyaml's scanner stops at 1,000 flow levels by itself


def test_nesting_through_aliases_counts_the_expanded_depth():
    # each anchor wraps the previous one: a_i is i + 1 levels deep once expanded
    lines = ["a0: &a0 [x]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, 80)]
    finding = finding_of("\n".join(lines) + "\n")
    assert finding.location.line == MAX_DEPTH  # a63: mapping + its list + a62's 63 levels
    assert "aliases expanded" in finding.message


@pytest.mark.parametrize(
    "text, needle",
    [
        ("a: &x [*x]\n", "*x"),
        ("a: &x {b: *x}\n", "*x"),
        ("a: &top\n  b:\n    c: [1, *top]\n", "*top"),
        ("- &x [1, [2, *x]]\n", "*x"),
    ],
)
def test_an_alias_inside_its_own_anchor_is_refused(text, needle):
    finding = finding_of(text)
    assert (finding.location.line, finding.location.col) == line_col(text, needle)
    assert "inside its own anchor" in finding.message


def test_an_alias_after_its_anchor_is_fine():
    assert load_yaml("a: &x {b: 1}\nc: [*x, *x]\n", "f.yaml").data == {"a": {"b": 1}, "c": [{"b": 1}, {"b": 1}]}


def test_node_budget_is_exact_and_counts_alias_copies(monkeypatch):
    monkeypatch.setattr(yamlfile, "MAX_NODES", 10)
    assert len(load_yaml("[" + ", ".join("x" * 9) + "]", "f.yaml").data) == 9  # the list and 9 items
    assert "too many nodes" in finding_of("[" + ", ".join("x" * 10) + "]").message
    # 7 nodes written, 12 once the three aliases are expanded
    assert "too many nodes" in finding_of("- &a [1, 2]\n- *a\n- *a\n- *a\n").message


def test_text_over_the_size_limit_is_refused_before_parsing():
    finding = finding_of("a: [" + "x, " * (MAX_BYTES // 3) + "]\n")
    assert finding.location.line is None and f"{MAX_BYTES:,} bytes" in finding.message
    # the limit is in UTF-8 bytes, not characters
    assert "bytes" in finding_of("a: " + "é" * (MAX_BYTES // 2)).message


def test_reading_stops_one_byte_past_the_limit(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (MAX_BYTES + 1))
    with pytest.raises(RuleFileError, match="larger than"):
        read_text(big)
    (tmp_path / "ok.yaml").write_bytes(b"#" * MAX_BYTES)
    assert len(read_text(tmp_path / "ok.yaml")) == MAX_BYTES


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_an_endless_device_is_refused():
    with pytest.raises(RuleFileError, match="larger than"):
        read_text(Path("/dev/zero"))


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_bad_utf8_is_located(tmp_path, newline):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(f"version: 1{newline}name: café ".encode() + b"\xe9t\xe9\n")  # Latin-1 after UTF-8
    with pytest.raises(RuleFileError) as info:
        read_text(path)
    (finding,) = info.value.findings
    assert (finding.location.line, finding.location.col) == (2, 12)  # counted in characters
    assert "not UTF-8" in finding.message


@pytest.mark.parametrize(
    "text, line, col, code",
    [
        ("a: x\x00y\n", 1, 5, "U+0000"),
        ("a: 1\nb: \x1b[31mred\n", 2, 4, "U+001B"),
        ("a: 1\r\nb: 2\r\nc: \x7f\n", 3, 4, "U+007F"),
        ("a: 1\rb: '\ud800'\n", 2, 5, "U+D800"),  # a lone surrogate, from a str made in code
        ("a: \u2028b: \x0c", 2, 4, "U+000C"),  # YAML counts LS as a line break, so must the location
    ],
)
def test_characters_yaml_forbids_are_located(text, line, col, code):
    finding = finding_of(text)
    assert (finding.location.line, finding.location.col) == (line, col)
    assert code in finding.message


def test_integers_longer_than_300_digits_stay_text():
    assert load_yaml("n: " + "9" * 300, "f.yaml").data["n"] == int("9" * 300)
    assert load_yaml("n: " + "9" * 301, "f.yaml").data["n"] == "9" * 301
    assert load_yaml("n: " + "9" * 5000, "f.yaml").data["n"] == "9" * 5000  # int() would refuse it
