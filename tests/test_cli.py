"""cli: validate / assign / explain / schema through click's CliRunner."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from assignment_engine.cli import main
from conftest import EXAMPLE_RULES, line_col

LOCATED = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+):(?P<col>\d+): (?P<message>.+)$", re.MULTILINE)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_validate_good_file_exits_0(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open("rules.yaml", "w", encoding="utf-8") as handle:
        handle.write(EXAMPLE_RULES)
    result = runner.invoke(main, ["validate", "rules.yaml"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "rules.yaml: valid (4 territories, 5 members)\n"


def test_validate_good_file_json(runner, example_files):
    result = runner.invoke(main, ["validate", str(example_files["rules"]), "--format", "json", "--users", str(example_files["users"])])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"valid": True, "territories": 4, "members": 5, "warnings": [], "deprecations": []}


def test_validate_findings_exit_1_with_located_lines(runner, tmp_path):
    text = EXAMPLE_RULES.replace("when: {country: {in:", "when: {contry: {in:").replace(
        "{annual_revenue: {gte: 1000000000}}", "{annual_revenue: {greater: 1}}"
    )
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    result = runner.invoke(main, ["validate", str(path)])
    assert result.exit_code == 1
    found = [(int(m["line"]), int(m["col"]), m["message"]) for m in LOCATED.finditer(result.stderr)]
    assert [(line, col) for line, col, _ in found] == [line_col(text, "greater"), line_col(text, "contry")]
    assert all(m["file"] == str(path) for m in LOCATED.finditer(result.stderr))
    assert "did you mean 'country'" in found[1][2]
    assert result.stdout == ""


def test_validate_findings_as_json(runner, tmp_path):
    path = tmp_path / "bad.yaml"
    text = EXAMPLE_RULES.replace("- id: amer-east", "- id: amer-west")
    path.write_text(text, encoding="utf-8")
    result = runner.invoke(main, ["validate", str(path), "--format", "json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["valid"] is False
    line, col = line_col(text, "amer-west", nth=2)
    assert data["findings"] == [{"location": f"{path}:{line}:{col}", "message": "duplicate territory id 'amer-west'"}]


def test_validate_with_users_reports_unknown_members(runner, example_files, tmp_path):
    users = tmp_path / "few.csv"
    users.write_text("id\nu001\nu010\nu011\nu012\n", encoding="utf-8")
    result = runner.invoke(main, ["validate", str(example_files["rules"]), "--users", str(users)])
    assert result.exit_code == 1
    (match,) = list(LOCATED.finditer(result.stderr))
    assert (int(match["line"]), int(match["col"])) == line_col(EXAMPLE_RULES, "u013")
    assert "u013" in match["message"]


def test_validate_missing_file_is_a_finding(runner, tmp_path):
    result = runner.invoke(main, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert "nope.yaml" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["validate"],
        ["validate", "a.yaml", "--format", "xml"],
        ["validate", "a.yaml", "--users", "/definitely/not/here.csv"],
        ["assign", "--rules", "r.yaml"],
        ["nonsense-command"],
        ["explain"],
    ],
)
def test_usage_errors_exit_2(runner, args):
    result = runner.invoke(main, args)
    assert result.exit_code == 2, result.output


def test_assign_writes_plan_and_prints_json_summary(runner, example_files, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(
        main,
        [
            "assign",
            "--rules",
            str(example_files["rules"]),
            "--accounts",
            str(example_files["accounts"]),
            "--users",
            str(example_files["users"]),
            "--out",
            str(out),
            "--format",
            "json",
            "--workers",
            "1",
            "--effort",
            "1",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["accounts"] == 6
    assert summary["unassigned"] == [{"account_id": "NOR", "reason": "matched no territory"}]
    assert {u["user_id"] for u in summary["users"]} == {"u001", "u010", "u011", "u012", "u013"}
    assert json.loads((out / "summary.json").read_text(encoding="utf-8")) == summary
    lines = (out / "accounts.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("account_id,owner_id,territory_id,previous_owner_id,moved")
    assert len(lines) == 7
    big = next(json.loads(line) for line in (out / "accounts.jsonl").read_text(encoding="utf-8").splitlines() if '"BIG"' in line)
    assert (big["owner_id"], big["territory_id"]) == ("u001", "strategic")


def test_assign_bad_data_exits_1_with_location(runner, example_files, tmp_path):
    accounts = tmp_path / "bad.csv"
    lines = example_files["accounts"].read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    cells = lines[3].split(",")
    cells[header.index("annual_revenue")] = "abc"
    lines[3] = ",".join(cells)
    accounts.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = runner.invoke(
        main,
        [
            "assign",
            "--rules",
            str(example_files["rules"]),
            "--accounts",
            str(accounts),
            "--users",
            str(example_files["users"]),
            "--out",
            str(tmp_path / "o"),
            "--quiet",
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 1
    assert f"{accounts}:4:annual_revenue:" in result.stderr
    assert not (tmp_path / "o" / "accounts.csv").exists()


def test_explain_shows_rules_and_owner(runner, example_files):
    result = runner.invoke(
        main,
        [
            "explain",
            "E2",
            "--rules",
            str(example_files["rules"]),
            "--accounts",
            str(example_files["accounts"]),
            "--users",
            str(example_files["users"]),
            "--quiet",
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "account E2" in text
    assert "amer-east (geo, priority 2): MATCHED" in text
    assert "postal_code between 10000 and 19999" in text
    assert "strategic (named, priority 1): no match" in text
    assert re.search(r"^owner: u01[23] ", text, re.MULTILINE)
    assert "territory: amer-east" in text


def test_explain_json(runner, example_files):
    result = runner.invoke(
        main,
        [
            "explain",
            "BIG",
            "--rules",
            str(example_files["rules"]),
            "--accounts",
            str(example_files["accounts"]),
            "--users",
            str(example_files["users"]),
            "--quiet",
            "--workers",
            "1",
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["owner_id"] == "u001" and data["territory_id"] == "strategic"
    assert any("enterprise: ✓" in line for line in data["explanation"])


def test_explain_unknown_account_exits_1(runner, example_files):
    result = runner.invoke(
        main,
        [
            "explain",
            "NOPE",
            "--rules",
            str(example_files["rules"]),
            "--accounts",
            str(example_files["accounts"]),
            "--users",
            str(example_files["users"]),
            "--quiet",
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 1
    assert "NOPE" in result.stderr


def test_schema_prints_json_schema(runner, tmp_path):
    result = runner.invoke(main, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert "territories" in schema["properties"]
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert set(schema["required"]) >= {"version", "territory_types", "territories"}
    target = tmp_path / "schema.json"
    assert runner.invoke(main, ["schema", "--out", str(target)]).exit_code == 0
    assert json.loads(target.read_text(encoding="utf-8")) == schema


def test_validate_yaml_syntax_error_exit_1(runner, tmp_path):
    path = tmp_path / "broken.yaml"
    text = EXAMPLE_RULES.replace("  hierarchy: follow_ultimate_parent", "  hierarchy: [follow_ultimate_parent")
    path.write_text(text, encoding="utf-8")
    result = runner.invoke(main, ["validate", str(path)])
    assert result.exit_code == 1
    match = LOCATED.search(result.stderr)
    assert match and "YAML syntax error" in match["message"]
    assert int(match["line"]) >= line_col(text, "hierarchy: [")[0]


def test_validate_names_the_file_exactly_even_with_brackets(runner, tmp_path, monkeypatch):
    """A path is data, not rich markup: 'rules[v2].yaml' must be printed as written."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "team[emea]").mkdir()
    (tmp_path / "team[emea]" / "rules[v2].yaml").write_text(EXAMPLE_RULES, encoding="utf-8")
    result = runner.invoke(main, ["validate", "team[emea]/rules[v2].yaml"])
    assert result.exit_code == 0, result.output
    assert "team[emea]/rules[v2].yaml: valid" in result.stdout


