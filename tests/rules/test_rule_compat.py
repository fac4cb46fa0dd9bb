"""The rule-file format as a promise: every version-1 file an earlier commit accepted still validates and plans the same.

tests/compat/rules holds the rule files of the project's history (its README says where each comes from); a key
that moved within version 1 is read at its old place with a located warning (ruleset.MOVED_KEYS).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from assignment_engine import RuleFileError, compile_rules, demo_files, json_schema, load_rules, plan_files
from assignment_engine.cli import main
from assignment_engine.rules.ruleset import MOVED_KEYS, RuleFile
from assignment_engine.rules.yamlfile import load_yaml

ROOT = Path(__file__).parents[2]
COMPAT = sorted((ROOT / "tests" / "compat" / "rules").glob("*.yaml"))
OLD_AS_OF = ROOT / "tests" / "compat" / "rules" / "740d8a1-rules-territories.yaml"
# the same file one commit later, with the key at its new place and nothing else changed
NEW_AS_OF = ROOT / "tests" / "compat" / "rules" / "5a43c11-rules-territories.yaml"
MOVED_AS_OF = "'opportunities.as_of' moved to 'assignment.as_of'; read from here for now"
BASE = "version: 1\nterritory_types: [{name: geo, priority: 1}]\nterritories: [{id: t, type: geo}]\n"


def rewritten(text: str) -> str:
    """The file with every moved key written at its new place (as JSON, which is YAML)."""
    data = load_yaml(text, "old.yaml").data
    for key in MOVED_KEYS:
        parent = data
        for step in key.old[:-1]:
            parent = parent.get(step) or {}
        if key.old[-1] in parent:
            target = data
            for step in key.new[:-1]:
                target = target.setdefault(step, {})
            target[key.new[-1]] = parent.pop(key.old[-1])
    return json.dumps(data)


def test_the_folder_holds_the_files_of_history():
    assert len(COMPAT) >= 4 and OLD_AS_OF in COMPAT and NEW_AS_OF in COMPAT


@pytest.mark.parametrize("path", COMPAT, ids=lambda p: p.name)
def test_every_rule_file_of_an_earlier_commit_compiles_as_its_rewritten_form(path):
    """Each validates now; a deprecation is located at the old key; the compiled model is the one of the key at its new place."""
    text = path.read_text(encoding="utf-8")
    compiled = load_rules(path)
    lines = text.splitlines()
    for finding in compiled.deprecations:
        where = finding.location
        assert where.file == str(path) and where.line is not None and where.col is not None
        key = next(k for k in MOVED_KEYS if finding.message.startswith(f"'{k.old_name}' moved to '{k.new_name}'"))
        assert lines[where.line - 1][where.col - 1 :].startswith(key.old[-1])
    again = compile_rules(rewritten(text), "new.yaml")
    assert again.deprecations == []
    assert compiled.model == again.model
    assert [t.rule_label for t in compiled.territories.values()] == [t.rule_label for t in again.territories.values()]
    assert (compiled.balance, compiled.overlay_balance, compiled.segments) == (again.balance, again.overlay_balance, again.segments)


def test_the_old_as_of_file_warns_at_its_key_and_reads_the_date():
    compiled = load_rules(OLD_AS_OF)
    assert [str(d) for d in compiled.deprecations] == [f"{OLD_AS_OF}:101:3: {MOVED_AS_OF}"]
    assert compiled.model == load_rules(NEW_AS_OF).model
    assert str(compiled.run_date()) == "2026-11-22"
    assert [str(d) for d in load_rules(NEW_AS_OF).deprecations] == []


def test_the_old_as_of_file_plans_as_the_new_one():
    """Accounts and deals of the demo book, row for row (owners, territories, reasons), with the deprecation in the summary."""
    files = demo_files()
    old, old_deals = plan_files(OLD_AS_OF, files["accounts"], files["users"], opportunities=files["opportunities"])
    new, new_deals = plan_files(NEW_AS_OF, files["accounts"], files["users"], opportunities=files["opportunities"])
    assert old_deals is not None and new_deals is not None
    assert list(old.rows()) == list(new.rows())
    assert list(old_deals.rows()) == list(new_deals.rows())
    assert any("closes 2026-" in r["reason"] for r in old_deals.rows())  # the run date protected deals: it was read
    assert f"{OLD_AS_OF}:101:3: {MOVED_AS_OF}" in old.summary()["warnings"]
    assert not any("moved to" in w for w in new.summary()["warnings"])


def test_validate_lists_the_deprecation_in_text_and_json():
    runner = CliRunner()
    text = runner.invoke(main, ["validate", str(OLD_AS_OF)])
    assert text.exit_code == 0, text.output
    assert f"warning: {OLD_AS_OF}:101:3: {MOVED_AS_OF}" in text.stderr
    assert "valid (22 territories, 40 members)" in text.stdout
    result = runner.invoke(main, ["validate", str(OLD_AS_OF), "--format", "json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["valid"] and out["deprecations"] == [f"{OLD_AS_OF}:101:3: {MOVED_AS_OF}"] and out["deprecations"][0] in out["warnings"]


def test_a_key_given_at_both_places_is_an_error_at_both():
    text = BASE + 'assignment:\n  as_of: "2026-01-01"\nopportunities:\n  as_of: "2026-02-01"\n'
    with pytest.raises(RuleFileError) as caught:
        compile_rules(text, "both.yaml")
    assert [str(f) for f in caught.value.findings] == [
        "both.yaml:5:3: 'assignment.as_of' is given too as 'opportunities.as_of' (line 7): keep one",
        "both.yaml:7:3: 'opportunities.as_of' moved to 'assignment.as_of', which is given too (line 5): keep one",
    ]


def test_a_bad_value_at_the_old_place_is_located_and_named_there():
    text = BASE + 'opportunities:\n  closed_stages: [won]\n  as_of: "2026-13-01"\n  typo: 1\n'
    with pytest.raises(RuleFileError) as caught:
        compile_rules(text, "bad.yaml")
    assert [str(f.location) for f in caught.value.findings] == ["bad.yaml:6:10", "bad.yaml:7:3"]
    assert caught.value.findings[0].message.startswith("opportunities.as_of: '2026-13-01' is not a date")


def test_a_new_place_that_is_not_a_mapping_is_the_models_error():
    with pytest.raises(RuleFileError) as caught:
        compile_rules(BASE + 'assignment: [1]\nopportunities: {as_of: "2026-01-01"}\n', "list.yaml")
    assert {str(f.location) for f in caught.value.findings} == {"list.yaml:4:13", "list.yaml:5:17"}


@given(
    day=st.dates().map(str),
    assignment=st.sampled_from(["", "assignment: {seed: 3}\n", "assignment:\n  hierarchy: independent\n"]),
    opportunities=st.sampled_from(["opportunities: {{as_of: '{day}'}}\n", 'opportunities:\n  closed_stages: [won]\n  as_of: "{day}"\n']),
)
def test_the_old_place_compiles_as_the_new_for_any_date_and_layout(day, assignment, opportunities):
    old = compile_rules(BASE + assignment + opportunities.format(day=day), "old.yaml")
    (deprecation,) = old.deprecations
    assert deprecation.message == MOVED_AS_OF and deprecation.location.line is not None
    assert old.model.assignment.as_of == day
    assert old.model == compile_rules(rewritten(BASE + assignment + opportunities.format(day=day)), "new.yaml").model


def _schema_node(schema: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    node = schema
    for step in path:
        node = node["properties"][step]
        node = schema["$defs"][node["$ref"].split("/")[-1]] if "$ref" in node else node
    return node


def _deprecated(schema: dict[str, Any]) -> set[tuple[str, str]]:
    """(definition, key) of every property the schema marks deprecated."""
    return {
        (name, key)
        for name, d in [("", schema), *schema["$defs"].items()]
        for key, p in d.get("properties", {}).items()
        if p.get("deprecated")
    }


def test_the_moved_key_table_the_models_and_the_schema_agree():
    """Each old key: admitted by the schema as deprecated with its new key's type, absent from the models; nothing else deprecated."""
    schema = json_schema()
    assert len(_deprecated(schema)) == len(MOVED_KEYS)
    for key in MOVED_KEYS:
        old = _schema_node(schema, key.old[:-1])["properties"][key.old[-1]]
        new = _schema_node(schema, key.new[:-1])["properties"][key.new[-1]]
        assert old["deprecated"] is True and key.new_name in old["description"]
        assert {k: v for k, v in old.items() if k not in ("deprecated", "description")} == {
            k: v for k, v in new.items() if k != "description"
        }
        model: Any = RuleFile
        for step in key.old[:-1]:
            model = model.model_fields[step].annotation
        assert key.old[-1] not in model.model_fields  # the models stay strict: the old key is read by the table only
    assert json.loads((ROOT / "rule-file.schema.json").read_text(encoding="utf-8")) == schema


