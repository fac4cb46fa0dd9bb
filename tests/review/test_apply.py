"""apply: a saved plan as CRM update files and the next run's accounts file; refused when an input changed; the fixed point."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from assignment_engine import DataError, OptionError, apply_plan, assign_files, demo_files
from assignment_engine.cli import main
from assignment_engine.files.manifest import Manifest
from assignment_engine.files.readers import read_columns
from assignment_engine.review.apply import FORMATS, ApplyResult
from assignment_engine.synthetic import generate_book
from conftest import WEST_EAST, rules_text

RULES = rules_text(
    WEST_EAST,
    fields="{state: string, revenue: number}",
    assignment="{hierarchy: independent, balance: [{measure: accounts, tolerance: 0.25}]}",
    extra="opportunities: {fields: {amount: number}, keep_owner: {when: {stage: {in: [negotiation]}}}}\n",
)

# West: w1 holds all four accounts, the band (2 ± 0.5 each) takes two to w2, the two of least
# revenue (W1, W2). East: E2 has no owner and goes to e2. L1 (locked) and EX1 (excluded) keep an
# owner who left (x9); U1 matches no territory and keeps its owner " w1 " (spaces as exported).
# A BOM, LF line endings, a blank line, quoted cells with a comma, a newline, doubled quotes and a formula.
ACCOUNTS = (
    "\ufeffid,name,owner_id,state,revenue,locked,excluded,notes\n"
    'W1,"Acme, Inc.",w1,CA,100,,,\n'
    'W2,Bolt,w1,CA,200,,,"line one\nsays ""hi"""\n'
    "W3,Crane,w1,CA,300,,,\n"
    'W4,"=HYPERLINK(""http://x"")",w1,CA,400,,,\n'
    "\n"
    "E1,Delta,e1,NY,500,,,\n"
    'E2,Echo,,NY,600,,,"  spaced  "\n'
    "L1,Fox,x9,TX,700,true,,\n"
    "EX1,Golf,x9,CA,800,,true,\n"
    "U1,Hotel, w1 ,TX,900,,,\n"
)
APPLIED_ACCOUNTS = (
    "\ufeffid,name,owner_id,state,revenue,locked,excluded,notes\n"
    'W1,"Acme, Inc.",w2,CA,100,,,\n'
    'W2,Bolt,w2,CA,200,,,"line one\nsays ""hi"""\n'
    "W3,Crane,w1,CA,300,,,\n"
    'W4,"=HYPERLINK(""http://x"")",w1,CA,400,,,\n'
    "\n"
    "E1,Delta,e1,NY,500,,,\n"
    'E2,Echo,e2,NY,600,,,"  spaced  "\n'
    "L1,Fox,x9,TX,700,true,,\n"
    "EX1,Golf,x9,CA,800,,true,\n"
    "U1,Hotel, w1 ,TX,900,,,\n"
)
# CRLF line endings. D1 follows W1 to w2; D2 is closed; D3 is protected by keep_owner; D4's account
# is unassigned; D5 had no owner and follows E2 to e2.
DEALS = (
    "id,account_id,owner_id,stage,amount\r\n"
    "D1,W1,w1,prospecting,10\r\nD2,W1,w1,closed_won,20\r\nD3,W2,w1,negotiation,30\r\nD4,U1,w1,prospecting,40\r\nD5,E2,,prospecting,50\r\n"
)
APPLIED_DEALS = (
    "id,account_id,owner_id,stage,amount\r\n"
    "D1,W1,w2,prospecting,10\r\nD2,W1,w1,closed_won,20\r\nD3,W2,w1,negotiation,30\r\nD4,U1,w1,prospecting,40\r\nD5,E2,e2,prospecting,50\r\n"
)


def _book(directory: Path, accounts: str = ACCOUNTS, name: str = "accounts.csv", deals: str | None = DEALS) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    files = {"rules": directory / "rules.yaml", "accounts": directory / name, "users": directory / "users.csv"}
    files["rules"].write_text(RULES, encoding="utf-8")
    files["accounts"].write_bytes(accounts.encode("utf-8"))
    files["users"].write_text("id,name\nw1,W one\nw2,W two\ne1,E one\ne2,E two\n", encoding="utf-8")
    if deals is not None:
        files["opportunities"] = directory / "opportunities.csv"
        files["opportunities"].write_bytes(deals.encode("utf-8"))
    return files


