"""The saved plan: plan.json's manifest and Plan.load, which rebuilds the plan assign made without solving."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import assignment_engine.engine as engine_module
from assignment_engine import AssignmentEngineError, DataError, Plan, RuleFileError, apply_plan, assign_files, demo_files
from assignment_engine.cli import main
from assignment_engine.files.manifest import FORMAT, InputFile, Manifest
from assignment_engine.review.diff import compare_plans, diff_plan
from assignment_engine.review.explain import explain_saved
from assignment_engine.routing.router import Router
from assignment_engine.saved import read_baseline
from conftest import WEST_EAST, engine_of, rules_text, strip_timing


def reseal(plan: Path, **changes: Any) -> None:
    """Record a plan's files again in its plan.json (sha256 and plan id) after a test edited them, as a careful
    forger would, so that what catches the edit is the readers' own checks; ``changes`` replace manifest keys."""
    data = {**json.loads((plan / "plan.json").read_text(encoding="utf-8")), **changes}
    data["outputs"] = {name: hashlib.sha256((plan / name).read_bytes()).hexdigest() for name in data["outputs"]}
    manifest = Manifest(
        data["engine_version"], [InputFile(**f) for f in data["inputs"]], data["settings"], data["headline"], data["outputs"]
    )
    data["plan_id"] = (manifest if data["format"] == FORMAT else replace(manifest, format=data["format"])).plan_id
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
    assert (
        data["settings"]["seed"] == 0
        and data["settings"]["effort"] == 0.5
        and data["settings"]["time_limit"] is None
        and data["settings"]["workers"] == 1
    )
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
    assert (
        replace(manifest, outputs={**manifest.outputs, "summary.json": "0" * 64}).plan_id == manifest.plan_id
    )  # it holds wall-clock seconds
    assert demo_plan[1].manifest == manifest  # assign_files returns the manifest written


def test_load_rebuilds_the_same_plan_without_solving(demo_plan, monkeypatch):
    out, run = demo_plan

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


# -- a saved plan read as an attacker or a clumsy user would leave it ------------------------------------------

TINY_RULES = rules_text(
    WEST_EAST,
    fields="{state: string, revenue: number, website: string}",
    assignment="{hierarchy: follow_ultimate_parent, balance: [{measure: accounts, tolerance: 0.25}]}",
    extra="opportunities: {fields: {amount: number}}\nrouting: {website_field: website}\n",
)
# P is locked to x9, who is not a user, and C follows it there (pinned); EX is excluded; U matches no territory;
# D2 follows C to x9; D4 has no account.
TINY_ACCOUNTS = (
    "id,name,parent_id,owner_id,state,revenue,locked,excluded,website\n"
    "P,Parent,,x9,CA,100,true,,parent.example\nC,Child,P,w1,CA,50,,,\nW1,Acme,,w1,CA,200,,,acme.example\nW2,Bolt,,w1,CA,300,,,\n"
    "E1,Delta,,e1,NY,400,,,\nE2,Echo,,,NY,500,,,\nEX,Golf,,x9,CA,600,,true,\nU,Hotel,,w1,TX,700,,,\n"
)
TINY_DEALS = (
    "id,account_id,owner_id,stage,amount\nD1,W1,w1,prospecting,10\nD2,C,w1,prospecting,20\nD3,U,w1,prospecting,30\nD4,,e1,prospecting,40\n"
)
TINY_USERS = "id,name\nw1,W one\nw2,W two\ne1,E one\ne2,E two\n"


