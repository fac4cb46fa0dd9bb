"""Hard constraints that cannot all hold are explained, and --strict refuses to write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assignment_engine import Engine, InfeasibleError, User, assign_files, compile_rules, json_schema
from conftest import EXAMPLE_RULES, table_of

ROOT = Path(__file__).resolve().parents[1]


def _engine() -> Engine:
    return Engine(compile_rules(EXAMPLE_RULES))


def _users(**caps: int) -> list[User]:
    return [User(u, capacity={"accounts": caps[u]} if u in caps else {}) for u in ["u001", "u010", "u011", "u012", "u013"]]


def test_accounts_beyond_capacity_stay_unassigned_and_are_named():
    engine = _engine()
    records = [{"id": f"W{i}", "country": "US", "state": "CA", "annual_revenue": 10 + i} for i in range(5)]
    plan = engine.assign(table_of(engine, records), _users(u010=1, u011=2), effort=1.0)
    unassigned = [r for r in plan.rows() if r["status"] == "unassigned"]
    assert len(unassigned) == 2  # five accounts, room for three
    assert all("no capacity left among u010, u011" in r["reason"] for r in unassigned)
    conflicts = [str(f) for f in plan.conflicts()]
    assert len(conflicts) == 1 and "2 account(s) could not be placed" in conflicts[0]
    for r in unassigned:
        assert r["account_id"] in conflicts[0]


def test_locked_load_above_capacity_is_a_conflict_not_a_failure():
    engine = _engine()
    records = [{"id": f"L{i}", "country": "US", "state": "CA", "annual_revenue": 5, "owner_id": "u010", "locked": True} for i in range(3)]
    plan = engine.assign(table_of(engine, records), _users(u010=1), effort=1.0)
    assert [r["owner_id"] for r in plan.rows()] == ["u010"] * 3  # locks win
    assert any("u010" in str(f) and "above max_accounts 1" in str(f) for f in plan.conflicts())


def test_locked_to_a_user_outside_the_territory_is_a_conflict():
    engine = _engine()
    records = [{"id": "X", "country": "US", "state": "NY", "annual_revenue": 5, "owner_id": "u010", "locked": True}]
    plan = engine.assign(table_of(engine, records), _users(), effort=1.0)
    row = next(plan.rows())
    assert row["owner_id"] == "u010" and row["territory_id"] == "amer-east"
    assert any("locked to u010, who is not an owner of its territory amer-east" in str(f) for f in plan.conflicts())


def test_strict_raises_and_writes_nothing(tmp_path: Path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(EXAMPLE_RULES)
    accounts = tmp_path / "accounts.csv"
    accounts.write_text(
        "id,country,state,postal_code,industry,annual_revenue,employees\n" + "".join(f"A{i},US,CA,,x,{i},1\n" for i in range(4))
    )
    users = tmp_path / "users.csv"
    users.write_text("id,max_accounts\nu001,\nu010,1\nu011,1\nu012,\nu013,\n")
    out = tmp_path / "plan"
    with pytest.raises(InfeasibleError) as caught:
        assign_files(rules, accounts, users, out, strict=True, effort=1.0)
    assert "could not be placed" in str(caught.value)
    assert f"{accounts}:" in str(caught.value)  # located at the accounts file
    assert not out.exists()
    run = assign_files(rules, accounts, users, out, effort=1.0)  # without --strict: a plan, with the conflict
    assert run.summary["conflicts"] and (out / "accounts.csv").is_file()


def test_shipped_schema_matches_the_models():
    """rule-file.schema.json (referenced by the demo rule file) is the models' schema, not a stale copy."""
    assert json.loads((ROOT / "rule-file.schema.json").read_text()) == json_schema()
