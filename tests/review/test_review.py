"""review: a saved plan's gains and losses per user and territory, moves between owners, two plans side by side."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from assignment_engine import DataError
from assignment_engine.batch import assign_files
from assignment_engine.cli import main
from assignment_engine.files.manifest import InputFile, Manifest
from assignment_engine.files.rows import read_summary
from assignment_engine.review.diff import NONE, Load, Move, MovedAccount, compare_plans, diff_plan


def _account(account_id: str, previous: str, owner: str, territory: str, value: float) -> dict[str, Any]:
    return {
        "account_id": account_id,
        "owner_id": owner,
        "territory_id": territory,
        "previous_owner_id": previous,
        "moved": owner != previous,
        "status": "assigned" if territory else "unassigned",
        "rule": "",
        "reason": f"why {account_id}",
        "value": value,
        "ultimate_parent_id": "",
        "family_size": 1,
    }


# a keeps X1; X2 goes a → b; X3 leaves an owner who is no longer a user; X4 had no owner; X5 ends unassigned; X6 goes b → a
ACCOUNTS = [
    _account("X1", "a", "a", "t1", 100),
    _account("X2", "a", "b", "t1", 50),
    _account("X3", "gone", "b", "t2", 30),
    _account("X4", "", "a", "t2", 20),
    _account("X5", "b", "", "", 10),
    _account("X6", "b", "a", "t1", 5),
]
DEALS = [
    {
        "opportunity_id": "O1",
        "account_id": "X2",
        "owner_id": "b",
        "previous_owner_id": "a",
        "moved": True,
        "status": "follows_account",
        "reason": "",
    },
    {
        "opportunity_id": "O2",
        "account_id": "X1",
        "owner_id": "a",
        "previous_owner_id": "gone",
        "moved": True,
        "status": "follows_account",
        "reason": "",
    },
    {"opportunity_id": "O3", "account_id": "X1", "owner_id": "a", "previous_owner_id": "a", "moved": False, "status": "kept", "reason": ""},
]


def _loads(revenue: tuple[float, float, float], accounts: tuple[float, float, float]) -> dict[str, Any]:
    def entry(before: float, after: float, fair: float) -> dict[str, Any]:
        return {"before": before, "after": after, "fair_share": fair, "deviation": after / fair - 1 if fair else None}

    return {"revenue": entry(*revenue), "accounts": entry(*accounts), "pipeline": {"before": 0.0, "after": 0.0}}  # pipeline: not balanced


def _summary(accounts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "accounts": len(accounts),
        "status_counts": {"assigned": 5, "locked": 0, "excluded": 0, "pinned": 0, "unassigned": 1},
        "moved": {"accounts": 5, "value": 115.0, "value_measure": "revenue"},
        "balance": [
            {
                "balance": "revenue",
                "tolerance": 0.1,
                "max_deviation": 0.25,
                "min_deviation": -0.2,
                "max_deviation_before": 0.5,
                "min_deviation_before": -0.4,
                "users_outside_tolerance": ["a"],
            },
            {
                "balance": "accounts",
                "tolerance": 0.2,
                "max_deviation": 0.0,
                "min_deviation": 0.0,
                "max_deviation_before": 0.0,
                "min_deviation_before": 0.0,
                "users_outside_tolerance": [],
            },
        ],
        "users": [
            {"user_id": "a", "weight": 1.0, "active": True, "loads": _loads((150, 125, 100), (2, 3, 2.5))},
            {"user_id": "b", "weight": 1.0, "active": True, "loads": _loads((15, 80, 100), (2, 2, 2.5))},
            {"user_id": "c", "weight": 1.0, "active": False, "loads": _loads((0, 0, 0), (0, 0, 0))},
        ],
        "unassigned": [{"account_id": "X5", "reason": "matched no territory"}],
        "hierarchy_problems": [],
        "conflicts": [],
        "solver": {"per_component": []},
        "opportunities": {"opportunities": 3, "moved": {"opportunities": 2, "amount": 0.0}},
    }


def write_saved_plan(
    directory: Path, accounts: list[dict[str, Any]], *, book: str = "book-1", deals: list[dict[str, Any]] | None = DEALS
) -> Path:
    """A plan directory as assign writes it, with every figure chosen by hand; ``book`` stands for the accounts file's content."""
    directory.mkdir(parents=True)
    summary = _summary(accounts)
    if deals is None:
        del summary["opportunities"]
    (directory / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    (directory / "accounts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in accounts), encoding="utf-8")
    if deals is not None:
        (directory / "opportunities.jsonl").write_text("".join(json.dumps(r) + "\n" for r in deals), encoding="utf-8")
    inputs = [
        InputFile("rules", "/in/rules.yaml", "0" * 64),
        InputFile("accounts", "/in/accounts.csv", hashlib.sha256(book.encode()).hexdigest(), len(accounts)),
    ]
    outputs = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}
    manifest = Manifest(
        "test",
        inputs,
        {"seed": 0, "time_limit": 1.0, "as_of": None, "hierarchy_errors": "raise", "workers": 1},
        {"accounts": len(accounts), "moved": 5},
        outputs,
    )
    (directory / "plan.json").write_text(json.dumps(manifest.to_json()), encoding="utf-8")
    return directory


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    return write_saved_plan(tmp_path / "plan", ACCOUNTS)


def test_gains_and_losses_per_user(saved):
    d = diff_plan(saved)
    users = {u.user_id: u for u in d.users}
    assert list(users) == ["a", "b", "c", "gone"]  # the users file's order, then owners who are not users
    a, b, c, gone = users["a"], users["b"], users["c"], users["gone"]
    assert (a.accounts_before, a.accounts_after, a.gained, a.lost, a.value_gained, a.value_lost) == (2, 3, 2, 1, 25, 50)
    assert (b.accounts_before, b.accounts_after, b.gained, b.lost, b.value_gained, b.value_lost) == (2, 2, 2, 2, 80, 15)
    assert (gone.is_user, gone.accounts_before, gone.accounts_after, gone.lost, gone.value_lost) == (False, 1, 0, 1, 30)
    assert (c.is_user, c.active, c.changed) == (True, False, False)
    assert (a.deals_gained, a.deals_lost, b.deals_gained, b.deals_lost, gone.deals_lost) == (1, 1, 1, 0, 1)
    assert a.loads == {"revenue": Load(150, 125, 100, 1.5, 1.25), "accounts": Load(2, 3, 2.5, 0.8, 1.2)}
    assert c.loads["revenue"] == Load(0, 0, 0, None, None)  # no fair share: no share of it
    assert gone.loads == {}


def test_territories_moves_and_largest(saved):
    d = diff_plan(saved, largest=2)
    assert [(t.territory_id, t.accounts, t.value, t.moved, t.value_moved, t.owners_before, t.owners_after) for t in d.territories] == [
        ("t1", 3, 155, 2, 55, 2, 2),
        ("t2", 2, 50, 2, 50, 1, 2),  # X4 had no owner: not counted as one
        (NONE, 1, 10, 1, 10, 1, 0),
    ]
    assert d.moves == [
        Move("a", "b", 1, 50),
        Move("gone", "b", 1, 30),
        Move(NONE, "a", 1, 20),
        Move("b", NONE, 1, 10),
        Move("b", "a", 1, 5),
    ]
    assert d.largest == [
        MovedAccount("X2", "a", "b", "t1", 50, "assigned", "why X2"),
        MovedAccount("X3", "gone", "b", "t2", 30, "assigned", "why X3"),
    ]
    assert (d.accounts, d.moved, d.value_moved, d.deals, d.deals_moved) == (6, 5, 115, 3, 2)
    assert d.unassigned == {"matched no territory": 1}
    assert [(b.measure, b.tolerance, b.min_before, b.max_after, b.users_outside) for b in d.bands] == [
        ("revenue", 0.1, -0.4, 0.25, ["a"]),
        ("accounts", 0.2, 0.0, 0.0, []),
    ]


def test_a_plan_without_deals(tmp_path):
    d = diff_plan(write_saved_plan(tmp_path / "plan", ACCOUNTS, deals=None))
    assert d.deals is None and d.deals_moved == 0
    assert all(u.deals_gained == u.deals_lost == 0 for u in d.users)


def test_equal_values_keep_the_earlier_account_among_the_largest(tmp_path):
    rows = [_account(f"E{i}", "a", "b", "t1", 7) for i in range(5)]
    assert [m.account_id for m in diff_plan(write_saved_plan(tmp_path / "plan", rows), largest=3).largest] == ["E0", "E1", "E2"]


def test_json_output(saved):
    result = CliRunner().invoke(main, ["diff", str(saved), "--format", "json", "--largest", "1"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {
        "directory",
        "plan_id",
        "value_measure",
        "headline",
        "accounts",
        "moved",
        "value_moved",
        "bands",
        "users",
        "territories",
        "moves",
        "largest",
        "unassigned",
        "deals",
        "deals_moved",
    }
    assert data["users"][0] == {
        "user_id": "a",
        "is_user": True,
        "active": True,
        "accounts_before": 2,
        "accounts_after": 3,
        "gained": 2,
        "lost": 1,
        "value_gained": 25.0,
        "value_lost": 50.0,
        "loads": {
            "revenue": {"before": 150, "after": 125, "fair_share": 100, "share_before": 1.5, "share_after": 1.25},
            "accounts": {"before": 2, "after": 3, "fair_share": 2.5, "share_before": 0.8, "share_after": 1.2},
        },
        "deals_gained": 1,
        "deals_lost": 1,
    }
    assert data["moves"][0] == {"from_id": "a", "to_id": "b", "accounts": 1, "value": 50.0}
    assert [m["account_id"] for m in data["largest"]] == ["X2"]


def test_text_output_escapes_data(tmp_path):
    rows = [_account("\x1b[2JX", "a", "[bold]b[/bold]", "t1", 1)]
    result = CliRunner().invoke(main, ["diff", str(write_saved_plan(tmp_path / "plan", rows))], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and "\\x1b[2JX" in result.stdout
    assert "[bold]b[/bold]" in result.stdout  # shown as written, not taken as markup
    assert "+1 / -0" in result.stdout and "150% → 125%" in result.stdout


def test_compare_two_plans_of_the_same_book(tmp_path):
    a = write_saved_plan(tmp_path / "a", ACCOUNTS)
    other = [dict(r) for r in ACCOUNTS]
    other[0]["owner_id"], other[1]["owner_id"] = "c", "a"  # X1 a → c, X2 b → a
    b = write_saved_plan(tmp_path / "b", other)
    c = compare_plans(a, b)
    assert (c.accounts, c.differing, c.value_differing) == (6, 2, 150)
    assert c.moves == [Move("a", "c", 1, 100), Move("b", "a", 1, 50)]
    assert [m.account_id for m in c.largest] == ["X1", "X2"]
    assert [u.user_id for u in c.users] == ["a", "b", "c"]
    assert c.users[0].a["revenue"] == c.users[0].b["revenue"] == Load(150, 125, 100, 1.5, 1.25)
    assert (c.a.directory, c.b.directory, c.a.rules_sha256) == (str(a), str(b), "0" * 64)
    assert compare_plans(a, a).differing == 0
    text = CliRunner().invoke(main, ["diff", str(a), str(b)], env={"COLUMNS": "200"})
    assert text.exit_code == 0, text.output
    assert "accounts owned differently" in text.stdout and "2 (150)" in text.stdout
    data = json.loads(CliRunner().invoke(main, ["diff", str(a), str(b), "--format", "json"]).stdout)
    assert set(data) == {"a", "b", "accounts", "differing", "value_differing", "users", "moves", "largest"}
    assert data["moves"][0] == {"from_id": "a", "to_id": "c", "accounts": 1, "value": 100.0}


def test_plans_of_different_books_are_refused(tmp_path):
    a = write_saved_plan(tmp_path / "a", ACCOUNTS)
    b = write_saved_plan(tmp_path / "b", ACCOUNTS, book="book-2")
    with pytest.raises(DataError) as caught:
        compare_plans(a, b)
    (finding,) = caught.value.findings
    assert str(finding.location) == str(b / "plan.json")
    assert "plans of different books" in finding.message and "/in/accounts.csv" in finding.message
    result = CliRunner().invoke(main, ["diff", str(a), str(b)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{b / 'plan.json'}: {a} and {b} are plans of different books")


def test_not_a_plan_and_damaged_rows_are_located_errors(tmp_path, saved):
    result = CliRunner().invoke(main, ["diff", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert "not a saved plan: no plan.json" in result.stderr
    rows = [dict(r) for r in ACCOUNTS]
    del rows[2]["value"]  # as written by an engine before rows carried values
    old = write_saved_plan(tmp_path / "old", rows)
    with pytest.raises(DataError) as caught:
        diff_plan(old)
    assert str(caught.value).startswith(f"{old / 'accounts.jsonl'}:3: plan row lacks value")


def test_a_real_plan_agrees_with_its_summary(example_files, tmp_path):
    out = tmp_path / "plan"
    assign_files(example_files["rules"], example_files["accounts"], example_files["users"], out, workers=1)
    summary = read_summary(out)
    d = diff_plan(out)
    assert (d.accounts, d.moved) == (summary["accounts"], summary["moved"]["accounts"])
    assert d.value_moved == pytest.approx(summary["moved"]["value"])
    for user in summary["users"]:
        change = next(u for u in d.users if u.user_id == user["user_id"])
        assert (change.accounts_before, change.accounts_after) == (user["loads"]["accounts"]["before"], user["loads"]["accounts"]["after"])
    assert sum(u.gained for u in d.users) + sum(m.accounts for m in d.moves if m.to_id == NONE) == d.moved