def tiny_plan(directory: Path) -> Path:
    """A small plan of every status (assigned, locked, pinned, excluded, unassigned; deals following, kept, without an
    account), made in ``directory`` from inputs written there; returns the plan directory."""
    directory.mkdir(parents=True, exist_ok=True)
    texts = {"rules.yaml": TINY_RULES, "accounts.csv": TINY_ACCOUNTS, "users.csv": TINY_USERS, "opportunities.csv": TINY_DEALS}
    for name, text in texts.items():
        (directory / name).write_text(text, encoding="utf-8")
    out = directory / "plan"
    assign_files(
        directory / "rules.yaml",
        directory / "accounts.csv",
        directory / "users.csv",
        out,
        opportunities=directory / "opportunities.csv",
        workers=1,
        effort=0.5,
        report=False,
    )
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_plan(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def copy(tiny: Path, tmp_path: Path) -> Path:
    """A copy of the tiny plan to damage (its inputs are the tiny plan's)."""
    return Path(shutil.copytree(tiny, tmp_path / "plan"))


def edit_row(plan: Path, table: str, record_id: str, **changes: Any) -> int:
    """Change one row of a plan table in place; returns its line number."""
    path = plan / f"{table}.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    key = "account_id" if table == "accounts" else "opportunity_id"
    number = next(k for k, line in enumerate(lines) if json.loads(line)[key] == record_id)
    lines[number] = json.dumps({**json.loads(lines[number]), **changes})
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return number + 1


def readers(plan: Path, out: Path) -> dict[str, Callable[[], object]]:
    """Every reader of a saved plan, each doing what a command does with it."""

    def route() -> object:
        router = Router.from_directory(plan)
        return router.route({"id": "N1", "state": "CA", "revenue": 5.0, "website": None}), router.route_lead(
            {"id": "L1", "company": "Acme", "email": "jo@acme.example"}
        )

    return {
        "read": lambda: Manifest.read(plan),
        "verified": lambda: Manifest.verified(plan, inputs=("rules", "accounts", "users")),
        "apply": lambda: apply_plan(plan, out),
        "explain account": lambda: explain_saved(plan, "C"),
        "explain deal": lambda: explain_saved(plan, "D2"),
        "route": route,
        "diff": lambda: diff_plan(plan),
        "compare": lambda: compare_plans(plan, plan),
        "load": lambda: Plan.load(plan),
        "baseline": lambda: read_baseline(plan, ["C", "W1"]),
    }


def failures(plan: Path, out: Path) -> dict[str, AssignmentEngineError]:
    """Each reader's error (readers that work are left out); any other exception fails the test."""
    found = {}
    for name, read in readers(plan, out).items():
        try:
            read()
        except AssignmentEngineError as exc:
            found[name] = exc
    return found


def test_the_tiny_plan_is_read_by_every_reader_and_applies_what_its_statuses_allow(tiny, tmp_path):
    assert failures(tiny, tmp_path / "updates") == {}
    rows = {r[0]: r for r in csv.reader((tmp_path / "updates" / "account_updates.csv").open(encoding="utf-8"))}
    assert rows["C"] == ["C", "x9", "west", "w1"]  # follows its locked parent to x9, who is not a user: the CRM's owner
    assert "P" not in rows and "EX" not in rows and "U" not in rows
    deals = {r[0]: r for r in csv.reader((tmp_path / "updates" / "opportunity_updates.csv").open(encoding="utf-8"))}
    assert deals["D2"][2] == "x9"
    assert Router.from_directory(tiny).route_lead({"id": "L", "company": "Child", "email": None}).owner_id == "x9"


def test_a_plan_without_outputs_is_refused(copy, tmp_path):
    data = json.loads((copy / "plan.json").read_text(encoding="utf-8"))
    del data["outputs"]  # the file hashes are not part of a format 1 id: the id still matches
    (copy / "plan.json").write_text(json.dumps(data), encoding="utf-8")
    found = failures(copy, tmp_path / "updates")
    assert set(found) == set(readers(copy, tmp_path / "updates"))
    assert all(
        str(e).startswith(f"{copy / 'plan.json'}: damaged plan manifest: it records no sha256 of the plan's own files")
        for e in found.values()
    )
    assert not (tmp_path / "updates").exists()


def test_the_plan_id_covers_the_rows(copy, tiny):
    edit_row(copy, "accounts", "W2", owner_id="w2", moved=True)
    data = json.loads((copy / "plan.json").read_text(encoding="utf-8"))
    data["outputs"]["accounts.jsonl"] = hashlib.sha256((copy / "accounts.jsonl").read_bytes()).hexdigest()  # the id as reviewed
    (copy / "plan.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(DataError, match="its plan_id does not match its content"):
        Manifest.read(copy)
    reseal(copy)
    assert Manifest.read(copy).plan_id != Manifest.read(tiny).plan_id


def test_a_format_1_plan_keeps_its_id(copy, tiny):
    reseal(copy, format=1)
    old = Manifest.read(copy)
    assert old.format == 1 and old.plan_id != Manifest.read(tiny).plan_id
    assert replace(old, outputs={**old.outputs, "accounts.jsonl": "0" * 64}).plan_id == old.plan_id  # its rows were not in it
    assert json.loads((copy / "plan.json").read_text(encoding="utf-8"))["plan_id"] == old.plan_id


@pytest.mark.parametrize(
    ("table", "record", "changes", "message"),
    [
        ("accounts", "W1", {"owner_id": '=HYPERLINK("x")'}, "account 'W1' has owner '=HYPERLINK(\"x\")', who is not in the users file"),
        ("accounts", "W1", {"owner_id": "e1"}, "account 'W1' has owner 'e1', who is not an active owner member of its territory west"),
        ("accounts", "W1", {"territory_id": "nowhere"}, "account 'W1' has territory 'nowhere', which is not in the rule file"),
        ("accounts", "P", {"owner_id": "w1"}, "account 'P' is locked but its owner changes from 'x9' to 'w1'"),
        ("accounts", "EX", {"owner_id": "w1"}, "account 'EX' is excluded but its owner changes from 'x9' to 'w1'"),
        ("accounts", "C", {"owner_id": "w2"}, "account 'C' is pinned to 'P' but has owner 'w2', not its parent's 'x9'"),
        (
            "accounts",
            "C",
            {"ultimate_parent_id": "W1"},
            "account 'C' is pinned to 'W1', which is no locked or excluded account of the plan",
        ),
        ("accounts", "U", {"owner_id": "w1"}, "account 'U' is unassigned but has owner 'w1'"),
        ("accounts", "W2", {"status": "promoted"}, "account 'W2' has an unknown status 'promoted'"),
        ("opportunities", "D1", {"owner_id": "=1+1"}, "opportunity 'D1' follows its account to '=1+1', who owns no account of the plan"),
        ("opportunities", "D4", {"owner_id": "w2"}, "opportunity 'D4' is no_account but its owner changes from 'e1' to 'w2'"),
    ],
)
def test_apply_and_the_router_check_every_owner(copy, tmp_path, table, record, changes, message):
    line = edit_row(copy, table, record, **changes)
    reseal(copy)  # a forged plan, consistent with itself
    out = tmp_path / "updates"
    with pytest.raises(DataError) as caught:
        apply_plan(copy, out)
    assert str(caught.value).startswith(f"{copy / f'{table}.jsonl'}:{line}: {message}")
    assert not out.exists()
    if table == "accounts":
        router = Router.from_directory(copy)
        router.route({"id": "N1", "state": "CA", "revenue": 5.0, "website": None})  # accounts are routed on the rules and loads alone
        with pytest.raises(DataError) as caught:
            router.route_lead({"id": "L1", "company": "Acme", "email": None})
        assert str(caught.value).startswith(f"{copy / 'accounts.jsonl'}:{line}: {message}")


def test_apply_cli_refuses_a_forged_owner(copy, tmp_path):
    line = edit_row(copy, "accounts", "W2", owner_id='=HYPERLINK("x")', moved=True)
    reseal(copy)
    result = CliRunner().invoke(main, ["apply", str(copy), "--out", str(tmp_path / "updates")])
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1].startswith(f"{copy / 'accounts.jsonl'}:{line}: account 'W2' has owner")
    assert not (tmp_path / "updates").exists()


def test_plan_load_refuses_an_owner_outside_the_accounts_territories(copy):
    line = edit_row(copy, "accounts", "W1", owner_id="e2")
    reseal(copy)
    with pytest.raises(DataError) as caught:
        Plan.load(copy)
    assert (
        str(caught.value)
        == f"{copy / 'accounts.jsonl'}:{line}: owner 'e2' is not an active owner member of a territory account 'W1' matches"
    )


def test_roles_recorded_twice_are_refused(copy, tiny):
    data = json.loads((copy / "plan.json").read_text(encoding="utf-8"))
    reseal(copy, inputs=[*data["inputs"], {**data["inputs"][0], "path": str(tiny / "summary.json")}])
    with pytest.raises(DataError) as caught:
        Manifest.read(copy)
    assert str(caught.value) == f"{copy / 'plan.json'}: damaged plan manifest: inputs: rules is recorded 2 times"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"outputs": "../x"}, "outputs.../x.[key]: Value error, '../x' is not the name of a file in the plan directory"),
        ({"outputs": "/dev/zero"}, "outputs./dev/zero.[key]: Value error, '/dev/zero' is not the name of a file in the plan directory"),
        ({"settings": {"as_of": "tomorrow"}}, "settings.as_of: Value error, Invalid isoformat string: 'tomorrow'"),
        ({"settings": {"as_of": 5}}, "settings.as_of: Input should be a valid string"),
        ({"settings": {"seed": "0"}}, "settings.seed: Input should be a valid integer"),
        ({"inputs": "relative"}, "inputs.0.path: Value error, must be an absolute path"),
        ({"inputs": "role"}, "inputs.0.role: Input should be 'rules', 'accounts', 'users', 'opportunities' or 'pairs'"),
    ],
)
def test_a_manifest_naming_what_no_plan_names_is_refused(copy, changes, message):
    data = json.loads((copy / "plan.json").read_text(encoding="utf-8"))
    if "outputs" in changes:
        (copy / "stray").write_text("", encoding="utf-8")
        data["outputs"][changes["outputs"]] = hashlib.sha256(b"").hexdigest()
    elif "settings" in changes:
        data["settings"].update(changes["settings"])
    elif changes["inputs"] == "relative":
        data["inputs"][0]["path"] = "rules.yaml"
    else:
        data["inputs"][0]["role"] = "owners"
    (copy / "plan.json").write_text(json.dumps(data), encoding="utf-8")
    if "outputs" not in changes:  # the outputs beside the rows are not part of the id; the rest is
        reseal(copy)
    for read in (Manifest.read, Router.from_directory, lambda d: explain_saved(d, "C")):
        with pytest.raises(DataError) as caught:
            read(copy)
        assert str(caught.value).startswith(f"{copy / 'plan.json'}: damaged plan manifest: {message}")