def _plan(files: dict[str, Path], out: Path) -> Path:
    assign_files(files["rules"], files["accounts"], files["users"], out, opportunities=files.get("opportunities"), workers=1, effort=0.5)
    return out


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return list(csv.reader(handle))


@pytest.fixture
def book(tmp_path: Path) -> dict[str, Path]:
    return _book(tmp_path / "book")


@pytest.fixture
def plan(book: dict[str, Path], tmp_path: Path) -> Path:
    return _plan(book, tmp_path / "plan")


def test_update_files_list_exactly_the_changed_owners(plan, tmp_path):
    out = tmp_path / "updates"
    result = apply_plan(plan, out)
    assert _rows(out / "account_updates.csv") == [
        ["account_id", "owner_id", "territory_id", "previous_owner_id"],
        ["W1", "w2", "west", "w1"],
        ["W2", "w2", "west", "w1"],
        ["E2", "e2", "east", ""],
    ]
    assert _rows(out / "opportunity_updates.csv") == [
        ["opportunity_id", "account_id", "owner_id", "territory_id", "previous_owner_id"],
        ["D1", "W1", "w2", "west", "w1"],
        ["D5", "E2", "e2", "east", ""],
    ]
    assert _rows(out / "unassigned.csv") == [
        ["account_id", "previous_owner_id", "status", "reason"],
        ["U1", "w1", "unassigned", "matched no territory"],
    ]
    assert result == ApplyResult(
        plan_id=Manifest.read(plan).plan_id,
        format="csv",
        out=str(out),
        accounts=9,
        account_updates=3,
        owner_changes=3,
        unassigned=1,
        unassigned_keeping_owner=1,
        opportunities=5,
        opportunity_updates=2,
        formula_like_cells=0,
        files=["account_updates.csv", "accounts.csv", "apply.json", "opportunities.csv", "opportunity_updates.csv", "unassigned.csv"],
    )
    assert sorted(p.name for p in out.iterdir()) == result.files
    recorded = json.loads((out / "apply.json").read_text(encoding="utf-8"))
    assert recorded["plan_id"] == result.plan_id and recorded["account_updates"] == 3 and recorded["plan_dir"] == str(plan.resolve())


def test_salesforce_format_is_id_and_owner_id(plan, tmp_path):
    out = tmp_path / "updates"
    apply_plan(plan, out, format="salesforce")
    assert (out / "account_updates.csv").read_bytes() == b"Id,OwnerId\r\nW1,w2\r\nW2,w2\r\nE2,e2\r\n"
    assert (out / "opportunity_updates.csv").read_bytes() == b"Id,OwnerId\r\nD1,w2\r\nD5,e2\r\n"
    assert (out / "accounts.csv").read_bytes() == APPLIED_ACCOUNTS.encode("utf-8")  # the copies do not depend on the format


def test_applied_accounts_file_differs_from_the_input_only_in_changed_owner_cells(book, plan, tmp_path):
    out = tmp_path / "updates"
    apply_plan(plan, out)
    assert (out / "accounts.csv").read_bytes() == APPLIED_ACCOUNTS.encode("utf-8")  # BOM, LF, blank line, quoting: as they were
    assert (out / "opportunities.csv").read_bytes() == APPLIED_DEALS.encode("utf-8")  # CRLF kept
    before, after = _rows(book["accounts"]), _rows(out / "accounts.csv")
    owner = before[0].index("owner_id")
    assert len(before) == len(after) and before[0] == after[0]
    changed = {b[0]: (b[owner], a[owner]) for b, a in zip(before[1:], after[1:], strict=True) if b != a}
    assert changed == {"W1": ("w1", "w2"), "W2": ("w1", "w2"), "E2": ("", "e2")}
    for b, a in zip(before, after, strict=True):
        assert b[:owner] + b[owner + 1 :] == a[:owner] + a[owner + 1 :]  # every other cell exactly as read


