"""Incremental replans (``assign --from-plan``): only what changed since a saved plan is replanned.

A book is planned in full, then changed (new accounts, fields, owners, users, rules) and planned again
against the first plan: every account outside the replanned set keeps the first plan's owner, each
reason is said, and the summary counts them.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from assignment_engine import DataError, Plan, assign_files, demo_files
from assignment_engine.cli import main
from assignment_engine.files.manifest import Manifest
from assignment_engine.plan.result import account_fingerprints
from conftest import engine_of, rules_text, strip_timing, table_of, write_csv
from test_saved_plan import reseal

TERRITORIES = """
- id: west
  type: geo
  rules: [{when: {state: CA}}]
  members: [{user: w1}, {user: w2}, {user: w3}]
- id: east
  type: geo
  rules: [{when: {state: NY}}]
  members: [{user: e1}, {user: e2}]
"""
ASSIGNMENT = "{hierarchy: follow_ultimate_parent, balance: [{measure: revenue, tolerance: 0.2}, {measure: accounts, tolerance: 0.3}]}"
USERS = ["w1", "w2", "w3", "e1", "e2"]
COLUMNS = ["id", "name", "parent_id", "owner_id", "locked", "excluded", "country", "state", "revenue"]


def book(n: int = 24) -> list[dict[str, Any]]:
    """Accounts alternating west and east, current owners unbalanced, one family of three in the west."""
    rows = []
    for k in range(n):
        west = k % 2 == 0
        rows.append(
            {
                "id": f"A{k:03d}",
                "name": f"Account {k}",
                "country": "US",
                "state": "CA" if west else "NY",
                "revenue": 1000 + 137 * k,
                "owner_id": ("w1" if k % 3 else "w2") if west else "e1",
            }
        )
    rows[2]["parent_id"] = rows[0]["id"]
    rows[4]["parent_id"] = rows[0]["id"]
    return rows


def write(
    directory: Path, accounts: list[dict[str, Any]], *, territories: str = TERRITORIES, users: dict[str, bool] | None = None
) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    rules = directory / "rules.yaml"
    rules.write_text(rules_text(territories, assignment=ASSIGNMENT), encoding="utf-8")
    write_csv(directory / "accounts.csv", accounts, COLUMNS)
    active = users or dict.fromkeys(USERS, True)
    (directory / "users.csv").write_text("id,active\n" + "".join(f"{u},{str(a).lower()}\n" for u, a in active.items()), encoding="utf-8")
    return {"rules": rules, "accounts": directory / "accounts.csv", "users": directory / "users.csv"}


def plan(files: dict[str, Path], out: Path, **options: Any) -> Any:
    return assign_files(files["rules"], files["accounts"], files["users"], out, workers=1, effort=0.3, report=False, **options)


def rows(directory: Path) -> dict[str, dict[str, Any]]:
    with (directory / "accounts.jsonl").open(encoding="utf-8") as handle:
        return {r["account_id"]: r for r in map(json.loads, handle)}


@pytest.fixture
def first(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    """A book planned in full: the plan's directory and the book's accounts."""
    accounts = book()
    plan(write(tmp_path / "v1", accounts), tmp_path / "plan1")
    return tmp_path / "plan1", accounts


def replan(tmp_path: Path, base: Path, accounts: list[dict[str, Any]], **write_options: Any) -> tuple[Any, dict[str, dict[str, Any]]]:
    run = plan(write(tmp_path / "v2", accounts, **write_options), tmp_path / "plan2", from_plan=base)
    return run, rows(tmp_path / "plan2")


def assert_only_replanned_move(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> None:
    for account_id, row in after.items():
        if not row["replanned"] and account_id in before and row["status"] == "unchanged":
            assert row["owner_id"] == before[account_id]["owner_id"], account_id


def test_same_inputs_twice_replan_nothing(tmp_path, first):
    base, accounts = first
    run, after = replan(tmp_path, base, accounts)
    before = rows(base)
    incremental = run.summary["incremental"]
    assert incremental == {
        "from_plan": Manifest.read(base).plan_id,
        "replanned": 0,
        "why": dict.fromkeys(incremental["why"], 0),
        "kept": len(accounts),
        "removed": 0,
    }
    assert list(incremental["why"]) == ["new", "fields_changed", "owner_changed", "owner_left", "territory_changed", "unassigned", "family"]
    assert {a: r["owner_id"] for a, r in after.items()} == {a: r["owner_id"] for a, r in before.items()}
    assert {a: r["territory_id"] for a, r in after.items()} == {a: r["territory_id"] for a, r in before.items()}
    assert {r["status"] for r in after.values()} == {"unchanged"}
    assert all(r["fingerprint"] == before[a]["fingerprint"] for a, r in after.items())
    row = after["A001"]
    assert f"unchanged since plan {incremental['from_plan']}: keeps owner {row['owner_id']}" in row["reason"]
    assert row["reason"].startswith("matched east by rule 1 (state = NY)")
    assert after["A002"]["reason"].startswith("follows ultimate parent A000, which matched west")
    assert run.summary["solver"]["components"] == len(USERS)  # nothing to solve: every user alone, no units
    assert Manifest.read(tmp_path / "plan2").settings["from_plan"] == incremental["from_plan"]
    assert Manifest.read(tmp_path / "plan2").headline["replanned"] == 0


def test_fair_shares_and_balance_count_the_kept_accounts(tmp_path, first):
    """The summary's fair shares are the whole book's, as in the full run (not each user's own load)."""
    base, accounts = first
    run, _ = replan(tmp_path, base, accounts)
    full = json.loads((base / "summary.json").read_text(encoding="utf-8"))
    for mine, theirs in zip(run.summary["users"], full["users"], strict=True):
        for label in ("revenue", "accounts"):
            assert mine["loads"][label]["fair_share"] == pytest.approx(theirs["loads"][label]["fair_share"])
            assert mine["loads"][label]["after"] == pytest.approx(theirs["loads"][label]["after"])
    assert [b["max_deviation"] for b in run.summary["balance"]] == pytest.approx([b["max_deviation"] for b in full["balance"]])


def test_each_reason_is_counted_and_said(tmp_path, first):
    base, accounts = first
    before = rows(base)
    changed = [dict(r) for r in accounts]
    changed.append({"id": "NEW1", "name": "New", "country": "US", "state": "NY", "revenue": 5000})  # new
    changed[3]["revenue"] = 99_999  # fields changed
    owner_of_5 = before["A005"]["owner_id"]
    changed[5]["owner_id"] = next(u for u in ("e1", "e2") if u not in (owner_of_5, accounts[5]["owner_id"]))  # reassigned in the CRM
    changed.append(
        {"id": "KID", "name": "Kid", "parent_id": "A000", "country": "US", "state": "CA", "revenue": 10}
    )  # a new member of A000's family
    del changed[23]  # no longer in the book
    run, after = replan(tmp_path, base, changed)
    incremental = run.summary["incremental"]
    assert after["NEW1"]["replanned"] == "new" and after["KID"]["replanned"] == "new"
    assert after["A003"]["replanned"] == "fields_changed"
    assert after["A005"]["replanned"] == "owner_changed"
    assert {after[a]["replanned"] for a in ("A000", "A002", "A004")} == {"family"}
    assert "A023" not in after and incremental["removed"] == 1
    assert incremental["why"] == {
        "new": 2,
        "fields_changed": 1,
        "owner_changed": 1,
        "owner_left": 0,
        "territory_changed": 0,
        "unassigned": 0,
        "family": 3,
    }
    assert incremental["replanned"] == 7 and incremental["kept"] == len(changed) - 7
    assert f"replanned since plan {incremental['from_plan']}: its fields changed" in after["A003"]["reason"]
    assert "replanned since plan" in after["NEW1"]["reason"] and "a new account" in after["NEW1"]["reason"]
    assert len({after[a]["owner_id"] for a in ("A000", "A002", "A004", "KID")}) == 1  # the family together
    assert_only_replanned_move(before, after)


def test_a_user_made_inactive_has_every_account_replanned(tmp_path, first):
    base, accounts = first
    before = rows(base)
    gone = next(
        u
        for u in ("w1", "w2", "w3")
        if any(r["owner_id"] == u and not r["ultimate_parent_id"] and r["family_size"] == 1 for r in before.values())
    )
    _, after = replan(tmp_path, base, accounts, users={u: u != gone for u in USERS})
    theirs = {a for a, r in before.items() if r["owner_id"] == gone}
    assert theirs and all(after[a]["replanned"] in ("owner_left", "family") for a in theirs)
    assert all(after[a]["owner_id"] != gone for a in theirs)
    assert {a for a, r in after.items() if r["replanned"] == "owner_left"} <= theirs
    first_of_theirs = after[min(theirs)]
    assert "no longer an active owner of its territory" in first_of_theirs["reason"] or first_of_theirs["replanned"] == "family"
    assert not any(
        r["replanned"] for a, r in after.items() if a not in theirs and before[a]["ultimate_parent_id"] != "A000" and a != "A000"
    )
    assert_only_replanned_move(before, after)


def test_a_rule_change_replans_the_accounts_whose_territory_changed(tmp_path, first):
    base, accounts = first
    before = rows(base)
    moved_rules = TERRITORIES.replace("rules: [{when: {state: NY}}]", "rules: [{when: {state: NJ}}]").replace(
        "state: CA}", "state: [CA, NY]}"
    )
    run, after = replan(tmp_path, base, accounts, territories=moved_rules)
    new_york = {r["id"] for r in accounts if r["state"] == "NY"}
    assert {a for a, r in after.items() if r["replanned"]} == new_york
    assert all(after[a]["replanned"] == "territory_changed" and after[a]["territory_id"] == "west" for a in new_york)
    assert all(r["status"] == "unchanged" for a, r in after.items() if a not in new_york)
    assert run.summary["incremental"]["why"]["territory_changed"] == len(new_york)
    assert_only_replanned_move(before, after)


def test_a_member_removed_from_a_territory_has_its_accounts_replanned(tmp_path, first):
    base, accounts = first
    before = rows(base)
    _, after = replan(
        tmp_path, base, accounts, territories=TERRITORIES.replace("{user: e1}, {user: e2}", "{user: e2}, {user: e1, role: overlay}")
    )
    of_e1 = {a for a, r in before.items() if r["owner_id"] == "e1"}
    assert of_e1 and all(after[a]["replanned"] == "owner_left" and after[a]["owner_id"] == "e2" for a in of_e1)
    assert_only_replanned_move(before, after)


def test_an_account_unassigned_in_the_plan_is_replanned_once_it_has_a_candidate(tmp_path):
    accounts = book(10)
    accounts.append({"id": "TX1", "name": "Texas", "country": "US", "state": "TX", "revenue": 700, "owner_id": "w3"})
    plan(write(tmp_path / "v1", accounts), tmp_path / "plan1")
    assert rows(tmp_path / "plan1")["TX1"]["status"] == "unassigned"
    same, after_same = replan(tmp_path, tmp_path / "plan1", accounts)
    assert same.summary["incremental"]["replanned"] == 0 and after_same["TX1"]["status"] == "unassigned"
    assert after_same["TX1"]["reason"].startswith("matched no territory")
    run = plan(
        write(tmp_path / "v3", accounts, territories=TERRITORIES.replace("state: CA}", "state: [CA, TX]}")),
        tmp_path / "plan3",
        from_plan=tmp_path / "plan1",
    )
    after = rows(tmp_path / "plan3")
    assert after["TX1"]["replanned"] == "unassigned" and after["TX1"]["owner_id"] in ("w1", "w2", "w3")
    assert run.summary["incremental"]["why"]["unassigned"] == 1 and run.summary["incremental"]["replanned"] == 1


def test_locked_accounts_stay_locked_and_are_not_replanned(tmp_path, first):
    base, accounts = first
    changed = [dict(r) for r in accounts]
    changed[7]["locked"] = "true"
    changed[9].update(locked="true", revenue=1)
    _, after = replan(tmp_path, base, changed)
    assert after["A007"]["status"] == "locked" and after["A009"]["status"] == "locked"
    assert not after["A007"]["replanned"] and not after["A009"]["replanned"]
    changed[7]["locked"] = ""
    plan(write(tmp_path / "v3", changed), tmp_path / "plan3", from_plan=tmp_path / "plan2")
    again = rows(tmp_path / "plan3")
    assert again["A007"]["replanned"] == "fields_changed" and again["A009"]["status"] == "locked"


def test_loading_an_incremental_plan_rebuilds_it(tmp_path, first):
    base, accounts = first
    changed = [dict(r) for r in accounts] + [{"id": "NEW1", "name": "New", "country": "US", "state": "CA", "revenue": 5000}]
    changed[1]["revenue"] = 12_345
    run, _ = replan(tmp_path, base, changed)
    loaded = Plan.load(tmp_path / "plan2")
    assert list(loaded.rows()) == list(run.plan.rows())
    assert strip_timing(loaded.summary()) == strip_timing(run.plan.summary())


def test_the_new_plan_may_replace_the_old_one_and_the_cli_says_what_was_replanned(tmp_path, first):
    base, accounts = first
    changed = [dict(r) for r in accounts] + [{"id": "NEW1", "name": "New", "country": "US", "state": "CA", "revenue": 5000}]
    files = write(tmp_path / "v2", changed)
    old_id = Manifest.read(base).plan_id
    result = CliRunner().invoke(
        main,
        [
            "assign",
            "--rules",
            str(files["rules"]),
            "--accounts",
            str(files["accounts"]),
            "--users",
            str(files["users"]),
            "--out",
            str(base),
            "--from-plan",
            str(base),
            "--workers",
            "1",
            "--effort",
            "0.3",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"incremental from plan {old_id}: replanned 1 (new 1); kept {len(accounts)}; no longer in the book 0" in result.output
    assert Manifest.read(base).settings["from_plan"] == old_id and rows(base)["NEW1"]["replanned"] == "new"
    again = CliRunner().invoke(
        main,
        [
            "assign",
            "--rules",
            str(files["rules"]),
            "--accounts",
            str(files["accounts"]),
            "--users",
            str(files["users"]),
            "--out",
            str(tmp_path / "p3"),
            "--from-plan",
            str(base),
            "--workers",
            "1",
            "--format",
            "json",
            "-q",
        ],
    )
    assert again.exit_code == 0 and json.loads(again.output)["incremental"]["replanned"] == 0


def test_same_inputs_same_incremental_plan(tmp_path, first):
    base, accounts = first
    changed = [dict(r) for r in accounts] + [
        {"id": f"N{k}", "name": "New", "country": "US", "state": "CA", "revenue": 900 * k} for k in range(5)
    ]
    files = write(tmp_path / "v2", changed)
    plan(files, tmp_path / "a", from_plan=base)
    plan(files, tmp_path / "b", from_plan=base)
    assert (tmp_path / "a" / "accounts.jsonl").read_bytes() == (tmp_path / "b" / "accounts.jsonl").read_bytes()
    assert Manifest.read(tmp_path / "a").plan_id == Manifest.read(tmp_path / "b").plan_id != Manifest.read(base).plan_id


def test_a_plan_without_fingerprints_or_with_edited_files_is_refused(tmp_path, first):
    base, accounts = first
    files = write(tmp_path / "v2", accounts)
    text = (base / "accounts.jsonl").read_text(encoding="utf-8")
    (base / "accounts.jsonl").write_text(text.replace('"owner_id": "e1"', '"owner_id": "e2"', 1), encoding="utf-8")
    with pytest.raises(
        DataError, match="plan file accounts.jsonl changed since the plan was written; an incremental run needs the plan as it was written"
    ):
        plan(files, tmp_path / "out", from_plan=base)
    old = tmp_path / "old"
    plan(files, old)
    lines = [json.loads(line) for line in (old / "accounts.jsonl").read_text(encoding="utf-8").splitlines()]
    for r in lines:
        del r["fingerprint"]
    (old / "accounts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    reseal(old, format=1)  # as an engine before incremental runs wrote it
    with pytest.raises(DataError, match="plan row lacks fingerprint; plans written before incremental runs have none"):
        plan(files, tmp_path / "out", from_plan=old)
    with pytest.raises(DataError, match="not a saved plan"):
        plan(files, tmp_path / "out", from_plan=tmp_path / "v2")


def test_fingerprints_see_values_not_spelling():
    engine = engine_of(rules_text(TERRITORIES, fields="{state: string, revenue: number, since: date, key: boolean}"))
    base = {"id": "A", "state": "CA", "revenue": "5000", "since": "2024-01-05", "key": "true"}
    same = [
        {**base, "revenue": "5000.0"},
        {**base, "state": " CA "},
        {**base, "key": "yes"},
        {**base, "since": "2024-01-05T10:00:00"},
        {**base, "name": "renamed", "owner_id": "w1"},
    ]
    other = [
        {**base, "revenue": "5001"},
        {**base, "state": "ca"},
        {**base, "key": "false"},
        {**base, "since": None},
        {**base, "parent_id": "B"},
        {**base, "locked": "true"},
    ]
    records = [base, *same, *other, {"id": "B", "state": "CA"}]
    table = table_of(engine, [{**r, "id": f"{r['id']}{k}"} if r is not base and r["id"] == "A" else r for k, r in enumerate(records)])
    prints = account_fingerprints(table, list(engine.rules.field_types))
    assert np.all(prints[1 : 1 + len(same)] == prints[0])
    assert len(set(prints[1 + len(same) : 1 + len(same) + len(other)].tolist()) | {int(prints[0])}) == len(other) + 1


@st.composite
def changes(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, bool]]:
    """A random small book (families, locks, three states) and a random change of it."""
    n = draw(st.integers(4, 18))
    states = ["CA", "NY", "TX"]
    accounts = []
    for k in range(n):
        parent = draw(st.one_of(st.none(), st.integers(0, k - 1))) if k else None
        accounts.append(
            {
                "id": f"A{k:02d}",
                "name": "x",
                "parent_id": f"A{parent:02d}" if parent is not None and accounts[parent].get("parent_id") is None else None,
                "state": draw(st.sampled_from(states)),
                "country": "US",
                "revenue": draw(st.integers(1, 9)) * 100,
                "owner_id": draw(st.sampled_from([None, *USERS])),
                "locked": "true" if draw(st.integers(0, 9)) == 0 else "",
            }
        )
    changed = [dict(r) for r in accounts]
    for r in changed:
        kind = draw(st.integers(0, 9))
        if kind == 0:
            r["revenue"] += 50
        elif kind == 1:
            r["state"] = draw(st.sampled_from(states))
        elif kind == 2:
            r["owner_id"] = draw(st.sampled_from([None, *USERS]))
    for k in range(draw(st.integers(0, 3))):
        parent = draw(st.one_of(st.none(), st.sampled_from([r["id"] for r in changed if r.get("parent_id") is None])))
        changed.append(
            {"id": f"N{k}", "name": "new", "parent_id": parent, "state": draw(st.sampled_from(states)), "country": "US", "revenue": 300}
        )
    leaving = draw(
        st.sets(st.sampled_from([r["id"] for r in changed if not any(c.get("parent_id") == r["id"] for c in changed)]), max_size=2)
    )
    changed = [r for r in changed if r["id"] not in leaving]
    active = {u: draw(st.integers(0, 5)) > 0 for u in USERS}
    return accounts, changed, active


@given(changes())
def test_only_the_changed_set_moves(case):
    accounts, changed, active = case
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        plan(write(root / "v1", accounts), root / "plan1")
        run = plan(write(root / "v2", changed, users=active), root / "plan2", from_plan=root / "plan1")
        before, after = rows(root / "plan1"), rows(root / "plan2")
        lines = (root / "plan2" / "accounts.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(after) == len(changed)  # every account once
    assert set(after) == {r["id"] for r in changed}
    for account_id, row in after.items():
        if row["status"] == "unchanged":
            assert not row["replanned"] and row["owner_id"] == before[account_id]["owner_id"] and active[row["owner_id"]]
            assert row["territory_id"] == before[account_id]["territory_id"]
        if account_id not in before:
            assert row["replanned"] == "new" or row["status"] in ("locked", "excluded", "pinned")
    families: dict[str, set[str]] = {}
    for account_id, row in after.items():
        if row["status"] in ("unchanged", "assigned"):
            families.setdefault(row["ultimate_parent_id"] or account_id, set()).add(row["owner_id"])
    assert all(len(owners) == 1 for owners in families.values())
    incremental = run.summary["incremental"]
    assert incremental["replanned"] == sum(1 for r in after.values() if r["replanned"]) == sum(incremental["why"].values())
    assert incremental["kept"] == sum(1 for r in after.values() if r["status"] == "unchanged")
    assert incremental["removed"] == len(set(before) - set(after))


def test_kept_accounts_carry_their_pair_workload(tmp_path, first):
    """With a pairs file, a kept account counts at its owner's workload, as in the full run."""
    _, accounts = first
    files = write(tmp_path / "v1", accounts)
    files["rules"].write_text(
        rules_text(
            TERRITORIES,
            measures="{revenue: {field: revenue}, accounts: {constant: 1}, work: {pair: workload}}",
            assignment="{hierarchy: follow_ultimate_parent, balance: [{measure: work, tolerance: 0.3}]}",
        ),
        encoding="utf-8",
    )
    pairs = [
        {"account_id": r["id"], "user_id": u, "workload": 1 + (k * 7 + j) % 5} for k, r in enumerate(accounts) for j, u in enumerate(USERS)
    ]
    write_csv(tmp_path / "pairs.csv", pairs, ["account_id", "user_id", "workload"])
    full = plan(files, tmp_path / "full", pairs=tmp_path / "pairs.csv")
    again = plan(files, tmp_path / "again", pairs=tmp_path / "pairs.csv", from_plan=tmp_path / "full")
    assert again.summary["incremental"]["replanned"] == 0
    for mine, theirs in zip(again.summary["users"], full.summary["users"], strict=True):
        assert mine["loads"]["work"]["after"] == pytest.approx(theirs["loads"]["work"]["after"])
        # a fair share counts a kept account at its owner's workload, a full run a unit at its candidates' mean
        assert mine["loads"]["work"]["fair_share"] == pytest.approx(theirs["loads"]["work"]["fair_share"], rel=0.05)


def test_deals_follow_kept_and_replanned_accounts(tmp_path):
    files = demo_files()
    options: dict[str, Any] = {"opportunities": files["opportunities"], "workers": 1, "report": False}
    full = assign_files(files["rules"], files["accounts"], files["users"], tmp_path / "full", **options)
    again = assign_files(files["rules"], files["accounts"], files["users"], tmp_path / "again", from_plan=tmp_path / "full", **options)
    assert again.summary["incremental"]["replanned"] == 0
    deals_before, deals_after = (rows_of(tmp_path / d, "opportunities", "opportunity_id") for d in ("full", "again"))
    assert {d: r["owner_id"] for d, r in deals_after.items()} == {d: r["owner_id"] for d, r in deals_before.items()}
    assert again.summary["opportunities"]["moved"] == full.summary["opportunities"]["moved"]


def rows_of(directory: Path, table: str, key: str) -> dict[str, dict[str, Any]]:
    with (directory / f"{table}.jsonl").open(encoding="utf-8") as handle:
        return {r[key]: r for r in map(json.loads, handle)}
