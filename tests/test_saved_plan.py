"""The saved plan: plan.json's manifest and Plan.load, which rebuilds the plan assign made without solving."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from assignment_engine import DataError, Plan, assign_files, demo_files
from assignment_engine.cli import main
from assignment_engine.explain import explain_saved
from assignment_engine.planfile import InputFile, Manifest
from conftest import strip_timing


def reseal(plan: Path, **changes: Any) -> None:
    """Record a plan's files again in its plan.json (sha256 and plan id) after a test edited them, as a careful
    forger would, so that what catches the edit is the readers' own checks; ``changes`` replace manifest keys."""
    data = {**json.loads((plan / "plan.json").read_text(encoding="utf-8")), **changes}
    data["outputs"] = {name: hashlib.sha256((plan / name).read_bytes()).hexdigest() for name in data["outputs"]}
    inputs = [InputFile(**f) for f in data["inputs"]]
    data["plan_id"] = Manifest(data["engine_version"], inputs, data["settings"], data["headline"], data["outputs"], data["format"]).plan_id
    (plan / "plan.json").write_text(json.dumps(data), encoding="utf-8")


@pytest.fixture(scope="module")
def demo_plan(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("saved") / "plan"
    files = demo_files()
    run = assign_files(files["rules"], files["accounts"], files["users"], out, opportunities=files["opportunities"], workers=1, effort=0.5)
    return out, run


def test_manifest_names_every_input_with_its_fingerprint(demo_plan):
    out, run = demo_plan
    data = json.loads((out / "plan.json").read_text(encoding="utf-8"))
    files = demo_files()
    assert [(f["role"], f["path"], f["rows"]) for f in data["inputs"]] == [
        ("rules", str(files["rules"].resolve()), None),
        ("accounts", str(files["accounts"].resolve()), 2000),
        ("users", str(files["users"].resolve()), 40),
        ("opportunities", str(files["opportunities"].resolve()), 1203),
    ]
    assert data["settings"]["seed"] == 0 and data["settings"]["effort"] == 0.5 and data["settings"]["time_limit"] is None and data["settings"]["workers"] == 1
    assert data["headline"]["accounts"] == 2000
    assert data["headline"]["moved"] == run.summary["moved"]["accounts"]
    assert Manifest.read(out).plan_id == data["plan_id"] and len(data["plan_id"]) == 16
    assert Manifest.verified(out, inputs=("rules", "accounts", "users", "opportunities")).outputs == data["outputs"]
    assert set(data["outputs"]) == {"accounts.csv", "accounts.jsonl", "opportunities.csv", "opportunities.jsonl", "summary.json"}


def test_plan_id_depends_on_content_and_settings_not_on_workers(demo_plan):
    manifest = Manifest.read(demo_plan[0])
    same = Manifest(manifest.engine_version, manifest.inputs, {**manifest.settings, "workers": 7}, outputs=manifest.outputs)
    other_seed = Manifest(manifest.engine_version, manifest.inputs, {**manifest.settings, "seed": 1}, outputs=manifest.outputs)
    assert same.plan_id == manifest.plan_id
    assert other_seed.plan_id != manifest.plan_id
    for name in ("accounts.jsonl", "opportunities.jsonl"):  # the rows are part of the id
        assert replace(manifest, outputs={**manifest.outputs, name: "0" * 64}).plan_id != manifest.plan_id
    assert replace(manifest, outputs={**manifest.outputs, "summary.json": "0" * 64}).plan_id == manifest.plan_id  # it holds wall-clock seconds
    assert demo_plan[1].manifest == manifest  # assign_files returns the manifest written


def test_load_rebuilds_the_same_plan_without_solving(demo_plan, monkeypatch):
    out, run = demo_plan
    import assignment_engine.engine as engine_module

    monkeypatch.setattr(engine_module, "solve", lambda *a, **k: pytest.fail("Plan.load must not solve"))
    loaded = Plan.load(out)
    assert list(loaded.rows()) == list(run.plan.rows())
    assert strip_timing(loaded.summary()) == strip_timing(run.plan.summary())
    some = run.plan.accounts.ids[17]
    assert loaded.explain(some) == run.plan.explain(some)


def test_load_refuses_a_plan_whose_inputs_changed(tmp_path, example_files):
    out = tmp_path / "plan"
    assign_files(example_files["rules"], example_files["accounts"], example_files["users"], out, workers=1, effort=0.5)
    with example_files["users"].open("a", encoding="utf-8") as handle:
        handle.write("u099,New\n")
    with pytest.raises(DataError) as caught:
        Plan.load(out)
    (finding,) = caught.value.findings
    assert str(finding.location) == str(out / "plan.json")
    assert f"users file {example_files['users'].resolve()} changed since the plan was made" in finding.message


def test_load_of_a_directory_that_is_no_plan(tmp_path):
    with pytest.raises(DataError, match="not a saved plan: no plan.json"):
        Plan.load(tmp_path)


def test_a_damaged_manifest_is_located(demo_plan, tmp_path):
    bad = tmp_path / "plan"
    bad.mkdir()
    data = json.loads((demo_plan[0] / "plan.json").read_text(encoding="utf-8"))
    data["settings"]["seed"] = 99  # edited by hand: the id no longer matches
    (bad / "plan.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(DataError, match="plan_id does not match"):
        Manifest.read(bad)
    (bad / "plan.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match="cannot read the plan manifest"):
        Manifest.read(bad)


def test_explain_from_a_saved_plan_is_the_plans_explanation(demo_plan):
    out, run = demo_plan
    plan, deals = run.plan, run.deals
    moved = [r["account_id"] for r in plan.rows() if r["moved"]][:3]
    family = next(r["account_id"] for r in plan.rows() if r["ultimate_parent_id"])
    unassigned = next(r["account_id"] for r in plan.rows() if r["status"] == "unassigned")
    for account_id in [*moved, family, unassigned, plan.accounts.ids[0]]:
        row, lines = explain_saved(out, account_id)
        assert lines == plan.explain(account_id)
        assert row == plan.row(plan.accounts.position(account_id))
    deal_id = deals.deals.table.ids[5]
    row, lines = explain_saved(out, deal_id)
    assert lines == deals.explain(deal_id)


def test_explain_from_a_saved_plan_in_the_cli(demo_plan):
    out, run = demo_plan
    account_id = next(r["account_id"] for r in run.plan.rows() if r["moved"])
    result = CliRunner().invoke(main, ["explain", account_id, "--plan", str(out), "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["explanation"] == run.plan.explain(account_id)
    assert data["owner_id"] == run.plan.row(run.plan.accounts.position(account_id))["owner_id"]
    unknown = CliRunner().invoke(main, ["explain", "NOPE", "--plan", str(out)])
    assert unknown.exit_code == 1
    assert "'NOPE' is neither an account nor an opportunity of this plan" in unknown.stderr
    usage = CliRunner().invoke(main, ["explain", account_id])
    assert usage.exit_code == 2 and "give --plan DIR" in usage.stderr
