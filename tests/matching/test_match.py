"""match: Salesforce ETM semantics (inherit, AND, deepest wins, branches, priority, ties, overlays)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assignment_engine import Engine, User, compile_rules
from assignment_engine.matching.match import NO_TERRITORY, TIED, match_accounts
from assignment_engine.rules.yamlfile import load_yaml
from conftest import match_of, oracle, rows_by_id, rules_text, table_of

TREE = rules_text(
    """
    - id: world
      type: geo
      rules: [{name: us, inherit: true, when: {country: US}}]
      members: [{user: u0}]
      children:
        - id: west
          rules: [{name: coast, inherit: true, when: {state: [CA, OR]}}]
          members: [{user: u1}]
          children:
            - id: bay
              rules: [{name: sf, when: {city: SF}}]
              members: [{user: u2}]
        - id: east
          rules: [{when: {state: NY}}]
          members: [{user: u3}]
    - id: big
      type: named
      rules: [{when: {revenue: {gte: 1000}}}]
      members: [{user: u4}]
    - id: verticals
      type: spec
      rules: [{when: {industry: health}}]
      members: [{user: u5}]
    - id: manual
      type: geo
      members: [{user: u6}]
    - id: partners
      type: geo
      rules: [{when: {channel: partner}}]
      members: [{user: u7}]
    """,
    fields="{country: string, state: string, city: string, industry: string, channel: string, revenue: number}",
    # geo is listed first but has the lower priority; spec is an overlay with the best number
    types="[{name: geo, priority: 2}, {name: named, priority: 3}, {name: spec, priority: 1, overlay: true}]",
)
# 'big' must beat geo: give named priority 1 and spec 3 in the main engine
TREE = TREE.replace(
    "{name: named, priority: 3}, {name: spec, priority: 1, overlay: true}",
    "{name: named, priority: 1}, {name: spec, priority: 3, overlay: true}",
)

USERS = [User(f"u{i}") for i in range(8)]


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(compile_rules(TREE, "tree.yaml"))


def test_inherited_rule_applies_to_descendants(engine):
    # the 'us' rule is inherited: a Californian account outside the US is in no world territory
    assert match_of(engine, {"id": "a", "country": "FR", "state": "CA", "city": "SF"}).territories == []
    assert match_of(engine, {"id": "a", "country": "US", "state": "CA", "city": "SF"}).territories == ["bay"]


def test_all_applicable_rules_must_match(engine):
    # bay = us (from world) AND coast (from west) AND sf: SF in New York is not in bay
    m = match_of(engine, {"id": "a", "country": "US", "state": "NY", "city": "SF"})
    assert m.territories == ["east"]
    assert m.owning == ["east"] and m.candidates == ["u3"]


def test_deepest_matching_territory_on_a_branch_wins(engine):
    assert match_of(engine, {"id": "a", "country": "US", "state": "OR", "city": "Portland"}).territories == ["west"]
    assert match_of(engine, {"id": "a", "country": "US", "state": "TX"}).territories == ["world"]
    m = match_of(engine, {"id": "a", "country": "US", "state": "CA", "city": "SF"})
    assert m.owning == ["bay"] and m.candidates == ["u2"]


def test_account_is_in_territories_of_different_branches(engine):
    m = match_of(engine, {"id": "a", "country": "US", "state": "CA", "city": "LA", "revenue": 5000})
    assert m.territories == ["west", "big"]
    m = match_of(engine, {"id": "a", "country": "US", "state": "NY", "channel": "partner"})
    assert m.territories == ["east", "partners"]


def test_highest_type_priority_owns(engine):
    m = match_of(engine, {"id": "a", "country": "US", "state": "CA", "revenue": 5000})
    assert m.territories == ["west", "big"]
    assert m.owning == ["big"]  # priority 1 beats 2 although geo is listed first
    assert m.candidates == ["u4"]


def test_overlay_never_owns(engine):
    m = match_of(engine, {"id": "a", "country": "FR", "industry": "health"})
    assert m.owning == [] and m.candidates == []
    m = match_of(engine, {"id": "a", "country": "US", "industry": "health"})
    assert m.owning == ["world"] and m.candidates == ["u0"]


def test_territory_without_rules_gets_nothing_by_rules(engine):
    for record in [{"id": "a"}, {"id": "b", "country": "US", "state": "CA"}, {"id": "c", "channel": "partner", "revenue": 1e6}]:
        assert "manual" not in match_of(engine, record).territories


def test_equal_priority_tie_is_reported_with_all_candidates(engine):
    m = match_of(engine, {"id": "a", "country": "US", "state": "CA", "channel": "partner"})
    assert m.territories == ["west", "partners"]
    assert m.owning == ["west", "partners"]
    assert m.candidates == ["u1", "u7"]


def test_trace_says_which_rules_held(engine):
    m = match_of(engine, {"id": "a", "country": "US", "state": "NY", "city": "SF"})
    text = "\n".join(m.trace)
    assert "east (geo, priority 2): MATCHED" in text
    assert "bay (geo, priority 2): no match" in text
    assert "coast, inherited from west: ✗" in text
    assert "manual: no rules" in text


# ---------------------------------------------------------------- through assign


def book(engine, records):
    return engine.assign(table_of(engine, records), USERS, effort=1.0)


def test_tie_is_resolved_into_one_of_the_tied_territories(engine):
    records = [{"id": f"t{i}", "country": "US", "state": "CA", "city": "LA", "channel": "partner"} for i in range(6)]
    plan = book(engine, records)
    owners = set()
    for row in plan.rows():
        assert row["status"] == "assigned"
        assert row["territory_id"] in ("west", "partners")
        expected_owner = {"west": "u1", "partners": "u7"}[row["territory_id"]]
        assert row["owner_id"] == expected_owner
        assert "tie" in row["reason"] and "west" in row["reason"] and "partners" in row["reason"]
        owners.add(row["owner_id"])
    # the optimizer balances between the two tied territories' owners
    assert owners == {"u1", "u7"}


def test_tie_with_an_ownerless_territory_goes_to_the_staffed_one():
    text = rules_text(
        """
        - id: a
          type: geo
          rules: [{when: {state: CA}}]
        - id: b
          type: geo
          rules: [{when: {country: US}}]
          members: [{user: u1}]
        """
    )
    engine = Engine(compile_rules(text))
    plan = engine.assign(table_of(engine, [{"id": "x", "country": "US", "state": "CA"}]), [User("u1")], effort=1.0)
    row = rows_by_id(plan)["x"]
    assert (row["status"], row["territory_id"], row["owner_id"]) == ("assigned", "b", "u1")


def test_priority_decides_the_owner_in_a_plan(engine):
    plan = book(engine, [{"id": "x", "country": "US", "state": "CA", "revenue": 5000, "owner_id": "u1"}])
    row = rows_by_id(plan)["x"]
    assert (row["territory_id"], row["owner_id"], row["moved"]) == ("big", "u4", True)


def test_overlay_territory_never_owns_in_a_plan(engine):
    plan = book(
        engine, [{"id": "h", "country": "FR", "industry": "health", "owner_id": "u5"}, {"id": "g", "country": "US", "industry": "health"}]
    )
    rows = rows_by_id(plan)
    assert rows["h"]["status"] == "unassigned" and rows["h"]["owner_id"] == ""
    assert rows["g"]["territory_id"] == "world" and rows["g"]["owner_id"] == "u0"
    assert all(r["territory_id"] != "verticals" for r in plan.rows())


def test_unmatched_accounts_are_in_the_output_as_unassigned(engine):
    plan = book(engine, [{"id": "nowhere", "country": "FR", "owner_id": "u3"}, {"id": "us", "country": "US"}])
    rows = list(plan.rows())
    assert [r["account_id"] for r in rows] == ["nowhere", "us"]
    assert rows[0]["status"] == "unassigned"
    assert rows[0]["reason"] == "matched no territory"
    assert rows[0]["owner_id"] == "" and rows[0]["territory_id"] == ""
    assert rows[0]["previous_owner_id"] == "u3"
    summary = plan.summary()
    assert summary["unassigned"] == [{"account_id": "nowhere", "reason": "matched no territory"}]


def test_manual_territory_receives_nothing_in_a_plan(engine):
    records = [
        {"id": f"m{i}", "country": c, "state": s} for i, (c, s) in enumerate([("US", "CA"), ("FR", None), ("US", "TX"), (None, None)])
    ]
    plan = book(engine, records)
    assert all(r["territory_id"] != "manual" for r in plan.rows())
    assert all(r["owner_id"] != "u6" for r in plan.rows())


def test_locked_accounts_keep_their_owner(engine):
    records = [
        {"id": "L1", "country": "US", "state": "CA", "revenue": 5000, "owner_id": "u3", "locked": True},
        {"id": "L2", "country": "FR", "owner_id": "u1", "locked": True},
        {"id": "L3", "country": "US", "state": "CA", "locked": True},
    ]
    rows = rows_by_id(book(engine, records))
    assert [(rows[i]["owner_id"], rows[i]["status"], rows[i]["moved"]) for i in ("L1", "L2", "L3")] == [
        ("u3", "locked", False),
        ("u1", "locked", False),
        ("", "locked", False),
    ]


def test_excluded_accounts_keep_their_owner_and_are_not_placed(engine):
    records = [
        {"id": "X1", "country": "US", "state": "CA", "city": "SF", "owner_id": "u7", "excluded": True},
        {"id": "X2", "country": "US", "state": "NY", "excluded": True},
    ]
    rows = rows_by_id(book(engine, records))
    assert (rows["X1"]["owner_id"], rows["X1"]["territory_id"], rows["X1"]["status"]) == ("u7", "", "excluded")
    assert (rows["X2"]["owner_id"], rows["X2"]["territory_id"], rows["X2"]["status"]) == ("", "", "excluded")
    assert not rows["X1"]["moved"] and not rows["X2"]["moved"]


def test_inactive_owner_is_not_a_candidate(engine):
    users = [User(u.id, active=(u.id != "u3")) for u in USERS]
    plan = engine.assign(table_of(engine, [{"id": "x", "country": "US", "state": "NY", "owner_id": "u3"}]), users, effort=1.0)
    row = rows_by_id(plan)["x"]
    assert row["status"] == "unassigned" and row["owner_id"] == ""
    assert "east" in row["reason"] and "no active owner" in row["reason"]


# ---------------------------------------------------------------- property: vectorised = one at a time

STATES = st.sampled_from(["CA", "OR", "NY", "TX", None])
RECORD = st.fixed_dictionaries(
    {
        "country": st.sampled_from(["US", "FR", None]),
        "state": STATES,
        "city": st.sampled_from(["SF", "LA", None]),
        "industry": st.sampled_from(["health", "retail", None]),
        "channel": st.sampled_from(["partner", "direct", None]),
        "revenue": st.sampled_from([None, 10, 999, 1000, 5000]),
    }
)


@given(st.lists(RECORD, min_size=1, max_size=20))
def test_table_matching_equals_single_account_matching(records):
    engine = Engine(compile_rules(TREE))
    records = [{"id": f"a{i}", **r} for i, r in enumerate(records)]
    matches = match_accounts(engine.rules, table_of(engine, records))
    ids = matches.territory_ids
    for i, r in enumerate(records):
        one = match_of(engine, r)
        assert [ids[t] for t in matches.territories_of(i)] == one.territories
        assert [ids[t] for t in matches.owning_candidates(i)] == one.owning
        owning = int(matches.owning[i])
        assert (owning == NO_TERRITORY) == (one.owning == [])
        assert (owning == TIED) == (len(one.owning) > 1)
        # a branch holds an account at most once: no territory together with one of its ancestors
        inside = set(one.territories)
        for t in inside:
            parent = engine.rules.territories[t].parent
            while parent is not None:
                assert parent not in inside
                parent = engine.rules.territories[parent].parent
        assert "manual" not in inside


def test_overlay_type_with_the_best_priority_still_never_owns():
    text = rules_text(
        """
        - id: specialists
          type: spec
          rules: [{when: {country: US}}]
          members: [{user: s1}]
        - id: geo-us
          type: geo
          rules: [{when: {country: US}}]
          members: [{user: g1}]
        """,
        types="[{name: spec, priority: 1, overlay: true}, {name: geo, priority: 2}]",
    )
    engine = Engine(compile_rules(text))
    assert match_of(engine, {"id": "a", "country": "US"}).owning == ["geo-us"]
    plan = engine.assign(table_of(engine, [{"id": "a", "country": "US", "owner_id": "s1"}]), [User("s1"), User("g1")], effort=1.0)
    row = rows_by_id(plan)["a"]
    assert (row["territory_id"], row["owner_id"]) == ("geo-us", "g1")


def test_non_owner_members_never_own():
    text = rules_text(
        """
        - id: t
          type: geo
          rules: [{when: {country: US}}]
          members: [{user: boss, role: manager}, {user: rep}]
        """
    )
    engine = Engine(compile_rules(text))
    assert engine.rules.territories["t"].owners == ["rep"]
    records = [{"id": f"a{i}", "country": "US", "owner_id": "boss"} for i in range(4)]
    plan = engine.assign(table_of(engine, records), [User("boss"), User("rep")], effort=1.0)
    assert {r["owner_id"] for r in plan.rows()} == {"rep"}


# ---------------------------------------------------------------- property: matching = an independent oracle


def _oracle_territories(data: dict, record: dict) -> tuple[list[str], list[str]]:
    """Territories (deepest matching per branch, owning types only) and owning territories, by hand."""
    kinds = data["fields"]
    types = {t["name"]: t for t in data["territory_types"]}
    info: dict[str, dict] = {}

    def walk(nodes, inherited, parent_type, ancestors):
        for t in nodes:
            type_name = t.get("type") or parent_type
            own = [r["when"] for r in t.get("rules", [])]
            applicable = inherited + own
            overlay = bool(types[type_name].get("overlay", False))
            matched = bool(applicable) and not overlay and all(oracle(w, record, kinds) for w in applicable)
            info[t["id"]] = {"matched": matched, "ancestors": ancestors, "priority": types[type_name]["priority"]}
            passed = inherited + [r["when"] for r in t.get("rules", []) if r.get("inherit")]
            walk(t.get("children", []), passed, type_name, [*ancestors, t["id"]])

    walk(data["territories"], [], None, [])
    shadowed = {a for tid, i in info.items() if i["matched"] for a in i["ancestors"]}
    kept = [tid for tid, i in info.items() if i["matched"] and tid not in shadowed]
    if not kept:
        return [], []
    best = min(info[t]["priority"] for t in kept)
    return kept, [t for t in kept if info[t]["priority"] == best]


ORACLE_TREE = rules_text(
    """
    - id: world
      type: geo
      rules: [{name: us, inherit: true, when: {country: [US, CA]}}]
      members: [{user: u0}]
      children:
        - id: west
          rules: [{name: coast, inherit: true, when: {state: [CA, OR]}}]
          members: [{user: u1}]
          children:
            - id: bay
              rules: [{when: {city: SF}}]
              members: [{user: u2}]
            - id: big-west
              type: named
              rules: [{when: {revenue: {gte: 1000}}}]
              members: [{user: u3}]
        - id: nolocal
          members: [{user: u4}]
        - id: east
          rules: [{when: {any: [{state: NY}, {city: {starts_with: bo}}]}}]
          members: [{user: u5}]
          children:
            - id: east-spec
              type: spec
              rules: [{when: {industry: health}}]
              members: [{user: u6}]
    - id: big
      type: named
      rules: [{when: {revenue: {gte: 5000}}}]
      members: [{user: u7}]
    - id: partners
      type: geo
      rules: [{when: {channel: partner, not: {state: TX}}}]
      members: [{user: u8}]
    - id: manual
      type: geo
    """,
    fields="{country: string, state: string, city: string, industry: string, channel: string, revenue: number}",
    types="[{name: geo, priority: 2}, {name: named, priority: 1}, {name: spec, priority: 3, overlay: true}]",
)
ORACLE_DATA = load_yaml(ORACLE_TREE, "oracle.yaml").data
ORACLE_ENGINE = Engine(compile_rules(ORACLE_TREE))
ORACLE_RECORD = st.fixed_dictionaries(
    {
        "country": st.sampled_from(["US", "ca", "FR", None]),
        "state": st.sampled_from(["CA", "OR", "NY", "TX", None]),
        "city": st.sampled_from(["SF", "Boston", "LA", None]),
        "industry": st.sampled_from(["health", "retail", None]),
        "channel": st.sampled_from(["partner", "PARTNER", "direct", None]),
        "revenue": st.sampled_from([None, 10, 1000, 5000]),
    }
)


@settings(max_examples=150)
@given(st.lists(ORACLE_RECORD, min_size=1, max_size=15))
def test_matching_equals_an_independent_oracle(records):
    engine = ORACLE_ENGINE
    records = [{"id": f"a{i}", **r} for i, r in enumerate(records)]
    matches = match_accounts(engine.rules, table_of(engine, records))
    ids = matches.territory_ids
    for i, r in enumerate(records):
        territories, owning = _oracle_territories(ORACLE_DATA, r)
        assert [ids[t] for t in matches.territories_of(i)] == territories, r
        assert [ids[t] for t in matches.owning_candidates(i)] == owning, r