def test_json_lines_accounts_give_a_json_lines_copy(tmp_path):
    records = [line for line in csv.DictReader(ACCOUNTS.removeprefix("\ufeff").splitlines(keepends=True)) if line["id"]]
    lines = []
    for r in records:
        r["revenue"] = int(r["revenue"])  # a JSON number stays a number
        lines.append(json.dumps(r, separators=(",", ":"), ensure_ascii=False) + "\n")
    text = "".join(lines[:4]) + "\n" + "".join(lines[4:])
    files = _book(tmp_path / "book", text, "accounts.jsonl", deals=None)
    out = tmp_path / "updates"
    result = apply_plan(_plan(files, tmp_path / "plan"), out)
    assert result.files == ["account_updates.csv", "accounts.jsonl", "apply.json", "unassigned.csv"]
    copy = (out / "accounts.jsonl").read_text(encoding="utf-8").split("\n")
    original = text.split("\n")
    assert len(copy) == len(original)
    for before, after in zip(original, copy, strict=True):
        if not before:
            assert after == ""
            continue
        old, new = json.loads(before), json.loads(after)
        if old["id"] in ("W1", "W2", "E2"):
            assert list(new) == list(old) and new == {**old, "owner_id": {"W1": "w2", "W2": "w2", "E2": "e2"}[old["id"]]}
        else:
            assert after == before  # unchanged lines byte for byte


def test_accounts_without_an_owner_column_get_one(tmp_path):
    files = _book(tmp_path / "book", "id,state,revenue\r\nW1,CA,1\r\nW2,CA,2\r\nU1,TX,3\r\n", deals=None)
    out = tmp_path / "updates"
    apply_plan(_plan(files, tmp_path / "plan"), out)
    assert (out / "accounts.csv").read_bytes().decode("utf-8") in (
        "id,state,revenue,owner_id\r\nW1,CA,1,w1\r\nW2,CA,2,w2\r\nU1,TX,3,\r\n",
        "id,state,revenue,owner_id\r\nW1,CA,1,w2\r\nW2,CA,2,w1\r\nU1,TX,3,\r\n",
    )
    assert len(_rows(out / "account_updates.csv")) == 3  # both accounts gain an owner


def test_a_territory_id_column_makes_territory_changes_updates_in_the_review_format(tmp_path):
    # W1 and W2 stay (one each); W2's territory was exported as old-west, E1's as empty; L1 is locked.
    text = "id,owner_id,state,revenue,territory_id,locked\nW1,w1,CA,1,west,\nW2,w2,CA,2,old-west,\nE1,e1,NY,3,,\nL1,e2,NY,4,gone,true\n"
    files = _book(tmp_path / "book", text, deals=None)
    plan = _plan(files, tmp_path / "plan")
    review = apply_plan(plan, tmp_path / "review")
    assert _rows(tmp_path / "review" / "account_updates.csv")[1:] == [
        ["W2", "w2", "west", "w2"],
        ["E1", "e1", "east", "e1"],
    ]  # L1 is locked: never an update
    assert (review.account_updates, review.owner_changes) == (2, 0)
    assert "(2 territory only)" in review.line()
    crm = apply_plan(plan, tmp_path / "crm", format="salesforce")
    assert _rows(tmp_path / "crm" / "account_updates.csv") == [["Id", "OwnerId"]]  # the file can only change owners
    assert crm.account_updates == 0
    assert (tmp_path / "crm" / "accounts.csv").read_bytes() == files["accounts"].read_bytes()


