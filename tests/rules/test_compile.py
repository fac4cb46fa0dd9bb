"""compile: the example validates; every problem is a located file:line:col finding."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from assignment_engine import Engine, RuleFileError, User, compile_rules, load_rules
from assignment_engine.cli import main
from assignment_engine.rules.yamlfile import MAX_BYTES, MAX_DEPTH
from conftest import EXAMPLE_FIELDS, EXAMPLE_RULES, EXAMPLE_USERS, line_col, rules_text


def findings_of(text: str, source: str = "r.yaml") -> list[tuple[int | None, int | None, str]]:
    with pytest.raises(RuleFileError) as info:
        compile_rules(text, source)
    return [(f.location.line, f.location.col, f.message) for f in info.value.findings]


# ---------------------------------------------------------------- the example


def test_example_rule_file_validates(tmp_path):
    path = tmp_path / "territories.yaml"
    path.write_text(EXAMPLE_RULES, encoding="utf-8")
    rules = load_rules(path)
    assert list(rules.territories) == ["strategic", "amer", "amer-west", "amer-east"]
    assert rules.territories["amer-west"].parent == "amer"
    assert rules.territories["amer-east"].type == "geo"  # taken from the parent
    assert rules.territories["strategic"].priority == 1
    assert rules.territories["amer-west"].priority == 2
    assert rules.territories["amer-west"].owners == ["u010", "u011"]  # role defaults to owner
    # the inherited 'americas' rule applies to both children, before their own rule
    labels = [r.label for r in rules.territories["amer-east"].applicable]
    assert labels == ["americas", "rule 1"]
    assert [b.label for b in rules.balance] == ["revenue", "accounts"]
    assert [b.tolerance for b in rules.balance] == [0.10, 0.15]
    assert rules.policy.hierarchy == "follow_ultimate_parent"


def test_example_condition_values_are_strings_not_yaml11_types():
    rules = compile_rules(EXAMPLE_RULES)
    east = rules.territories["amer-east"].rules[0].condition.describe()
    assert "10000" in east and "19999" in east
    strategic = rules.territories["strategic"].rules[0].condition
    assert strategic.value == 1e9


def test_norway_and_ontario_in_rule_values_stay_codes():
    text = rules_text(
        """
        - id: norway
          type: geo
          rules: [{when: {country: NO, state: ON}}]
          members: [{user: u1}]
        - id: zip
          type: geo
          rules: [{when: {state: [OFF, yes], country: {eq: 01234}}}]
          members: [{user: u1}]
        """
    )
    engine = Engine(compile_rules(text))
    assert engine.match({"id": "a", "country": "NO", "state": "ON", "revenue": None}).territories == ["norway"]
    assert engine.match({"id": "b", "country": "01234", "state": "yes", "revenue": None}).territories == ["zip"]
    # '01234' is not the octal 668 nor the integer 1234
    assert engine.match({"id": "c", "country": "1234", "state": "yes", "revenue": None}).territories == []
    assert engine.match({"id": "d", "country": "668", "state": "yes", "revenue": None}).territories == []


def test_quoted_true_in_a_string_field_is_fine_but_bare_true_is_an_error():
    text = rules_text(
        """
        - id: t
          type: geo
          rules: [{when: {country: true}}]
        """
    )
    ((line, col, message),) = findings_of(text)
    assert (line, col) == line_col(text, "true}")
    assert "quote the value" in message
    ok = text.replace("country: true", "country: 'true'")
    assert compile_rules(ok).territories["t"].rules


# ---------------------------------------------------------------- located errors


def test_typo_in_a_rule_field_is_located_with_a_suggestion():
    text = EXAMPLE_RULES.replace("when: {country: {in:", "when: {contry: {in:")
    ((line, col, message),) = findings_of(text)
    assert (line, col) == line_col(text, "contry")
    assert "unknown field 'contry'" in message
    assert "did you mean 'country'" in message


def test_typo_in_a_nested_any_condition_is_located():
    text = EXAMPLE_RULES.replace("- {postal_code: {between:", "- {postcode: {between:")
    ((line, col, message),) = findings_of(text)
    assert (line, col) == line_col(text, "postcode")
    assert "did you mean 'postal_code'" in message


def test_unknown_operator_is_located():
    text = EXAMPLE_RULES.replace("{annual_revenue: {gte: 1000000000}}", "{annual_revenue: {greater: 1000000000}}")
    ((line, col, message),) = findings_of(text)
    assert (line, col) == line_col(text, "greater")
    assert "unknown operator 'greater'" in message


def test_unknown_operator_suggests_the_close_one():
    text = EXAMPLE_RULES.replace("{annual_revenue: {gte: 1000000000}}", "{annual_revenue: {gtee: 1000000000}}")
    ((_, _, message),) = findings_of(text)
    assert "did you mean 'gte'" in message


def test_duplicate_territory_id_is_located_at_the_second():
    text = EXAMPLE_RULES.replace("- id: amer-east", "- id: amer-west")
    ((line, col, message),) = findings_of(text)
    assert (line, col) == line_col(text, "amer-west", nth=2)
    assert "duplicate territory id 'amer-west'" in message


def test_yaml_syntax_error_is_located_on_its_line():
    text = EXAMPLE_RULES.replace("    type: named\n", "    type: named\n   bad indentation: here\n")
    findings = findings_of(text)
    assert len(findings) == 1
    line, _, message = findings[0]
    assert line == line_col(text, "bad indentation")[0]
    assert message.startswith("YAML syntax error")


def test_unknown_top_level_key_is_located():
    text = EXAMPLE_RULES.replace("assignment:\n", "assigment:\n")
    findings = findings_of(text)
    assert len(findings) == 1
    line, col, message = findings[0]
    assert (line, col) == line_col(text, "assigment:")
    assert "unknown key 'assigment'" in message
    assert "did you mean 'assignment'" in message


def test_unknown_nested_key_is_located():
    text = EXAMPLE_RULES.replace("members: [{user: u012}, {user: u013}]", "memebers: [{user: u012}, {user: u013}]")
    ((line, col, message),) = findings_of(text)
    assert (line, col) == line_col(text, "memebers")
    assert "did you mean 'members'" in message


def test_duplicate_type_priorities_are_located():
    text = rules_text(
        """
        - id: a
          type: geo
        """,
        types="\n  - {name: named, priority: 1}\n  - {name: geo, priority: 1}",
    )
    ((line, _, message),) = findings_of(text)
    assert line == line_col(text, "{name: geo")[0]
    assert "priority 1 is already used by type 'named'" in message


def test_measure_on_a_non_numeric_field_is_located():
    text = EXAMPLE_RULES.replace("revenue: {field: annual_revenue}", "revenue: {field: industry}")
    ((line, col, message),) = findings_of(text)
    assert (line, col) == line_col(text, "industry}")
    assert "needs a numeric field" in message and "'industry' is string" in message


def test_measure_on_an_undeclared_field_is_located():
    text = EXAMPLE_RULES.replace("revenue: {field: annual_revenue}", "revenue: {field: annual_revenu}")
    ((line, _, message),) = findings_of(text)
    assert line == line_col(text, "annual_revenu}")[0]
    assert "did you mean 'annual_revenue'" in message


def test_unknown_type_of_a_territory_is_located():
    text = EXAMPLE_RULES.replace("type: named", "type: nammed")
    ((line, col, message),) = findings_of(text)
    assert (line, col) == line_col(text, "nammed")
    assert "did you mean 'named'" in message


def test_balance_on_an_unknown_measure_and_tier():
    text = EXAMPLE_RULES.replace(
        "balance: [{measure: revenue, tolerance: 0.10}, {measure: accounts, tolerance: 0.15}]",
        "balance: [{measure: revenu}, {measure: accounts, tier: kye}]",
    )
    findings = findings_of(text)
    messages = " | ".join(m for _, _, m in findings)
    assert "unknown measure 'revenu'" in messages
    assert "unknown tier 'kye'" in messages and "did you mean 'key'" in messages


def test_several_semantic_errors_are_all_reported_at_once_in_line_order():
    text = (
        EXAMPLE_RULES.replace("when: {country: {in:", "when: {contry: {in:")
        .replace("{annual_revenue: {gte: 1000000000}}", "{annual_revenue: {greater: 1000000000}}")
        .replace("- id: amer-east", "- id: amer-west")
        .replace("revenue: {field: annual_revenue}", "revenue: {field: industry}")
    )
    findings = findings_of(text)
    lines = [line for line, _, _ in findings]
    assert lines == sorted(lines)
    expected = {
        line_col(text, "industry}")[0]: "numeric field",
        line_col(text, "greater")[0]: "unknown operator",
        line_col(text, "contry")[0]: "unknown field",
        line_col(text, "amer-west", nth=2)[0]: "duplicate territory id",
    }
    got = {line: message for line, _, message in findings}
    for line, fragment in expected.items():
        assert fragment in got.get(line, ""), (line, fragment, findings)
    assert len(findings) == 4


def test_schema_and_semantic_errors_are_reported_together():
    """The contract: several errors in one file are all reported at once.

    An unknown key (a schema error) and a typo'd field (a semantic error) in the
    same file must both be reported; a user should not have to fix and re-run.
    """
    text = EXAMPLE_RULES.replace("when: {country: {in:", "when: {contry: {in:").replace(
        "    type: named\n", "    type: named\n    colour: blue\n"
    )
    findings = findings_of(text)
    messages = [m for _, _, m in findings]
    assert any("unknown key 'colour'" in m for m in messages), findings
    assert any("unknown field 'contry'" in m for m in messages), findings


def test_several_schema_errors_are_reported_at_once():
    text = EXAMPLE_RULES.replace("assignment:\n", "assigment:\n").replace("    type: named\n", "    type: named\n    colour: blue\n")
    findings = findings_of(text)
    assert [line for line, _, _ in findings] == [line_col(text, "colour")[0], line_col(text, "assigment")[0]]


def test_rendered_error_has_file_line_col_prefix_and_caret():
    text = EXAMPLE_RULES.replace("when: {country: {in:", "when: {contry: {in:")
    with pytest.raises(RuleFileError) as info:
        compile_rules(text, "rules/territories.yaml")
    line, col = line_col(text, "contry")
    rendered = str(info.value).splitlines()
    assert rendered[0].startswith(f"rules/territories.yaml:{line}:{col}: unknown field 'contry'")
    assert rendered[1].strip() == text.splitlines()[line - 1].strip()
    assert rendered[2].index("^") - 4 == col - 1


def test_missing_required_keys_are_reported():
    findings = findings_of("version: 1\nfields: {a: string}\n")
    messages = " ".join(m for _, _, m in findings)
    assert "missing required key 'territory_types'" in messages
    assert "missing required key 'territories'" in messages


def test_unreadable_rule_file_is_a_rule_file_error(tmp_path):
    with pytest.raises(RuleFileError, match="cannot read rule file"):
        load_rules(tmp_path / "nope.yaml")


# ---------------------------------------------------------------- members


def test_member_not_in_users_is_located_by_check_members():
    engine = Engine(compile_rules(EXAMPLE_RULES, "example.yaml"))
    users = [User(u) for u in EXAMPLE_USERS if u != "u013"]
    with pytest.raises(RuleFileError) as info:
        engine.check_members(users, "users.csv")
    ((finding),) = info.value.findings
    assert (finding.location.line, finding.location.col) == line_col(EXAMPLE_RULES, "u013")
    assert "u013" in finding.message and "users.csv" in finding.message
    assert str(info.value).startswith(f"example.yaml:{finding.location.line}:{finding.location.col}:")


def test_member_not_in_users_stops_assign_with_located_error():
    engine = Engine(compile_rules(EXAMPLE_RULES, "example.yaml"))
    users = [User(u) for u in EXAMPLE_USERS if u not in ("u001", "u012")]
    table = engine.table([{"id": "A", **dict.fromkeys(EXAMPLE_FIELDS), "country": "US", "state": "CA"}])
    with pytest.raises(RuleFileError) as info:
        engine.assign(table, users, effort=1.0)
    lines = sorted(f.location.line for f in info.value.findings)
    assert lines == sorted([line_col(EXAMPLE_RULES, "u001")[0], line_col(EXAMPLE_RULES, "u012")[0]])


def test_member_listed_twice_is_located():
    text = EXAMPLE_RULES.replace("members: [{user: u010}, {user: u011}]", "members: [{user: u010}, {user: u010}]")
    ((line, col, message),) = findings_of(text)
    assert (line, col) == line_col(text, "u010", nth=2)
    assert "listed twice" in message


# ---------------------------------------------------------------- regex and tiers


def test_bad_regex_is_a_located_error():
    text = EXAMPLE_RULES.replace("{annual_revenue: {gte: 1000000000}}", "{industry: {matches: '(unclosed'}}")
    ((line, _, message),) = findings_of(text)
    assert line == line_col(text, "(unclosed")[0]
    assert "bad regular expression" in message


def test_tier_levels_must_grow():
    text = EXAMPLE_RULES.replace("{name: growth, top: 0.30}", "{name: growth, top: 0.01}")
    ((line, _, message),) = findings_of(text)
    assert line == line_col(text, "top: 0.01")[0]
    assert re.search(r"'top' must grow", message)


def test_wrong_value_type_is_located_at_the_value():
    text = rules_text(
        """
        - id: a
          type: geo
        """,
        types="\n  - {name: named, priority: 1}\n  - {name: geo, priority: high}",
    )
    ((line, col, message),) = findings_of(text)
    assert (line, col) == line_col(text, "high")
    assert "priority" in message


def test_bad_territory_id_is_located():
    text = EXAMPLE_RULES.replace("- id: amer-west", "- id: 'amer west!'")
    ((line, _, message),) = findings_of(text)
    assert line == line_col(text, "amer west!")[0]
    assert "id" in message


# ---------------------------------------------------------------- hostile and nonsense values


def test_conditions_nested_past_the_limit_are_located_not_a_recursion_error():
    deep = "any: [" * 250 + "{country: US}" + "]" * 250
    text = EXAMPLE_RULES.replace("when: {annual_revenue: {gte: 1000000000}}", "when: {" + deep + "}")
    ((line, _, message),) = findings_of(text)
    assert line == line_col(text, "any: [")[0]
    assert f"nested more than {MAX_DEPTH} levels" in message


def test_conditions_nested_as_deep_as_people_write_them_still_work():
    deep = "any: [{not: {" * 12 + "country: US" + "}}]" * 12  # 36 levels, the rule itself at 6
    engine = Engine(compile_rules(EXAMPLE_RULES.replace("when: {annual_revenue: {gte: 1000000000}}", "when: {" + deep + "}")))
    unknown = dict.fromkeys(EXAMPLE_FIELDS)
    assert engine.match({**unknown, "id": "a", "country": "US", "state": "ZZ"}).territories == ["strategic", "amer"]
    assert engine.match({**unknown, "id": "b", "country": "FR"}).territories == []


def test_a_recursive_alias_is_located():
    text = EXAMPLE_RULES.replace("rules: [{when: {state: {in: [CA, OR, WA, NV]}}}]", "rules: &loop [{when: {any: *loop}}]")
    ((line, col, message),) = findings_of(text)
    assert (line, col) == line_col(text, "*loop")
    assert "inside its own anchor" in message


@pytest.mark.parametrize(
    "old, new, needle, fragment",
    [
        ("version: 1", "version: true", "true", "version: must be the integer 1, not true"),
        ("version: 1", "version: 1.0", "1.0", "version: must be the integer 1, not 1.0"),
        ("version: 1", "version: '1'", "'1'", "version: must be the integer 1, not '1'"),
        (
            "{name: geo, priority: 2}",
            "{name: geo, priority: 99999999999999999999999}",
            "999",
            "priority: Input should be less than or equal to 1000000",
        ),
        ("{name: geo, priority: 2}", "{name: geo, priority: 2.0}", "2.0", "priority: Input should be a valid integer, not 2.0"),
        (
            "{name: geo, priority: 2}",
            "{name: geo, priority: 2, overlay: yes}",
            "yes",
            "overlay: Input should be a valid boolean, not 'yes'",
        ),
        ("inherit: true", "inherit: on", "on,", "inherit: Input should be a valid boolean, not 'on'"),
        ("accounts: {constant: 1}", "accounts: {constant: 1e309}", "1e309", "constant: Input should be a finite number"),
        (
            "accounts: {constant: 1}",
            "accounts: {constant: 2e15}",
            "2e15",
            "constant: Input should be less than or equal to 1000000000000000",
        ),
        ("accounts: {constant: 1}", "accounts: {constant: 1_000}", "1_000", "constant: Input should be a valid number, not '1_000'"),
        ("accounts: {constant: 1}", "accounts: {constant: '1000'}", "'1000'", "constant: Input should be a valid number, not '1000'"),
        ("accounts: {constant: 1}", "accounts: {constant: true}", "true", "constant: Input should be a valid number, not true"),
        ("tolerance: 0.10", "tolerance: .nan", ".nan", "tolerance: Input should be a valid number, not '.nan'"),
        ("tolerance: 0.10", "tolerance: nan", "nan", "tolerance: Input should be a valid number, not 'nan'"),
        ("tolerance: 0.10", "tolerance: -.inf", "-.inf", "tolerance: Input should be a valid number, not '-.inf'"),
        (
            "hierarchy: follow_ultimate_parent ",
            "seed: 2147483648\n  hierarchy: follow_ultimate_parent ",
            "2147483648",
            "seed: Input should be less than or equal to 2147483647",
        ),
        (
            "hierarchy: follow_ultimate_parent ",
            "seed: -1\n  hierarchy: follow_ultimate_parent ",
            "-1",
            "seed: Input should be greater than or equal to 0",
        ),
        (
            "hierarchy: follow_ultimate_parent ",
            "time_limit: 1e400\n  hierarchy: follow_ultimate_parent ",
            "1e400",
            "time_limit: Input should be a finite number",
        ),
        (
            "hierarchy: follow_ultimate_parent ",
            "as_of: '2026-13-45'\n  hierarchy: follow_ultimate_parent ",
            "'2026-13-45'",
            "as_of: '2026-13-45' is not a date: month must be in 1..12",
        ),
        (
            "hierarchy: follow_ultimate_parent ",
            "as_of: 2026-02-30\n  hierarchy: follow_ultimate_parent ",
            "2026-02-30",
            "as_of: '2026-02-30' is not a date: day is out of range for month",
        ),
        (
            "hierarchy: follow_ultimate_parent ",
            "as_of: next week\n  hierarchy: follow_ultimate_parent ",
            "next week",
            "as_of: use a date YYYY-MM-DD, not 'next week'",
        ),
        (
            "assignment:\n",
            "opportunities: {keep_owner: {closing_within_days: 99999999999}}\nassignment:\n",
            "99999999999",
            "closing_within_days: Input should be less than or equal to 36500",
        ),
        (
            "assignment:\n",
            "opportunities: {measures: {deals: {constant: .inf}}}\nassignment:\n",
            ".inf",
            "constant: Input should be a valid number, not '.inf'",
        ),
    ],
)
def test_values_out_of_range_or_of_the_wrong_type_are_located_not_converted(old, new, needle, fragment):
    assert old in EXAMPLE_RULES
    text = EXAMPLE_RULES.replace(old, new, 1)
    ((line, col, message),) = findings_of(text)
    assert (line, col) == line_col(text, needle)
    assert fragment in message


def test_whole_numbers_are_fine_where_decimals_are_expected_and_limits_are_inclusive():
    text = (
        EXAMPLE_RULES.replace("tolerance: 0.10", "tolerance: 1")
        .replace("accounts: {constant: 1}", "accounts: {constant: 1000000000000000}")
        .replace("{name: geo, priority: 2}", "{name: geo, priority: 1000000}")
        .replace("hierarchy: follow_ultimate_parent ", "seed: 2147483647\n  time_limit: 3\n  hierarchy: follow_ultimate_parent ")
        .replace("assignment:\n", "opportunities: {keep_owner: {closing_within_days: 36500}}\nassignment:\n  as_of: 2024-02-29\n")
    )
    model = compile_rules(text).model
    assert model.assignment.balance is not None and model.assignment.balance[0].tolerance == 1.0
    assert isinstance(model.assignment.balance[0].tolerance, float) and isinstance(model.assignment.time_limit, float)
    assert model.measures["accounts"].constant == 1e15
    assert (model.assignment.seed, model.territory_types[1].priority) == (2**31 - 1, 1_000_000)
    assert model.assignment.as_of == "2024-02-29"


def test_the_shipped_rule_file_loads_strictly():
    rules = load_rules(Path(__file__).parents[2] / "rules" / "territories.yaml")
    assert rules.model.assignment.as_of == "2026-11-22" and len(rules.territories) > 20


def test_text_over_the_size_limit_is_refused_before_parsing():
    started = time.perf_counter()
    with pytest.raises(RuleFileError, match=f"larger than {MAX_BYTES:,} bytes"):
        compile_rules(EXAMPLE_RULES + "#" * MAX_BYTES)
    assert time.perf_counter() - started < 1


def test_an_oversized_or_binary_rule_file_is_a_rule_file_error(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_bytes(EXAMPLE_RULES.encode() + b"#" * MAX_BYTES)
    with pytest.raises(RuleFileError, match="larger than"):
        load_rules(big)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"version: 1\n\x00\x01\x02")
    ((line, col, message),) = [
        (f.location.line, f.location.col, f.message) for f in pytest.raises(RuleFileError, load_rules, binary).value.findings
    ]
    assert (line, col) == (2, 1) and "U+0000" in message


def test_cli_validate_prints_one_located_line_for_a_hostile_file(tmp_path):
    path = tmp_path / "deep.yaml"
    text = "version: 1\nterritories: &t [{id: a, children: *t}]\n"
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    line, col = line_col(text, "*t")
    assert result.output.startswith(f"{path}:{line}:{col}: alias *t is inside its own anchor")
