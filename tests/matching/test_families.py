"""families: follow_ultimate_parent vs independent, and bad parent links."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from assignment_engine import AccountTable, DataError, Engine, HierarchyError, User, compile_rules, read_accounts
from assignment_engine.matching.families import build_families
from conftest import WEST_EAST, rows_by_id, rules_text

TERRITORIES = (
    WEST_EAST
    + """
- id: key
  type: named
  rules: [{when: {revenue: {gte: 1000}}}]
  members: [{user: k1}]
"""
)
USERS = [User(u) for u in ("w1", "w2", "e1", "e2", "k1")]


def book(e: Engine, records: list[dict[str, object]]) -> AccountTable:
    """The accounts, built as a file's rows are: a field a record leaves out is missing (the tests here are about links)."""
    return AccountTable.from_records(records, e.rules.field_types)


def engine(hierarchy: str = "follow_ultimate_parent") -> Engine:
    return Engine(
        compile_rules(rules_text(TERRITORIES, fields="{state: string, revenue: number}", assignment=f"{{hierarchy: {hierarchy}}}"))
    )


FAMILY = [
    {"id": "P", "state": "CA", "revenue": 10, "owner_id": "w2"},
    {"id": "C1", "state": "NY", "revenue": 10, "parent_id": "P", "owner_id": "e1"},
    {"id": "C2", "state": "NY", "revenue": 5000, "parent_id": "P"},  # matches 'key' (priority 1) on its own
    {"id": "G1", "state": "TX", "revenue": 1, "parent_id": "C1"},  # matches nothing on its own
    {"id": "S", "state": "NY", "revenue": 10, "owner_id": "e2"},
]


def test_whole_family_follows_the_ultimate_parent():
    e = engine()
    plan = e.assign(book(e, FAMILY), USERS, effort=1.0)
    rows = rows_by_id(plan)
    root = rows["P"]
    assert root["territory_id"] == "west" and root["owner_id"] in ("w1", "w2")
    for child in ("C1", "C2", "G1"):
        assert rows[child]["owner_id"] == root["owner_id"], child
        assert rows[child]["territory_id"] == "west", child
        assert rows[child]["status"] == "assigned"
        assert "follows ultimate parent P" in rows[child]["reason"]
    assert rows["S"]["territory_id"] == "east"


def test_independent_places_each_account_on_its_own():
    e = engine("independent")
    plan = e.assign(book(e, FAMILY), USERS, effort=1.0)
    rows = rows_by_id(plan)
    assert rows["P"]["territory_id"] == "west"
    assert rows["C1"]["territory_id"] == "east"
    assert (rows["C2"]["territory_id"], rows["C2"]["owner_id"]) == ("key", "k1")
    assert rows["G1"]["status"] == "unassigned" and rows["G1"]["reason"] == "matched no territory"


def test_family_of_an_unmatched_root_is_unassigned_with_it():
    e = engine()
    records = [{"id": "R", "state": "TX"}, {"id": "K", "state": "CA", "parent_id": "R", "owner_id": "w1"}]
    rows = rows_by_id(e.assign(book(e, records), USERS, effort=1.0))
    assert rows["R"]["status"] == "unassigned"
    assert rows["K"]["status"] == "unassigned" and rows["K"]["owner_id"] == ""
    assert "R" in rows["K"]["reason"] and "matched no territory" in rows["K"]["reason"]


def test_children_of_a_locked_parent_follow_its_owner():
    e = engine()
    records = [
        {"id": "P", "state": "CA", "owner_id": "e2", "locked": True},
        {"id": "C", "state": "NY", "parent_id": "P", "owner_id": "e1"},
        {"id": "L", "state": "NY", "parent_id": "P", "owner_id": "w1", "locked": True},
    ]
    rows = rows_by_id(e.assign(book(e, records), USERS, effort=1.0))
    assert rows["P"]["owner_id"] == "e2" and rows["P"]["status"] == "locked"
    assert rows["C"]["owner_id"] == "e2" and rows["C"]["status"] == "pinned"
    assert rows["L"]["owner_id"] == "w1" and rows["L"]["status"] == "locked"  # a locked child keeps its own


def test_children_of_an_excluded_parent_follow_its_owner():
    e = engine()
    records = [{"id": "P", "state": "CA", "owner_id": "k1", "excluded": True}, {"id": "C", "state": "NY", "parent_id": "P"}]
    rows = rows_by_id(e.assign(book(e, records), USERS, effort=1.0))
    assert (rows["P"]["owner_id"], rows["P"]["status"]) == ("k1", "excluded")
    assert rows["C"]["owner_id"] == "k1"


@pytest.mark.parametrize(
    "records, named",
    [
        (
            [{"id": "A", "state": "CA", "parent_id": "B"}, {"id": "B", "state": "CA", "parent_id": "A"}, {"id": "Z", "state": "CA"}],
            ["A", "B"],
        ),
        (
            [
                {"id": "X", "state": "CA"},
                {"id": "A", "state": "CA", "parent_id": "B"},
                {"id": "B", "state": "CA", "parent_id": "C"},
                {"id": "C", "state": "CA", "parent_id": "A"},
                {"id": "D", "state": "CA", "parent_id": "C"},
            ],
            ["A", "B", "C"],
        ),
        ([{"id": "SELF", "state": "CA", "parent_id": "SELF"}], ["SELF"]),
        ([{"id": "ORPHAN", "state": "CA", "parent_id": "GHOST"}], ["ORPHAN", "GHOST"]),
    ],
    ids=["cycle", "cycle-with-branch", "self-parent", "missing-parent"],
)
def test_bad_links_raise_hierarchy_error_naming_the_accounts(records, named):
    e = engine()
    with pytest.raises(HierarchyError) as info:
        e.assign(book(e, records), USERS, effort=1.0)
    text = str(info.value)
    for account in named:
        assert account in text
    assert len(info.value.findings) == 1
    assert "Z" not in text and "'X'" not in text


