"""compile: the example validates; every problem is a located file:line:col finding."""

from __future__ import annotations

import re

import pytest

from assignment_engine import Engine, RuleFileError, User, compile_rules, load_rules

from conftest import EXAMPLE_RULES, EXAMPLE_USERS, line_col, rules_text


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
    assert engine.match({"id": "a", "country": "NO", "state": "ON"}).territories == ["norway"]
    assert engine.match({"id": "b", "country": "01234", "state": "yes"}).territories == ["zip"]
    # '01234' is not the octal 668 nor the integer 1234
    assert engine.match({"id": "c", "country": "1234", "state": "yes"}).territories == []
    assert engine.match({"id": "d", "country": "668", "state": "yes"}).territories == []


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
    line, col, message = findings[0]
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
    ((line, col, message),) = findings_of(text)
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
    table = engine.table([{"id": "A", "country": "US", "state": "CA"}])
    with pytest.raises(RuleFileError) as info:
        engine.assign(table, users, time_limit=1.0)
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
    ((line, col, message),) = findings_of(text)
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
    ((line, col, message),) = findings_of(text)
    assert line == line_col(text, "amer west!")[0]
    assert "id" in message