def test_a_changed_input_refuses_the_plan_and_writes_nothing(book, plan, tmp_path):
    with book["users"].open("a", encoding="utf-8") as handle:
        handle.write("w3,W three\n")
    book["rules"].write_text(RULES + "\n", encoding="utf-8")
    out = tmp_path / "updates"
    result = CliRunner().invoke(main, ["apply", str(plan), "--out", str(out), "-q"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{plan / 'plan.json'}: rules file {book['rules'].resolve()} changed since the plan was made (sha256 ")
    assert lines[1].startswith(f"{plan / 'plan.json'}: users file {book['users'].resolve()} changed since the plan was made (sha256 ")
    assert all(line.endswith("nothing was written: re-run assign and review the new plan") for line in lines)
    assert result.stdout == ""
    assert not out.exists()


def test_a_refused_plan_leaves_the_previous_updates_as_they_were(book, plan, tmp_path):
    out = tmp_path / "updates"
    apply_plan(plan, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    book["accounts"].write_bytes(ACCOUNTS.replace("W3,Crane", "W3,Crane Ltd").encode("utf-8"))
    with pytest.raises(DataError, match=r"accounts file .* changed since the plan was made"):
        apply_plan(plan, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_directory_without_plan_json_is_not_a_saved_plan(tmp_path):
    result = CliRunner().invoke(main, ["apply", str(tmp_path), "--out", str(tmp_path / "updates")])
    assert result.exit_code == 1
    assert result.stderr == f"{tmp_path}: not a saved plan: no plan.json (plans are written by 'assignment-engine assign --out DIR')\n"
    assert not (tmp_path / "updates").exists()


def test_plan_rows_that_do_not_follow_the_accounts_file_are_refused(plan, tmp_path):
    rows = (plan / "accounts.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (plan / "accounts.jsonl").write_text(rows[1] + rows[0] + "".join(rows[2:]), encoding="utf-8")
    out = tmp_path / "updates"
    with pytest.raises(DataError, match=r"plan.json: plan file accounts.jsonl changed since the plan was written; nothing was written"):
        apply_plan(plan, out)
    assert not out.exists()


def test_out_is_checked_before_any_work(book, plan, tmp_path):
    runner = CliRunner()
    for out, message in ((plan, "holds the input file"), (book["accounts"].parent, "holds the input file")):
        result = runner.invoke(main, ["apply", str(plan), "--out", str(out), "-q"])
        assert result.exit_code == 2 and message in result.stderr
    foreign = tmp_path / "shared"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine", encoding="utf-8")
    result = runner.invoke(main, ["apply", str(plan), "--out", str(foreign)])
    assert result.exit_code == 2 and "is not empty and not a previous output (notes.txt)" in result.stderr
    assert "checking" not in result.stderr
    with pytest.raises(OptionError, match="unknown format 'hubspot'"):
        apply_plan(plan, tmp_path / "x", format="hubspot")


def test_cli_prints_one_summary_line_and_replaces_a_previous_output(plan, tmp_path):
    out = tmp_path / "updates"
    runner = CliRunner()
    first = runner.invoke(main, ["apply", str(plan), "--out", str(out), "-q"])
    again = runner.invoke(main, ["apply", str(plan), "--out", str(out), "--format", "salesforce", "-q"])
    assert first.exit_code == 0 and again.exit_code == 0, again.stderr
    plan_id = Manifest.read(plan).plan_id
    assert again.stdout == (
        f"plan {plan_id} applied to {out} (salesforce): 3 account updates of 9 accounts, 2 opportunity updates of 5; "
        "not updated: 1 account without an owner in the plan, 1 keeping a current one (unassigned.csv)\n"
    )
    assert (out / "account_updates.csv").read_text(encoding="utf-8").startswith("Id,OwnerId")


def test_formula_like_values_are_written_exactly_and_counted(tmp_path):
    files = _book(tmp_path / "book", "id,owner_id,state,revenue\n-W1,w1,CA,1\n-W2,w1,CA,2\n", deals=None)
    out = tmp_path / "updates"
    result = apply_plan(_plan(files, tmp_path / "plan"), out, format="salesforce")
    assert _rows(out / "account_updates.csv") == [["Id", "OwnerId"], ["-W1", "w2"]]  # not '-W1: the CRM must find the record
    assert result.formula_like_cells == 1
    assert "1 cell starting with = + - @ written exactly" in result.line()


# The fixed point: a run on the applied files, with the same rules, users and run date, moves no account.


def _rerun(files: dict[str, Path], plan: Path, tmp: Path) -> tuple[ApplyResult, dict[str, Any], ApplyResult]:
    first = apply_plan(plan, tmp / "updates")
    as_of = dt.date.fromisoformat(Manifest.read(plan).settings["as_of"])
    again = assign_files(
        files["rules"],
        tmp / "updates" / "accounts.csv",
        files["users"],
        tmp / "plan2",
        opportunities=tmp / "updates" / "opportunities.csv",
        workers=2,
        as_of=as_of,
    )
    return first, again.summary, apply_plan(tmp / "plan2", tmp / "updates2")


def _moved_rows(plan: Path) -> list[dict[str, Any]]:
    return [r for r in (json.loads(line) for line in (plan / "accounts.jsonl").open(encoding="utf-8")) if r["moved"]]


def _assert_fixed_point(first: ApplyResult, summary: dict[str, Any], second: ApplyResult, tmp: Path) -> None:
    # The only accounts the re-run counts as moved are those the plan leaves without an owner that keep
    # their CRM owner (the summary counts owner → none as a move); none gets a new owner, no deal moves.
    moved = _moved_rows(tmp / "plan2")
    assert summary["moved"]["accounts"] == first.unassigned_keeping_owner == len(moved)
    assert {r["status"] for r in moved} <= {"unassigned", "pinned"} and all(r["owner_id"] == "" for r in moved)
    assert summary["opportunities"]["moved"]["opportunities"] == 0
    assert (second.account_updates, second.opportunity_updates) == (0, 0)
    assert second.unassigned == first.unassigned
    assert (tmp / "updates2" / "accounts.csv").read_bytes() == (tmp / "updates" / "accounts.csv").read_bytes()
    assert (tmp / "updates2" / "opportunities.csv").read_bytes() == (tmp / "updates" / "opportunities.csv").read_bytes()


def test_the_demo_plan_is_a_fixed_point(tmp_path):
    files = demo_files()
    plan = tmp_path / "plan"
    run = assign_files(files["rules"], files["accounts"], files["users"], plan, opportunities=files["opportunities"], workers=2)
    first, summary, second = _rerun(files, plan, tmp_path)
    assert first.account_updates == run.summary["moved"]["accounts"] - first.unassigned_keeping_owner > 0
    _assert_fixed_point(first, summary, second, tmp_path)


def _balance_unproven(summary: dict[str, Any]) -> set[tuple[str, ...]]:
    """Components whose balance objective the solver did not prove optimal (bands missed, excess maybe not least)."""
    return {tuple(c["users"]) for c in summary["solver"]["per_component"] if c["objectives"].get("balance", {}).get("gap", 0) > 0}


def _book_plan(tmp: Path, seed: int, size: tuple[int, int, int]) -> tuple[dict[str, Path], Path, dict[str, Any]]:
    generate_book(*size, seed=seed).write(tmp / "book")
    files = {
        name: tmp / "book" / f"{name}.{'yaml' if name == 'rules' else 'csv'}" for name in ("rules", "accounts", "users", "opportunities")
    }
    run = assign_files(files["rules"], files["accounts"], files["users"], tmp / "plan", opportunities=files["opportunities"], workers=2)
    return files, tmp / "plan", run.summary


def test_a_generated_book_plan_is_a_fixed_point(tmp_path):
    files, plan, summary = _book_plan(tmp_path, seed=3, size=(3_000, 60, 12))
    assert _balance_unproven(summary) == set()  # the condition (docs/apply.md): every component's balance proven optimal
    missed = [c for c in summary["solver"]["per_component"] if c["objectives"].get("balance", {}).get("value", 0) > 0]
    assert missed  # including a component whose bands cannot all hold: its least excess is proven, and kept
    first, again, second = _rerun(files, plan, tmp_path)
    assert first.account_updates > 300
    _assert_fixed_point(first, again, second, tmp_path)


def test_a_rerun_moves_accounts_only_where_the_first_run_left_band_excess_unproven(tmp_path):
    # The documented limit of the fixed point: balance outranks continuity, so where the first run
    # stopped without proving its band excess least, a re-run that finds a lower excess moves accounts
    # for it (on this book: 16 accounts between u30 and u31, excess 0.197 → 0.168 of a fair share).
    files, plan, summary = _book_plan(tmp_path, seed=1, size=(2_000, 40, 10))
    unproven = _balance_unproven(summary)
    assert unproven  # the situation exists on this book
    first, again, _ = _rerun(files, plan, tmp_path)
    moving = {tuple(c["users"]) for c in again["solver"]["per_component"] if c["moves"]}
    assert moving <= unproven
    users_of = {r["account_id"]: r["owner_id"] for r in (json.loads(line) for line in (plan / "accounts.jsonl").open(encoding="utf-8"))}
    stray = [r for r in _moved_rows(tmp_path / "plan2") if r["owner_id"] and not any(users_of[r["account_id"]] in c for c in unproven)]
    assert stray == []
    assert again["moved"]["accounts"] >= first.unassigned_keeping_owner


def test_an_account_following_an_owner_less_parent_is_listed_not_updated(tmp_path):
    files = _book(
        tmp_path / "book", "id,parent_id,owner_id,state,revenue,excluded\nP,,,CA,1,true\nC,P,w1,CA,2,\nW1,,w1,CA,3,\n", deals=None
    )
    files["rules"].write_text(RULES.replace("hierarchy: independent", "hierarchy: follow_ultimate_parent"), encoding="utf-8")
    out = tmp_path / "updates"
    result = apply_plan(_plan(files, tmp_path / "plan"), out)
    assert _rows(out / "unassigned.csv")[1:] == [["C", "w1", "pinned", "follows ultimate parent P, which is excluded, to owner (none)"]]
    assert (result.unassigned, result.unassigned_keeping_owner) == (1, 1)
    assert "C" not in {r[0] for r in _rows(out / "account_updates.csv")}
    assert (out / "accounts.csv").read_bytes() == files["accounts"].read_bytes()  # C keeps w1, as in the CRM


# -- issue 19: the cells apply writes: owners with line breaks quoted, dotted JSON paths set in place, ids exactly as exported


def _planned_owners(plan: Path) -> dict[str, str]:
    return {r["account_id"]: r["owner_id"] for r in map(json.loads, (plan / "accounts.jsonl").open(encoding="utf-8")) if r["owner_id"]}


@pytest.mark.parametrize("owner", ["w\n2", "w\r2", "w\r\n2", 'w,"2"'])
@pytest.mark.parametrize(
    "accounts",
    ["id,state,revenue\nW1,CA,1\nW2,CA,2\nE1,NY,3\n", "id,owner_id,state,revenue\nW1,w1,CA,1\nW2,w1,CA,2\nE1,e1,NY,3\n"],
    ids=["owner-appended", "owner-replaced"],
)
def test_an_owner_with_a_line_break_is_quoted_and_the_applied_copy_reads_back(tmp_path, owner, accounts):
    files = _book(tmp_path / "book", accounts, deals=None)
    files["rules"].write_text(RULES.replace("{user: w2}", "{user: " + json.dumps(owner) + "}"), encoding="utf-8")
    with files["users"].open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["id"], ["w1"], [owner], ["e1"], ["e2"]])
    plan = _plan(files, tmp_path / "plan")
    planned = _planned_owners(plan)
    assert owner in planned.values()  # one of W1, W2 goes to it
    apply_plan(plan, tmp_path / "updates")
    applied = tmp_path / "updates" / "accounts.csv"
    rows = _rows(applied)
    assert rows[0] == ["id", "state", "revenue", "owner_id"] or rows[0] == ["id", "owner_id", "state", "revenue"]
    assert all(len(r) == 4 for r in rows) and len(rows) == 4
    at = rows[0].index("owner_id")
    assert {r[0]: r[at] for r in rows[1:]} == planned
    columns, _ = read_columns(applied)  # the engine's own reader
    assert dict(zip(columns["id"], columns["owner_id"], strict=True)) == planned
    again = assign_files(files["rules"], applied, files["users"], tmp_path / "plan2", workers=1, effort=0.5)
    assert again.summary["moved"]["accounts"] == 0 and _planned_owners(tmp_path / "plan2") == planned


def _nested_book(tmp_path: Path, lines: list[dict[str, Any]]) -> tuple[dict[str, Path], Path]:
    files = _book(tmp_path / "book", "".join(json.dumps(r) + "\n" for r in lines), "accounts.jsonl", deals=None)
    files["rules"].write_text(RULES + "inputs: {accounts: {columns: {owner_id: Owner.Id}}}\n", encoding="utf-8")
    return files, _plan(files, tmp_path / "plan")


def test_a_dotted_owner_path_is_updated_in_place_in_json_lines(tmp_path):
    # W1, W2: both w1's, one moves to w2 (its Owner object keeps its Name); E1: Owner null, E2: no Owner (the objects are
    # created); E3: a flat "Owner.Id" key, which the engine's reader takes before the nested path, so it is the one set.
    lines = [
        {"id": "W1", "Owner": {"Name": "W one", "Id": "w1"}, "state": "CA", "revenue": 1},
        {"id": "W2", "Owner": {"Name": "W one", "Id": "w1"}, "state": "CA", "revenue": 2},
        {"id": "E1", "Owner": None, "state": "NY", "revenue": 3},
        {"id": "E2", "state": "NY", "revenue": 4},
        {"id": "E3", "Owner.Id": "", "state": "NY", "revenue": 5},
    ]
    files, plan = _nested_book(tmp_path, lines)
    planned = _planned_owners(plan)
    assert set(planned) == {"W1", "W2", "E1", "E2", "E3"} and sorted(planned[w] for w in ("W1", "W2")) == ["w1", "w2"]
    apply_plan(plan, tmp_path / "updates")
    applied = [json.loads(line) for line in (tmp_path / "updates" / "accounts.jsonl").open(encoding="utf-8")]
    by_id = {r["id"]: r for r in applied}
    for old in lines[:4]:
        new = by_id[old["id"]]
        assert new["Owner"]["Id"] == planned[old["id"]] and "Owner.Id" not in new
        assert list(new) == list(old) + ([] if "Owner" in old else ["Owner"])
        assert {k: v for k, v in new.items() if k != "Owner"} == {k: v for k, v in old.items() if k != "Owner"}
    assert [list(by_id[w]["Owner"]) for w in ("W1", "W2")] == [["Name", "Id"]] * 2 and by_id["W2"]["Owner"]["Name"] == "W one"
    assert by_id["E3"] == {**lines[4], "Owner.Id": planned["E3"]}
    again = assign_files(files["rules"], tmp_path / "updates" / "accounts.jsonl", files["users"], tmp_path / "plan2", workers=1, effort=0.5)
    assert again.summary["moved"]["accounts"] == 0  # the next run reads the new owners where they were written


def test_a_dotted_owner_path_through_a_value_that_is_not_an_object_is_a_located_error(tmp_path):
    lines = [{"id": "W1", "Owner": {"Id": "w1"}, "state": "CA", "revenue": 1}, {"id": "E1", "Owner": "e1", "state": "NY", "revenue": 2}]
    _, plan = _nested_book(tmp_path, lines)
    with pytest.raises(DataError) as raised:
        apply_plan(plan, tmp_path / "updates")
    assert str(raised.value.findings[0].location).endswith(
        "accounts.jsonl:2"
    ) and "Owner is not a JSON object, so Owner.Id cannot be set" in str(raised.value)
    assert not (tmp_path / "updates").exists()


@pytest.mark.parametrize("format", FORMATS)
def test_update_files_carry_each_id_exactly_as_exported(tmp_path, format):
    # The engine reads ids stripped (the plan has W1, E2, U1); the CRM matches the export's exact text.
    accounts = 'id,owner_id,state,revenue\n W1 ,w1,CA,1\nW2\t,w1,CA,2\n"E2 ",,NY,3\nU1  ,w1,TX,4\n'
    deals = 'id,account_id,owner_id,stage,amount\n D5,"E2 ",,prospecting,50\n'
    files = _book(tmp_path / "book", accounts, deals=deals)
    out = tmp_path / "updates"
    apply_plan(_plan(files, tmp_path / "plan"), out, format=format)
    updates = _rows(out / "account_updates.csv")[1:]
    assert {r[0] for r in updates} in ({" W1 ", "E2 "}, {"W2\t", "E2 "})
    assert {r[0] for r in _rows(out / "opportunity_updates.csv")[1:]} == {" D5"}
    assert [r[0] for r in _rows(out / "accounts.csv")[1:]] == [" W1 ", "W2\t", "E2 ", "U1  "]
    if format == "csv":
        assert _rows(out / "unassigned.csv")[1:] == [["U1  ", "w1", "unassigned", "matched no territory"]]


def test_json_lines_ids_are_written_exactly_as_exported(tmp_path):
    lines = [
        {"id": " W1", "owner_id": "w1", "state": "CA", "revenue": 1},
        {"id": "W2", "owner_id": "w1", "state": "CA", "revenue": 2},
        {"id": "E2 ", "state": "NY", "revenue": 3},
    ]
    files = _book(tmp_path / "book", "".join(json.dumps(r) + "\n" for r in lines), "accounts.jsonl", deals=None)
    apply_plan(_plan(files, tmp_path / "plan"), tmp_path / "updates", format="salesforce")
    assert {r[0] for r in _rows(tmp_path / "updates" / "account_updates.csv")[1:]} in ({" W1", "E2 "}, {"W2", "E2 "})