HUGE = "1" + "0" * 5000  # past Python's 4,300 digits: int() refuses it with a ValueError


@pytest.mark.parametrize("name", ["plan.json", "accounts.jsonl", "summary.json"])
def test_an_integer_of_5000_digits_is_a_located_error(copy, tmp_path, name):
    path = copy / name
    text = path.read_text(encoding="utf-8")
    key, huge = (
        ('"family_size": 1', f'"family_size": {HUGE}') if name == "accounts.jsonl" else ('"accounts": ', f'"accounts": {HUGE}, "x": ')
    )
    line = text[: text.index(key)].count("\n") + 1
    path.write_text(text.replace(key, huge, 1), encoding="utf-8")
    if name != "plan.json":
        reseal(copy)
    found = failures(copy, tmp_path / "updates")
    assert found, "a reader read the number"
    where = (
        f"{path}:{line}: damaged plan file: Exceeds the limit"
        if name == "accounts.jsonl"
        else f"{path}: cannot read the plan {'manifest' if name == 'plan.json' else 'summary'}: Exceeds the limit"
    )
    assert all(str(e).startswith(where) for e in found.values()), found


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ([1, 2], "a plan row must be a JSON object, got [1, 2]"),
        ("no status", "plan row lacks status"),
        ("integer owner", "plan row's owner_id must be text, got 7"),
    ],
)
def test_a_damaged_plan_row_is_located_by_every_reader(copy, tmp_path, row, message):
    lines = (copy / "accounts.jsonl").read_text(encoding="utf-8").splitlines()
    damaged = json.loads(lines[1])
    if row == "no status":
        del damaged["status"]
    elif row == "integer owner":
        damaged["owner_id"] = 7
    else:
        damaged = row
    lines[1] = json.dumps(damaged)
    (copy / "accounts.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    reseal(copy)
    found = failures(copy, tmp_path / "updates")
    readers_of_rows = {"apply", "route", "diff", "compare", "baseline"} | ({"load"} if row != "no status" else set())
    assert readers_of_rows <= set(found)
    for name in readers_of_rows:
        assert str(found[name]).startswith(f"{copy / 'accounts.jsonl'}:2: {message}"), (name, found[name])


@pytest.mark.parametrize("damage", ["no users", "loads of text", "no solver"])
def test_a_damaged_summary_is_located(copy, tmp_path, damage):
    summary = json.loads((copy / "summary.json").read_text(encoding="utf-8"))
    if damage == "no users":
        del summary["users"]
    elif damage == "loads of text":
        summary["users"][0]["loads"]["accounts"]["after"] = "3"
    else:
        del summary["solver"]
    (copy / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    reseal(copy)
    found = failures(copy, tmp_path / "updates")
    assert {"route", "diff", "load", "explain account"} <= set(found)
    key = {
        "no users": "users: Field required",
        "loads of text": "users.0.loads.accounts.after: Input should be a valid number",
        "no solver": "solver: Field required",
    }[damage]
    assert all(str(e) == f"{copy / 'summary.json'}: damaged plan summary: {key}" for e in found.values()), found


def test_a_rule_file_path_naming_another_file_is_not_quoted(copy, tiny):
    other = tiny.parent / "accounts.csv"  # a file whose sha256 the forger knows
    data = json.loads((copy / "plan.json").read_text(encoding="utf-8"))
    data["inputs"][0].update(path=str(other), sha256=hashlib.sha256(other.read_bytes()).hexdigest())
    reseal(copy, inputs=data["inputs"])
    for read in (
        lambda: apply_plan(copy, copy.parent / "updates"),
        lambda: explain_saved(copy, "C"),
        lambda: Router.from_directory(copy),
        lambda: Plan.load(copy),
    ):
        with pytest.raises(RuleFileError) as caught:
            read()
        assert str(caught.value).startswith(f"{copy / 'plan.json'}: the plan's rule file {other} does not compile (")
        assert str(caught.value).endswith("problem(s)); check it with 'assignment-engine validate --rules FILE'")
        assert "parent_id" not in str(caught.value)


_READ_ALL = """
import sys
from pathlib import Path

sys.path.insert(0, sys.argv[2])
from test_saved_plan import failures, readers

plan = Path(sys.argv[1])
found = failures(plan, plan.parent / "updates")
for name in readers(plan, plan.parent / "updates"):
    print(name, "|", str(found[name]).splitlines()[0] if name in found else "read")
"""


@pytest.mark.parametrize(
    "standing_in_for", ["plan.json", "accounts.jsonl", "summary.json", "opportunities.jsonl", "users input", "rules input"]
)
def test_a_fifo_or_device_in_a_plan_is_refused_not_waited_on(copy, tmp_path, standing_in_for):
    """Every reader in a fresh process, which a reader waiting on the pipe would keep past the timeout."""
    if standing_in_for.endswith("input"):
        data = json.loads((copy / "plan.json").read_text(encoding="utf-8"))
        fifo = tmp_path / "users.csv"
        os.mkfifo(fifo)
        data["inputs"][2 if standing_in_for == "users input" else 0]["path"] = (
            str(fifo) if standing_in_for == "users input" else "/dev/zero"
        )
        (copy / "plan.json").write_text(json.dumps(data), encoding="utf-8")  # paths are not part of the plan id
    else:
        (copy / standing_in_for).unlink()
        os.mkfifo(copy / standing_in_for)
    result = subprocess.run(
        [sys.executable, "-c", _READ_ALL, str(copy), str(Path(__file__).parent)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    outcomes = dict(line.split(" | ", 1) for line in result.stdout.splitlines())
    assert set(outcomes) == set(readers(copy, tmp_path))
    refused = {name for name, outcome in outcomes.items() if outcome != "read"}
    assert "apply" in refused
    assert all("not a regular file (a directory, pipe or device)" in outcomes[name] for name in refused), outcomes
    if standing_in_for == "plan.json":
        assert outcomes["read"] == f"{copy / 'plan.json'}: cannot read the plan manifest: not a regular file (a directory, pipe or device)"
    elif standing_in_for == "users input":
        assert (
            outcomes["route"]
            == f"{copy / 'plan.json'}: users file {tmp_path / 'users.csv'} cannot be read: not a regular file (a directory, pipe or device)"
        )
        assert outcomes["diff"] == "read"  # a review reads no input


@pytest.mark.parametrize("changed", ["opportunities.csv", "accounts.csv", "users.csv", "rules.yaml"])
def test_routing_verifies_the_files_it_reads_and_no_others(tmp_path, changed):
    plan = tiny_plan(tmp_path / "book")
    path = tmp_path / "book" / changed
    added = {
        "opportunities.csv": "D9,W1,w1,prospecting,5\n",
        "accounts.csv": "Z1,Zed,,w1,CA,1,,,\n",
        "users.csv": "w3,W three\n",
        "rules.yaml": "# reviewed\n",
    }[changed]
    path.write_text(path.read_text(encoding="utf-8") + added, encoding="utf-8")
    why = f"{plan / 'plan.json'}: {changed.split('.')[0]} file {path} changed since the plan was made (sha256 "
    with pytest.raises(DataError) as caught:
        apply_plan(plan, tmp_path / "updates")  # apply still refuses any changed input: what it writes is the plan reviewed
    assert str(caught.value).startswith(why) and str(caught.value).endswith("; nothing was written: re-run assign and review the new plan")
    if changed in ("users.csv", "rules.yaml"):
        with pytest.raises(DataError) as caught:
            engine_of(TINY_RULES).router(plan)
        assert str(caught.value).startswith(why)
        return
    router = engine_of(TINY_RULES).router(plan)
    assert router.route({"id": "N1", "state": "CA", "revenue": 5.0, "website": None}).owner_id in ("w1", "w2")
    new = tmp_path / "new.csv"
    new.write_text("id,name,state,revenue,website\nN1,New,CA,5,\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["route", "--plan", str(plan), "--accounts", str(new), "--out", str(tmp_path / "routed")])
    assert result.exit_code == 0, result.output
    lead = {"id": "L1", "company": "Acme", "email": None}
    if changed == "opportunities.csv":  # the CRM re-exported its deals: routing reads none
        assert router.route_lead(lead).owner_id == "w2"
    else:  # leads are matched against the plan's accounts, read (and verified) on the first lead
        with pytest.raises(DataError) as caught:
            router.route_lead(lead)
        assert str(caught.value).startswith(why) and str(caught.value).endswith("; leads are matched against the plan's accounts")


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=5,
)


def _containers(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every object and array in a JSON value, with its path."""
    if isinstance(value, (dict, list)):
        yield path, value
        for key, inner in value.items() if isinstance(value, dict) else enumerate(value):
            yield from _containers(inner, (*path, key))


@given(data=st.data())
@settings(max_examples=60)
def test_fuzz_every_reader_of_a_damaged_saved_plan_works_or_fails_located(tiny, data):
    with tempfile.TemporaryDirectory() as scratch:
        plan = Path(shutil.copytree(tiny, Path(scratch) / "plan"))
        name = data.draw(st.sampled_from(["plan.json", "accounts.jsonl", "opportunities.jsonl", "summary.json"]), label="file")
        path = plan / name
        text = path.read_text(encoding="utf-8")
        kind = data.draw(st.sampled_from(["set", "delete", "huge", "truncate"]), label="kind")
        if kind == "truncate":
            text = text[: data.draw(st.integers(0, len(text)), label="at")]
        else:
            document = [json.loads(line) for line in text.splitlines()] if name.endswith(".jsonl") else json.loads(text)
            _, node = data.draw(st.sampled_from(list(_containers(document))), label="node")
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            if kind == "delete" and keys:
                del node[data.draw(st.sampled_from(keys), label="key")]
            else:
                existing = st.sampled_from(keys or [0])
                key = data.draw(existing | st.text(max_size=6) if isinstance(node, dict) else existing, label="key")
                value = "@@huge@@" if kind == "huge" else data.draw(JSON_VALUES, label="value")
                if isinstance(node, dict) or key < len(node):
                    node[key] = value
                else:
                    node.append(value)
            lines = [json.dumps(row) for row in document] if name.endswith(".jsonl") else [json.dumps(document)]
            text = "\n".join(lines).replace('"@@huge@@"', HUGE) + "\n"
        path.write_text(text, encoding="utf-8")
        if data.draw(st.booleans(), label="resealed"):
            with contextlib.suppress(Exception):  # as a forger would, when the manifest still parses
                reseal(plan)
        failures(plan, Path(scratch) / "updates")  # any exception but an AssignmentEngineError fails the test
