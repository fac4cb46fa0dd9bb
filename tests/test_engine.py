"""End to end: the example book, plan invariants on random books, determinism, written output."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import assignment_engine
from assignment_engine import Engine, OptionError, User, compile_rules, read_accounts, read_users, write_plan
from conftest import EXAMPLE_FIELDS, EXAMPLE_USERS, match_of, rows_by_id, rules_text, strip_timing, table_of, write_csv

# ---------------------------------------------------------------- the example book


def test_example_book_end_to_end(example_engine, example_users):
    records = [
        {"id": "BIG", "country": "US", "state": "CA", "annual_revenue": 2_000_000_000, "owner_id": "u010"},
        {"id": "W1", "country": "US", "state": "CA", "annual_revenue": 500},
        {"id": "W2", "country": "CA", "state": "WA", "annual_revenue": 500},
        {"id": "E1", "country": "US", "state": "NY", "annual_revenue": 300},
        {"id": "E2", "country": "MX", "state": "XX", "postal_code": "15000", "annual_revenue": 300},
        {"id": "MID", "country": "BR", "state": "SP", "postal_code": "20000", "annual_revenue": 10},
        {"id": "NOR", "country": "NO", "state": "ON", "postal_code": "01234", "annual_revenue": 10},
        {"id": "CA-FR", "country": "FR", "state": "CA", "annual_revenue": 10},
    ]
    plan = example_engine.assign(table_of(example_engine, records), example_users, effort=1.0)
    rows = rows_by_id(plan)
    assert [r["account_id"] for r in plan.rows()] == [r["id"] for r in records]
    assert (rows["BIG"]["territory_id"], rows["BIG"]["owner_id"]) == ("strategic", "u001")
    assert rows["BIG"]["moved"] is True and rows["BIG"]["previous_owner_id"] == "u010"
    assert rows["BIG"]["rule"] == "strategic:enterprise"
    for west in ("W1", "W2"):
        assert rows[west]["territory_id"] == "amer-west" and rows[west]["owner_id"] in ("u010", "u011")
        assert rows[west]["rule"] == "amer:americas & amer-west:rule 1"
    for east in ("E1", "E2"):
        assert rows[east]["territory_id"] == "amer-east" and rows[east]["owner_id"] in ("u012", "u013")
    # balance between two owners of each territory: one account each
    assert rows["W1"]["owner_id"] != rows["W2"]["owner_id"]
    assert rows["E1"]["owner_id"] != rows["E2"]["owner_id"]
    # in amer only (no child matched): amer has no owner member
    assert rows["MID"]["status"] == "unassigned" and "amer" in rows["MID"]["reason"]
    assert rows["NOR"]["status"] == "unassigned" and rows["NOR"]["reason"] == "matched no territory"
    assert rows["CA-FR"]["reason"] == "matched no territory"


def test_single_account_match_on_the_example(example_engine):
    unknown = {"industry": None, "annual_revenue": None, "employees": None}  # every declared field is a key; None: not known
    m = example_engine.match({"id": "x", "country": "US", "state": "PA", "postal_code": "19999", **unknown})
    assert m.territories == ["amer-east"] and m.candidates == ["u012", "u013"]
    m = example_engine.match({"id": "x", "country": "US", "state": "PA", "postal_code": "01234", **unknown})
    assert m.territories == ["amer"] and m.candidates == []


def test_explain_lists_rules_family_and_owner(example_engine, example_users):
    records = [
        {"id": "P", "country": "US", "state": "CA", "annual_revenue": 10, "owner_id": "u011"},
        {"id": "C", "country": "US", "state": "NY", "annual_revenue": 10, "parent_id": "P"},
    ]
    plan = example_engine.assign(table_of(example_engine, records), example_users, effort=1.0)
    text = "\n".join(plan.explain("C"))
    assert "amer-east (geo, priority 2): MATCHED" in text
    assert "amer-west (geo, priority 2): no match" in text
    assert "family: ultimate parent P" in text
    assert f"owner: {rows_by_id(plan)['P']['owner_id']}" in text
    with pytest.raises(KeyError):
        plan.explain("nope")


# ---------------------------------------------------------------- properties on random books

PROPERTY_RULES = rules_text(
    """
    - id: west
      type: geo
      rules: [{when: {state: [CA, OR]}}]
      members: [{user: u1}, {user: u2}, {user: u3}]
    - id: east
      type: geo
      rules: [{when: {state: NY}}]
      members: [{user: u3}, {user: u4}, {user: u5}]
    - id: south
      type: geo
      rules: [{when: {state: [TX, NY]}}]
      members: [{user: u5}, {user: u6}]
    - id: big
      type: named
      rules: [{when: {revenue: {gte: 900}}}]
      members: [{user: u6}]
    - id: specialists
      type: overlay
      rules: [{when: {state: CA}}]
      members: [{user: u2}]
    """,
    types="[{name: named, priority: 1}, {name: geo, priority: 2}, {name: overlay, priority: 3, overlay: true}]",
    assignment="{hierarchy: HIERARCHY, balance: [{measure: revenue, tolerance: 0.10}, {measure: accounts, tolerance: 0.20}]}",
)
ENGINES = {h: Engine(compile_rules(PROPERTY_RULES.replace("HIERARCHY", h))) for h in ("follow_ultimate_parent", "independent")}
USER_IDS = [f"u{i}" for i in range(1, 7)]


@st.composite
def books(draw):
    n = draw(st.integers(1, 30))
    records = []
    for i in range(n):
        parent = draw(st.one_of(st.none(), st.integers(0, i - 1))) if i > 0 else None
        records.append(
            {
                "id": f"A{i}",
                "state": draw(st.sampled_from(["CA", "OR", "NY", "TX", "WA"])),
                "revenue": draw(st.integers(0, 1000)),
                "owner_id": draw(st.sampled_from([None, *USER_IDS])),
                "parent_id": None if parent is None else f"A{parent}",
                "locked": draw(st.integers(0, 4)) == 0,
                "excluded": draw(st.integers(0, 9)) == 0,
            }
        )
    order = draw(st.permutations(range(n)))  # parents need not come before their children
    records = [records[i] for i in order]
    capacities = draw(st.lists(st.one_of(st.none(), st.integers(0, 8)), min_size=6, max_size=6))
    users = [User(u, capacity={} if c is None else {"accounts": c}) for u, c in zip(USER_IDS, capacities, strict=True)]
    hierarchy = draw(st.sampled_from(sorted(ENGINES)))
    return records, users, hierarchy


def _root(records_by_id: dict[str, dict], account: str) -> str:
    seen = set()
    while records_by_id[account]["parent_id"] is not None and account not in seen:
        seen.add(account)
        account = records_by_id[account]["parent_id"]
    return account


@settings(max_examples=80)
@given(books())
def test_plan_invariants_on_random_books(book):
    records, users, hierarchy = book
    engine = ENGINES[hierarchy]
    plan = engine.assign(table_of(engine, records), users, effort=0.5)
    rows = list(plan.rows())
    by_id = {r["id"]: r for r in records}

    # every input account exactly once, in input order
    assert [r["account_id"] for r in rows] == [r["id"] for r in records]
    out = {r["account_id"]: r for r in rows}

    for r in records:
        row = out[r["id"]]
        previous = r["owner_id"] or ""
        assert row["previous_owner_id"] == previous
        assert row["moved"] == (row["owner_id"] != previous)
        # locked and excluded accounts keep their owner
        if r["excluded"]:
            assert row["status"] == "excluded" and row["owner_id"] == previous and row["territory_id"] == ""
        elif r["locked"]:
            assert row["status"] == "locked" and row["owner_id"] == previous
        # an assigned account's owner is an owner member of its (non-overlay) territory
        if row["status"] == "assigned":
            node = engine.rules.territories[row["territory_id"]]
            assert not node.overlay
            assert row["owner_id"] in node.owners
        if row["status"] == "unassigned":
            assert row["owner_id"] == "" and row["reason"]
        assert row["territory_id"] != "specialists"

    # an assigned account sits in an owning territory of the account whose decision it follows
    owning_cache: dict[str, list[str]] = {}

    def owning(account: str) -> list[str]:
        if account not in owning_cache:
            owning_cache[account] = match_of(engine, by_id[account]).owning
        return owning_cache[account]

    for r in records:
        row = out[r["id"]]
        follows = _root(by_id, r["id"]) if hierarchy == "follow_ultimate_parent" else r["id"]
        if row["status"] == "assigned":
            assert row["territory_id"] in owning(follows), (r["id"], follows)
        if row["status"] == "unassigned" and row["reason"].endswith("matched no territory"):
            assert owning(follows) == []

    # families stay together
    if hierarchy == "follow_ultimate_parent":
        for r in records:
            root = _root(by_id, r["id"])
            if root == r["id"] or r["locked"] or r["excluded"]:
                continue
            root_record = by_id[root]
            assert out[r["id"]]["owner_id"] == out[root]["owner_id"], (r["id"], root)
            if not (root_record["locked"] or root_record["excluded"]):
                assert out[r["id"]]["status"] == out[root]["status"]
                assert out[r["id"]]["territory_id"] == out[root]["territory_id"]

    # capacity: never exceeded by accounts the plan assigned
    for user in users:
        cap = user.capacity.get("accounts")
        if cap is None:
            continue
        mine = [row for row in rows if row["owner_id"] == user.id]
        fixed = sum(1 for row in mine if row["status"] in ("locked", "excluded", "pinned"))
        assigned = sum(1 for row in mine if row["status"] == "assigned")
        if fixed <= cap:
            assert fixed + assigned <= cap, (user.id, fixed, assigned, cap)
        else:
            assert assigned == 0, (user.id, fixed, assigned, cap)

    # the optimizer never ends worse than its greedy start, objective by objective in order
    for c in plan.solution.components:
        assert [o.value for o in c.objectives] <= [o.greedy for o in c.objectives]
    assert sum(c.moves for c in plan.solution.components) == sum(1 for r in rows if r["status"] == "assigned" and r["moved"])

    # the summary agrees with the rows
    summary = plan.summary()
    assert summary["accounts"] == len(records)
    assert sum(summary["status_counts"].values()) == len(records)
    assert summary["status_counts"] == {**dict.fromkeys(summary["status_counts"], 0), **Counter(r["status"] for r in rows)}
    assert summary["moved"]["accounts"] == sum(r["moved"] for r in rows)
    assert [u["account_id"] for u in summary["unassigned"]] == [r["account_id"] for r in rows if r["status"] == "unassigned"]


@settings(max_examples=20)
@given(books())
def test_same_input_and_seed_give_identical_plans(book):
    records, users, hierarchy = book
    engine = ENGINES[hierarchy]
    first = engine.assign(table_of(engine, records), users, effort=0.5, seed=7)
    second = engine.assign(table_of(engine, records), users, effort=0.5, seed=7)
    assert list(first.rows()) == list(second.rows())
    assert strip_timing(first.summary()) == strip_timing(second.summary())


def test_same_plan_for_any_number_of_workers():
    # three territories with disjoint owners: three independent components, solved in parallel with workers=2
    text = rules_text(
        """
        - {id: west, type: geo, rules: [{when: {state: CA}}], members: [{user: u1}, {user: u2}]}
        - {id: east, type: geo, rules: [{when: {state: NY}}], members: [{user: u3}, {user: u4}]}
        - {id: south, type: geo, rules: [{when: {state: TX}}], members: [{user: u5}, {user: u6}]}
        """
    )
    engine = Engine(compile_rules(text))
    records = [
        {"id": f"A{i}", "state": ["CA", "NY", "TX"][i % 3], "revenue": (i * 53) % 400 + 1, "owner_id": USER_IDS[i % 6] if i % 5 else None}
        for i in range(30)
    ]
    users = [User(u) for u in USER_IDS]
    one = engine.assign(table_of(engine, records), users, effort=0.5, workers=1)
    two = engine.assign(table_of(engine, records), users, effort=0.5, workers=2)
    assert len([c for c in one.solution.components if c.objectives]) == 3
    assert list(one.rows()) == list(two.rows())
    assert strip_timing(one.summary()) == strip_timing(two.summary())


# ---------------------------------------------------------------- output files


def test_write_plan_files(tmp_path, example_engine, example_users):
    records = [
        {"id": "W1", "country": "US", "state": "CA", "annual_revenue": 500, "owner_id": "u010", "postal_code": "01234"},
        {"id": "W2", "country": "US", "state": "OR", "annual_revenue": 400, "owner_id": "u010"},
        {"id": "E1", "country": "US", "state": "NY", "annual_revenue": 300},
        {"id": "NOR", "country": "NO", "annual_revenue": 5, "owner_id": "u012"},
        {"id": "L", "country": "US", "state": "CA", "annual_revenue": 50, "owner_id": "u011", "locked": True},
    ]
    plan = example_engine.assign(table_of(example_engine, records), example_users, effort=1.0)
    out = tmp_path / "plan"
    returned = write_plan(plan, out)

    names = sorted(p.name for p in out.iterdir())
    assert {"accounts.csv", "accounts.jsonl", "summary.json"} <= set(names)
    assert not [n for n in names if n.startswith(".") or n.endswith(".tmp")], names

    with (out / "accounts.csv").open(newline="", encoding="utf-8") as handle:
        csv_rows = list(csv.DictReader(handle))
    jsonl_rows = [json.loads(line) for line in (out / "accounts.jsonl").read_text(encoding="utf-8").splitlines()]
    for column in ("account_id", "owner_id", "territory_id", "previous_owner_id", "moved", "rule", "reason"):
        assert column in csv_rows[0], column
        assert column in jsonl_rows[0], column
    assert [r["account_id"] for r in csv_rows] == [r["account_id"] for r in jsonl_rows] == ["W1", "W2", "E1", "NOR", "L"]
    for c, j in zip(csv_rows, jsonl_rows, strict=True):
        for column in ("account_id", "owner_id", "territory_id", "previous_owner_id", "rule", "reason", "status"):
            assert c[column] == j[column]
        assert c["moved"] == ("true" if j["moved"] else "false")
    assert jsonl_rows == list(plan.rows())
    by_id = {r["account_id"]: r for r in jsonl_rows}
    assert by_id["NOR"]["reason"] == "matched no territory" and by_id["NOR"]["moved"] is True
    assert by_id["L"]["owner_id"] == "u011" and by_id["L"]["status"] == "locked"

    def no_nan(token):
        raise AssertionError(f"summary.json holds {token}, which is not JSON")

    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"), parse_constant=no_nan)
    assert summary == json.loads(json.dumps(returned))
    users = {u["user_id"]: u for u in summary["users"]}
    assert set(users) == set(EXAMPLE_USERS)
    moved_rows = [r for r in jsonl_rows if r["moved"]]
    assert summary["moved"]["accounts"] == len(moved_rows)
    revenue = {r["id"]: r["annual_revenue"] for r in records}
    assert summary["moved"]["value"] == sum(revenue[r["account_id"]] for r in moved_rows)
    for u in users.values():
        after = sum(revenue[r["account_id"]] for r in jsonl_rows if r["owner_id"] == u["user_id"])
        assert u["loads"]["revenue"]["after"] == after
        before = sum(revenue[r["id"]] for r in records if r.get("owner_id") == u["user_id"])
        assert u["loads"]["revenue"]["before"] == before
        assert "fair_share" in u["loads"]["revenue"]
    labels = [b["balance"] for b in summary["balance"]]
    assert labels == ["revenue", "accounts"]
    for b in summary["balance"]:
        assert {"max_deviation", "min_deviation", "users_outside_tolerance", "tolerance"} <= set(b)
        if b["max_deviation"] is not None:
            assert b["min_deviation"] <= b["max_deviation"]
    assert summary["unassigned"] == [{"account_id": "NOR", "reason": "matched no territory"}]
    assert {"components", "moves", "moves_lower_bound", "objectives", "status"} <= set(summary["solver"])


def test_write_plan_replaces_a_previous_plan_whole_and_nothing_else(tmp_path, example_engine, example_users):
    plan = example_engine.assign(table_of(example_engine, [{"id": "A", "country": "US", "state": "CA"}]), example_users, effort=1.0)
    out = tmp_path / "plan"
    write_plan(plan, out, report=False)
    (out / "opportunities.csv").write_text("stale\n", encoding="utf-8")  # as a previous plan with deals had it
    write_plan(plan, out, report=False)
    assert sorted(p.name for p in out.iterdir()) == ["accounts.csv", "accounts.jsonl", "plan.json", "summary.json"]
    exports = tmp_path / "exports"
    exports.mkdir()
    (exports / "accounts.csv").write_text("stale\n", encoding="utf-8")  # not a plan: no plan.json
    with pytest.raises(OptionError, match="not a previous output"):
        write_plan(plan, exports)
    assert (exports / "accounts.csv").read_text(encoding="utf-8") == "stale\n"


def test_csv_round_trip_keeps_leading_zero_in_output(tmp_path, example_engine, example_users):
    columns = ["id", "name", "owner_id", *EXAMPLE_FIELDS]
    path = write_csv(
        tmp_path / "accounts.csv", [{"id": "01234", "country": "US", "state": "NY", "postal_code": "01234", "annual_revenue": 5}], columns
    )
    table = read_accounts(path, example_engine.rules.field_types)
    plan = example_engine.assign(table, example_users, effort=1.0)
    write_plan(plan, tmp_path / "out")
    with (tmp_path / "out" / "accounts.csv").open(newline="", encoding="utf-8") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["account_id"] == "01234"
    assert row["territory_id"] == "amer-east"
    assert any("'01234'" in line for line in plan.explain("01234"))


# ---------------------------------------------------------------- the public API

EXPECTED_ALL = [
    "AccountResult",
    "AccountTable",
    "ApplyResult",
    "AssignmentEngineError",
    "CompiledRules",
    "DataError",
    "Engine",
    "Finding",
    "HierarchyError",
    "InfeasibleError",
    "Location",
    "OptionError",
    "Plan",
    "RuleFileError",
    "Status",
    "TerritoryMatch",
    "User",
    "apply_plan",
    "assign_files",
    "compile_rules",
    "demo_files",
    "json_schema",
    "load_rules",
    "plan_files",
    "read_accounts",
    "read_users",
    "write_plan",
]


def test_public_api_is_pinned():
    assert sorted(assignment_engine.__all__) == EXPECTED_ALL
    for name in EXPECTED_ALL:
        assert getattr(assignment_engine, name) is not None


def test_import_does_not_pull_in_the_cli_dependencies():
    code = "import assignment_engine, sys; assert 'click' not in sys.modules and 'rich' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_errors_share_one_base_class():
    for name in ("RuleFileError", "DataError", "HierarchyError", "InfeasibleError", "OptionError"):
        assert issubclass(getattr(assignment_engine, name), assignment_engine.AssignmentEngineError)


def test_users_file_capacity_is_honoured_end_to_end(tmp_path, example_engine):
    users_path = tmp_path / "users.csv"
    users_path.write_text("id,max_accounts\nu001,\nu010,1\nu011,1\nu012,\nu013,\n", encoding="utf-8")
    users = read_users(users_path, list(example_engine.rules.measures))
    records = [{"id": f"W{i}", "country": "US", "state": "CA", "annual_revenue": 10} for i in range(3)]
    plan = example_engine.assign(table_of(example_engine, records), users, effort=1.0)
    owners = Counter(r["owner_id"] for r in plan.rows())
    assert owners == {"u010": 1, "u011": 1, "": 1}


def test_empty_book(example_engine, example_users):
    plan = example_engine.assign(example_engine.table([]), example_users, effort=1.0)
    assert list(plan.rows()) == []
    summary = plan.summary()
    assert summary["accounts"] == 0 and summary["moved"]["accounts"] == 0 and summary["unassigned"] == []