def test_docs_list_every_moved_key():
    docs = (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
    compatibility = docs[docs.index("## Compatibility") :]
    for key in MOVED_KEYS:
        assert f"| `{key.old_name}` | `{key.new_name}` | {key.since} |" in compatibility


def test_assign_prints_the_deprecation_and_keeps_it_in_the_summary(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        BASE.replace("type: geo}", "type: geo, members: [{user: u1}]}")
        + 'opportunities: {as_of: "2026-11-22", keep_owner: {closing_within_days: 30}}\n',
        encoding="utf-8",
    )
    (tmp_path / "accounts.csv").write_text("id\nA1\n", encoding="utf-8")
    (tmp_path / "users.csv").write_text("id\nu1\n", encoding="utf-8")
    out = tmp_path / "plan"
    args = [
        "assign",
        "--rules",
        str(rules),
        "--accounts",
        str(tmp_path / "accounts.csv"),
        "--users",
        str(tmp_path / "users.csv"),
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"warning: {rules}:4:17: {MOVED_AS_OF}" in " ".join(result.output.split()), result.output  # rich wraps long lines
    assert json.loads((out / "summary.json").read_text(encoding="utf-8"))["warnings"] == [f"{rules}:4:17: {MOVED_AS_OF}"]
    assert json.loads((out / "plan.json").read_text(encoding="utf-8"))["settings"]["as_of"] == "2026-11-22"