def test_every_bad_link_is_reported_at_once():
    e = engine()
    records = [
        {"id": "A", "state": "CA", "parent_id": "B"},
        {"id": "B", "state": "CA", "parent_id": "A"},
        {"id": "S", "state": "CA", "parent_id": "S"},
        {"id": "O", "state": "CA", "parent_id": "NOPE"},
    ]
    with pytest.raises(HierarchyError) as info:
        e.assign(book(e, records), USERS, effort=1.0)
    assert len(info.value.findings) == 3
    assert all(f.location.column == "parent_id" for f in info.value.findings)


def test_hierarchy_error_points_at_the_csv_row(tmp_path):
    e = engine()
    path = tmp_path / "accounts.csv"
    path.write_text("id,parent_id,country,state,revenue\nA,,US,CA,1\nB,B,US,CA,1\n", encoding="utf-8")
    table = read_accounts(path, e.rules.field_types)
    with pytest.raises(HierarchyError) as info:
        e.assign(table, USERS, effort=1.0)
    (finding,) = info.value.findings
    assert (finding.location.file, finding.location.line, finding.location.column) == (str(path), 3, "parent_id")
    assert "'B' is its own parent" in finding.message


def test_on_hierarchy_error_independent_reports_and_continues():
    e = engine()
    records = [
        {"id": "A", "state": "CA", "parent_id": "B", "owner_id": "w1"},
        {"id": "B", "state": "NY", "parent_id": "A"},
        {"id": "O", "state": "NY", "parent_id": "GHOST"},
        {"id": "K", "state": "CA", "parent_id": "O"},
    ]
    plan = e.assign(book(e, records), USERS, effort=1.0, on_hierarchy_error="independent")
    problems = plan.summary()["hierarchy_problems"]
    assert len(problems) == 2
    assert any("cycle" in p and "A" in p and "B" in p for p in problems)
    assert any("GHOST" in p and "O" in p for p in problems)
    rows = rows_by_id(plan)
    assert [r["account_id"] for r in plan.rows()] == ["A", "B", "O", "K"]
    # accounts of the cycle are placed on their own
    assert rows["A"]["territory_id"] == "west" and rows["B"]["territory_id"] == "east"
    # the account with a missing parent is its own root; its child still follows it
    assert rows["O"]["territory_id"] == "east"
    assert rows["K"]["owner_id"] == rows["O"]["owner_id"] and rows["K"]["territory_id"] == "east"


def test_missing_parent_is_not_an_error_for_the_table_itself():
    # the link is checked by the hierarchy stage, not when reading data
    e = engine()
    table = e.table([{"id": "A", "parent_id": "nope", "state": None, "revenue": None}])
    assert table.parent_ids == ["nope"]
    with pytest.raises(DataError, match="empty account id"):
        e.table([{"id": "", "state": None, "revenue": None}])


@settings(max_examples=300)  # cheap: many shapes of links
@given(st.lists(st.one_of(st.none(), st.integers(-1, 9)), min_size=1, max_size=10))
@example([None, 0, 1, 2, 3, 4, 5, 6, 7, 8])  # one chain, deeper than a few doublings
@example([1, 2, 0, 2, None, 4])  # a cycle of three with a tail, and a family beside it
def test_roots_are_found_by_climbing_each_accounts_links(links):
    """Each account's root is the account without a parent its links climb to; links that climb into a cycle
    leave every account of that family on its own, with one finding per cycle."""
    n = len(links)
    ids = [f"A{i}" for i in range(n)]
    parents = [None if p is None else ids[p] if 0 <= p < n else "nobody" for p in links]
    table = AccountTable.from_records([{"id": a, "parent_id": p} for a, p in zip(ids, parents, strict=True)], {})
    up = [p if p is not None and 0 <= p < n and p != i else -1 for i, p in enumerate(links)]

    def climbed(i: int) -> int | None:
        seen = []
        while up[i] >= 0:
            if i in seen:
                return None  # a cycle
            seen.append(i)
            i = up[i]
        return i

    expected = [i if (r := climbed(i)) is None else r for i in range(n)]
    cycles = {frozenset(_cycle_from(up, i)) for i in range(n) if climbed(i) is None}
    families = build_families(table, on_error="independent")
    assert families.root.tolist() == expected
    assert sum("form a cycle" in f.message for f in families.problems) == len(cycles)
    assert sum("not in the accounts file" in f.message or "its own parent" in f.message for f in families.problems) == sum(
        p is not None and (not 0 <= p < n or p == i) for i, p in enumerate(links)
    )


def _cycle_from(up: list[int], i: int) -> set[int]:
    """The cycle account i's links climb into."""
    seen: list[int] = []
    while i not in seen:
        seen.append(i)
        i = up[i]
    return set(seen[seen.index(i) :])