def test_validate_success_line_is_not_wrapped(runner, tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 40)
    deep.mkdir(parents=True)
    path = deep / "territories.yaml"
    path.write_text(EXAMPLE_RULES, encoding="utf-8")
    result = runner.invoke(main, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert f"{path}: valid (4 territories, 5 members)" in result.stdout.splitlines()


def test_assign_hierarchy_errors_exit_1_or_are_reported(runner, example_files, tmp_path):
    accounts = tmp_path / "cyclic.csv"
    accounts.write_text(
        "id,parent_id,country,state,postal_code,industry,annual_revenue,employees\n"
        "A,B,US,CA,1,x,1,1\nB,A,US,CA,1,x,1,1\nC,,US,NY,1,x,1,1\n",
        encoding="utf-8",
    )
    common = [
        "assign",
        "--rules",
        str(example_files["rules"]),
        "--accounts",
        str(accounts),
        "--users",
        str(example_files["users"]),
        "--quiet",
        "--workers",
        "1",
    ]
    result = runner.invoke(main, [*common, "--out", str(tmp_path / "o1")])
    assert result.exit_code == 1
    assert "cycle" in result.stderr and f"{accounts}:" in result.stderr
    result = runner.invoke(main, [*common, "--out", str(tmp_path / "o2"), "--hierarchy-errors", "independent", "--format", "json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert len(summary["hierarchy_problems"]) == 1 and "cycle" in summary["hierarchy_problems"][0]
    assert summary["accounts"] == 3


def test_assign_text_report(runner, example_files, tmp_path):
    result = runner.invoke(
        main,
        [
            "assign",
            "--rules",
            str(example_files["rules"]),
            "--accounts",
            str(example_files["accounts"]),
            "--users",
            str(example_files["users"]),
            "--out",
            str(tmp_path / "o"),
            "--quiet",
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert re.search(r"unassigned:\s+1\b", result.stdout)
    assert (tmp_path / "o" / "accounts.jsonl").exists()
