"""optimize: balance bands, continuity, weights, tiers, soft bands, capacity, never worse than greedy."""

from __future__ import annotations

import itertools
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from assignment_engine import Engine, User, compile_rules
from assignment_engine.optimize import Band, Component, component, components
from assignment_engine.optimize.phases import _lp_bound, moves_floor, widened_bands
from assignment_engine.optimize.problem import accounts_moved_bound
from assignment_engine.optimize.relaxation import branched, integral, strict_relaxation
from assignment_engine.optimize.start import lp_rounded_start
from assignment_engine.tables.table import PairTable
from conftest import WEST_EAST, engine_of, rows_by_id, rules_text, table_of

ONE_TERRITORY = """
- id: all
  type: geo
  rules: [{when: {country: US}}]
  members: [{user: u1}, {user: u2}, {user: u3}, {user: u4}]
"""


def one_territory(balance: str, *, extra: str = "", users: int = 4, objectives: str = "") -> Engine:
    members = ", ".join(f"{{user: u{i}}}" for i in range(1, users + 1))
    territories = ONE_TERRITORY.replace("[{user: u1}, {user: u2}, {user: u3}, {user: u4}]", f"[{members}]")
    assignment = f"{{hierarchy: independent, balance: {balance}{objectives}}}"
    return Engine(compile_rules(rules_text(territories, assignment=assignment, extra=extra)))


def loads(plan, measure: str = "revenue") -> dict[str, float]:
    return {u["user_id"]: u["loads"][measure]["after"] for u in plan.summary()["users"]}


def balance_entry(plan, label: str) -> dict:
    return next(b for b in plan.summary()["balance"] if b["balance"] == label)


# 40 accounts with revenue 1..40: total 820, fair share 205 per user.
# Pairs (i, 41 - i) sum to 41, so five pairs per user is a perfect split: ±10 % is feasible.
BOOK = [{"id": f"A{i:02d}", "country": "US", "revenue": i} for i in range(1, 41)]


def balanced_owner(i: int) -> str:
    pair = min(i, 41 - i)  # 1..20
    return f"u{(pair - 1) // 5 + 1}"


def test_balance_within_tolerance_when_achievable():
    engine = one_territory("[{measure: revenue, tolerance: 0.10}, {measure: accounts, tolerance: 0.15}]")
    plan = engine.assign(table_of(engine, BOOK), [User(f"u{i}") for i in range(1, 5)], effort=2.0)
    for label in ("revenue", "accounts"):
        entry = balance_entry(plan, label)
        assert entry["users_outside_tolerance"] == [], entry
    revenue = loads(plan)
    assert sum(revenue.values()) == 820
    for user, load in revenue.items():
        assert 205 * 0.9 - 1e-9 <= load <= 205 * 1.1 + 1e-9, (user, load)
    counts = loads(plan, "accounts")
    for user, count in counts.items():
        assert 10 * 0.85 <= count <= 10 * 1.15, (user, count)
    assert all(r["status"] == "assigned" for r in plan.rows())


def test_continuity_nobody_moves_when_already_balanced():
    engine = one_territory("[{measure: revenue, tolerance: 0.10}, {measure: accounts, tolerance: 0.15}]")
    records = [{**r, "owner_id": balanced_owner(i)} for i, r in enumerate(BOOK, start=1)]
    plan = engine.assign(table_of(engine, records), [User(f"u{i}") for i in range(1, 5)], effort=2.0)
    summary = plan.summary()
    assert summary["moved"]["accounts"] == 0
    assert summary["moved"]["value"] == 0
    assert all(not r["moved"] and r["owner_id"] == r["previous_owner_id"] for r in plan.rows())
    assert loads(plan) == {f"u{k}": 205.0 for k in range(1, 5)}


def test_continuity_moves_only_what_balance_needs():
    """u1 holds all 40 accounts: balance needs 30 moves at least (each other user needs ~10 accounts)."""
    engine = one_territory("[{measure: accounts, tolerance: 0.0}]")
    records = [{**r, "owner_id": "u1"} for r in BOOK]
    plan = engine.assign(table_of(engine, records), [User(f"u{i}") for i in range(1, 5)], effort=2.0)
    assert loads(plan, "accounts") == {f"u{k}": 10.0 for k in range(1, 5)}
    assert plan.summary()["moved"]["accounts"] == 30
    # u1 keeps ten of its own accounts
    assert sum(1 for r in plan.rows() if r["owner_id"] == "u1" and not r["moved"]) == 10


def test_weighted_fair_share():
    engine = one_territory("[{measure: accounts, tolerance: 0.10}]", users=3)
    records = [{"id": f"A{i}", "country": "US", "revenue": 1} for i in range(50)]
    users = [User("u1"), User("u2"), User("u3", weight=0.5)]
    plan = engine.assign(table_of(engine, records), users, effort=2.0)
    counts = loads(plan, "accounts")
    # fair shares 20 / 20 / 10
    fair = {u["user_id"]: u["loads"]["accounts"]["fair_share"] for u in plan.summary()["users"]}
    assert fair == pytest.approx({"u1": 20.0, "u2": 20.0, "u3": 10.0})
    assert 9 <= counts["u3"] <= 11
    for full in ("u1", "u2"):
        assert 18 <= counts[full] <= 22
        assert 0.4 <= counts["u3"] / counts[full] <= 0.6
    assert balance_entry(plan, "accounts")["users_outside_tolerance"] == []


def test_tier_balance_spreads_key_accounts():
    tiers = "tiers: {by: revenue, levels: [{name: key, top: 0.2}, {name: core}]}\n"
    engine = one_territory("[{measure: accounts, tier: key, tolerance: 0.0}]", extra=tiers, users=2)
    # 20 accounts; the top 20 % by revenue (4 accounts: K0..K3) are key accounts, all held by u1
    records = [{"id": f"K{i}", "country": "US", "revenue": 1000 + i, "owner_id": "u1"} for i in range(4)]
    records += [{"id": f"C{i}", "country": "US", "revenue": i, "owner_id": "u2" if i % 2 else "u1"} for i in range(16)]
    plan = engine.assign(table_of(engine, records), [User("u1"), User("u2")], effort=2.0)
    rows = rows_by_id(plan)
    key_owners = [rows[f"K{i}"]["owner_id"] for i in range(4)]
    assert key_owners.count("u1") == 2 and key_owners.count("u2") == 2
    # continuity: nothing but key accounts needed to move
    assert all(not rows[f"C{i}"]["moved"] for i in range(16))
    assert plan.summary()["moved"]["accounts"] == 2
    assert balance_entry(plan, "accounts[key]")["users_outside_tolerance"] == []


def test_soft_band_locked_account_makes_band_impossible_but_run_succeeds():
    engine = one_territory("[{measure: revenue, tolerance: 0.10}]", users=2)
    records = [{"id": "LOCK", "country": "US", "revenue": 1000, "owner_id": "u1", "locked": True}]
    records += [{"id": f"F{i}", "country": "US", "revenue": 10, "owner_id": "u1"} for i in range(4)]
    plan = engine.assign(table_of(engine, records), [User("u1"), User("u2")], effort=2.0)
    entry = balance_entry(plan, "revenue")
    assert "u1" in entry["users_outside_tolerance"]
    assert entry["max_deviation"] > 0.10
    rows = rows_by_id(plan)
    assert rows["LOCK"]["owner_id"] == "u1"
    # the least violation gives every free account to u2
    assert all(rows[f"F{i}"]["owner_id"] == "u2" for i in range(4))


def test_objective_order_continuity_first_keeps_owners():
    engine = one_territory("[{measure: accounts, tolerance: 0.0}]", users=2, objectives=", objectives: [continuity, balance]")
    records = [{"id": f"A{i}", "country": "US", "revenue": 1, "owner_id": "u1"} for i in range(6)]
    plan = engine.assign(table_of(engine, records), [User("u1"), User("u2")], effort=1.0)
    assert plan.summary()["moved"]["accounts"] == 0
    assert balance_entry(plan, "accounts")["users_outside_tolerance"] == ["u1", "u2"]


def test_capacity_is_hard_and_overflow_is_unassigned():
    engine = one_territory("[{measure: accounts, tolerance: 0.10}]", users=2)
    records = [{"id": f"A{i}", "country": "US", "revenue": 1} for i in range(7)]
    users = [User("u1", capacity={"accounts": 2}), User("u2", capacity={"accounts": 3})]
    plan = engine.assign(table_of(engine, records), users, effort=1.0)
    counts = {"u1": 0, "u2": 0}
    unassigned = []
    for r in plan.rows():
        if r["owner_id"]:
            counts[r["owner_id"]] += 1
        else:
            unassigned.append(r)
    assert counts == {"u1": 2, "u2": 3}
    assert len(unassigned) == 2
    assert all(r["status"] == "unassigned" and "capacity" in r["reason"] for r in unassigned)


def test_capacity_on_a_measure():
    engine = one_territory("[{measure: accounts, tolerance: 0.5}]", users=2)
    records = [{"id": f"A{i}", "country": "US", "revenue": 100} for i in range(6)]
    users = [User("u1", capacity={"revenue": 150}), User("u2")]
    plan = engine.assign(table_of(engine, records), users, effort=1.0)
    revenue = loads(plan)
    assert revenue["u1"] <= 150
    assert revenue["u1"] + revenue["u2"] == 600


def test_inactive_user_gets_nothing():
    engine = one_territory("[{measure: accounts, tolerance: 0.1}]", users=3)
    records = [{"id": f"A{i}", "country": "US", "revenue": 1, "owner_id": "u3"} for i in range(9)]
    users = [User("u1"), User("u2"), User("u3", active=False)]
    plan = engine.assign(table_of(engine, records), users, effort=1.0)
    counts = loads(plan, "accounts")
    assert counts["u3"] == 0
    assert counts["u1"] + counts["u2"] == 9
    assert plan.summary()["moved"]["accounts"] == 9


def _lexicographic(component, field: str) -> list[float]:
    return [getattr(o, field) for o in component.objectives]


@pytest.mark.parametrize("owners", ["none", "u1", "mixed"])
def test_optimizer_is_never_worse_than_the_greedy_start(owners):
    engine = one_territory("[{measure: revenue, tolerance: 0.05}, {measure: accounts, tolerance: 0.05}]", users=3)
    records = []
    for i in range(24):
        owner = {"none": None, "u1": "u1", "mixed": f"u{i % 3 + 1}" if i % 4 else "u2"}[owners]
        records.append({"id": f"A{i}", "country": "US", "revenue": (i * 37) % 101 + 1, "owner_id": owner, "locked": i == 5})
    users = [User("u1"), User("u2"), User("u3", capacity={"accounts": 9})]
    plan = engine.assign(table_of(engine, records), users, effort=1.0)
    assert plan.solution.components
    solved = [c for c in plan.solution.components if c.objectives]
    assert solved
    for c in solved:
        names = [o.name for o in c.objectives]
        assert "continuity" in names
        # lexicographic (unassigned, balance, continuity, ...) value never above the greedy start
        assert _lexicographic(c, "value") <= _lexicographic(c, "greedy")
        balance = c.objective("balance")
        continuity = c.objective("continuity")
        if balance is not None:
            assert balance.value < balance.greedy or continuity.value <= continuity.greedy
        for o in c.objectives:
            assert o.bound <= o.value + 1e-9
            if o.status == "OPTIMAL":  # a proof, not a search stopped near the bound
                assert o.value <= o.bound + 1e-9
        assert c.moves_bound <= c.moves
    moved_assigned = sum(1 for r in plan.rows() if r["status"] == "assigned" and r["moved"])
    assert sum(c.moves for c in plan.solution.components) == moved_assigned


# ---------------------------------------------------------------- bands are judged on real values

TWO_USERS = "[{measure: revenue, tolerance: 0.10}]"


def test_within_tolerance_when_a_perfect_split_exists_explicit():
    """Eight accounts, each revenue twice: a perfect 50/50 split exists, so ±10 % must hold for real.

    Total 1,779,150, fair share 889,575, band [800,617.5, 978,532.5]. Continuity (all held by
    u1) pushes u1 to the top of the band; the plan must not end above it.
    """
    engine = one_territory(TWO_USERS, users=2)
    values = [1, 109928, 198942, 580704]
    records = [{"id": f"A{i}", "country": "US", "revenue": v, "owner_id": "u1"} for i, v in enumerate(values + values)]
    plan = engine.assign(table_of(engine, records), [User("u1"), User("u2")], effort=2.0)
    revenue = loads(plan)
    fair = sum(values)  # per user: half of twice the values
    for user, load in revenue.items():
        assert abs(load - fair) <= 0.10 * fair, (user, load, fair)
    assert balance_entry(plan, "revenue")["users_outside_tolerance"] == []


def test_nobody_moves_when_current_owners_are_within_tolerance_explicit():
    """u1 holds 2,815 and u2 3,440 of 6,255 (fair 3,127.5): both within ±10 %, so nothing should move."""
    engine = one_territory(TWO_USERS, users=2)
    mine = [458, 417, 514, 903, 14, 509]
    theirs = [952, 789, 981, 539, 40, 139]
    fair = (sum(mine) + sum(theirs)) / 2
    assert abs(sum(mine) - fair) <= 0.1 * fair and abs(sum(theirs) - fair) <= 0.1 * fair
    records = [{"id": f"M{i}", "country": "US", "revenue": v, "owner_id": "u1"} for i, v in enumerate(mine)]
    records += [{"id": f"T{i}", "country": "US", "revenue": v, "owner_id": "u2"} for i, v in enumerate(theirs)]
    plan = engine.assign(table_of(engine, records), [User("u1"), User("u2")], effort=2.0)
    assert plan.summary()["moved"]["accounts"] == 0
    assert balance_entry(plan, "revenue")["users_outside_tolerance"] == []


@settings(max_examples=30)
@given(
    values=st.lists(st.integers(1, 10**6), min_size=1, max_size=6),
    tolerance=st.sampled_from([0.02, 0.05, 0.10]),
    holder=st.sampled_from(["u1", "u2", None]),
)
def test_within_tolerance_whenever_a_perfect_split_exists(values, tolerance, holder):
    engine = one_territory(f"[{{measure: revenue, tolerance: {tolerance}}}]", users=2)
    records = [{"id": f"A{i}", "country": "US", "revenue": v, "owner_id": holder} for i, v in enumerate(values + values)]
    plan = engine.assign(table_of(engine, records), [User("u1"), User("u2")], effort=1.0)
    fair = sum(values)
    for user, load in loads(plan).items():
        assert abs(load - fair) <= tolerance * fair + 1e-9, (user, load, fair)


def test_nobody_moves_when_counts_sit_on_the_band_edge():
    """40 accounts over 4 users, ±10 %: the band is [9, 11] accounts, edges included.

    Current counts 11 / 11 / 9 / 9 are all within tolerance (the summary itself reports a
    deviation of exactly ±0.10 before), so continuity must keep every owner.
    """
    engine = one_territory("[{measure: accounts, tolerance: 0.10}]")
    owners = ["u1"] * 11 + ["u2"] * 11 + ["u3"] * 9 + ["u4"] * 9
    records = [{"id": f"A{i}", "country": "US", "revenue": 1, "owner_id": o} for i, o in enumerate(owners)]
    plan = engine.assign(table_of(engine, records), [User(f"u{i}") for i in range(1, 5)], effort=1.0)
    entry = balance_entry(plan, "accounts")
    assert entry["max_deviation_before"] == pytest.approx(0.10) and entry["min_deviation_before"] == pytest.approx(-0.10)
    assert plan.summary()["moved"]["accounts"] == 0


def test_nobody_moves_when_revenue_sits_on_the_band_edge():
    engine = one_territory(TWO_USERS, users=2)
    records = [
        {"id": "M0", "country": "US", "revenue": 550, "owner_id": "u1"},
        {"id": "M1", "country": "US", "revenue": 550, "owner_id": "u1"},
    ]
    records += [
        {"id": "T0", "country": "US", "revenue": 450, "owner_id": "u2"},
        {"id": "T1", "country": "US", "revenue": 450, "owner_id": "u2"},
    ]
    plan = engine.assign(table_of(engine, records), [User("u1"), User("u2")], effort=1.0)
    # 1,100 vs 900 around a fair share of 1,000: exactly ±10 %
    assert plan.summary()["moved"]["accounts"] == 0


@settings(max_examples=30)
@given(
    users=st.integers(2, 4),
    base=st.integers(2, 8),
    deltas=st.lists(st.integers(-3, 3), min_size=4, max_size=4),
    tolerance=st.sampled_from(["0.1", "0.2", "0.25", "0.5"]),
)
def test_nobody_moves_when_every_count_is_within_tolerance(users, base, deltas, tolerance):
    counts = [max(0, base + d) for d in deltas[:users]]
    total = sum(counts)
    tol = Fraction(tolerance)
    # |count - total/users| <= tol * total/users, in exact arithmetic
    assume(total > 0 and all(abs(users * c - total) <= tol * total for c in counts))
    engine = one_territory(f"[{{measure: accounts, tolerance: {tolerance}}}]", users=users)
    owners = [f"u{k + 1}" for k, c in enumerate(counts) for _ in range(c)]
    records = [{"id": f"A{i}", "country": "US", "revenue": 1, "owner_id": o} for i, o in enumerate(owners)]
    plan = engine.assign(table_of(engine, records), [User(f"u{k}") for k in range(1, users + 1)], effort=1.0)
    assert plan.summary()["moved"]["accounts"] == 0, counts


# ---------------------------------------------------------------- tiers


def _key_accounts(top: str, n: int) -> int:
    tiers = f"tiers: {{by: revenue, levels: [{{name: key, top: {top}}}, {{name: core}}]}}\n"
    engine = one_territory("[{measure: accounts, tier: key, tolerance: 1.0}]", extra=tiers, users=2)
    records = [{"id": f"A{i:03d}", "country": "US", "revenue": i} for i in range(n)]
    plan = engine.assign(table_of(engine, records), [User("u1"), User("u2")], effort=1.0)
    return round(sum(u["loads"]["accounts[key]"]["after"] for u in plan.summary()["users"]))


@pytest.mark.parametrize(
    "top, n, expected",
    [("0.05", 20, 1), ("0.05", 21, 2), ("0.30", 10, 3), ("0.5", 7, 4), ("0.07", 100, 7), ("0.14", 50, 7), ("0.28", 25, 7)],
)
def test_tier_cut_takes_the_top_share_of_accounts(top, n, expected):
    """key = the top ``top`` share of the ranked accounts, rounded up: 7 % of 100 accounts is 7."""
    assert _key_accounts(top, n) == expected


def test_example_tiers_rank_by_revenue_with_ties_broken_by_id(example_engine, example_users):
    records = [{"id": f"A{i:02d}", "country": "US", "state": "CA", "annual_revenue": 100 - i} for i in range(20)]
    records[5]["annual_revenue"] = 100  # ties with A00: A00 ranks first by id
    records.append({"id": "X", "country": "US", "state": "CA", "annual_revenue": 1e6, "excluded": True})
    plan = example_engine.assign(table_of(example_engine, records), example_users, effort=1.0)
    tiers = {aid: plan.tier_names[t] if t >= 0 else None for aid, t in zip(plan.accounts.ids, plan.tier.tolist(), strict=True)}
    assert tiers["X"] is None  # excluded accounts are not ranked
    assert [a for a, t in tiers.items() if t == "key"] == ["A00"]  # top 5 % of 20 = 1
    assert sorted(a for a, t in tiers.items() if t == "growth") == ["A01", "A02", "A03", "A04", "A05"]  # up to 30 % = 6
    assert sum(t == "core" for t in tiers.values()) == 14


# ---------------------------------------------------------------- neighbourhood search


@given(
    st.lists(st.tuples(st.integers(1, 60), st.sampled_from(["u1", "u2", "u3", "u4", "u5", None])), min_size=10, max_size=40),
    st.integers(4, 5),
)
def test_neighbourhood_search_keeps_every_band_and_never_moves_more(accounts, n_users):
    engine = one_territory("[{measure: revenue, tolerance: 0.25}, {measure: accounts, tolerance: 0.25}]", users=n_users)
    records = [{"id": f"A{i}", "country": "US", "revenue": revenue, "owner_id": owner} for i, (revenue, owner) in enumerate(accounts)]
    problem = engine.prepare(table_of(engine, records), [User(f"u{i}") for i in range(1, n_users + 1)]).problem
    ((users, units),) = components(problem)
    part = Component(problem, users, units)
    start = part.greedy()
    assume(part.scores(start)["unassigned"] == 0 and part.scores(start)["balance"] == 0)
    bands = {i: (d.lo, d.hi) for i, d in enumerate(part.dims) if isinstance(d, Band)}
    found, spent = part._neighbourhood_search(start, "continuity", [], bands, 1.0)
    assert spent <= 1.0 + 0.5  # stops once the budget is spent (one neighbourhood may overrun it)
    assert np.array_equal(found, part._neighbourhood_search(start, "continuity", [], bands, 1.0)[0])  # deterministic
    assert np.array_equal(part.pair_unit[found], np.arange(len(units)))  # one candidate pair per unit
    for i, load in enumerate(part.loads(found)):
        if i in bands:
            assert np.all(bands[i][0] <= load) and np.all(load <= bands[i][1])
    assert part.scores(found)["continuity"] <= part.scores(start)["continuity"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 60), st.sampled_from(["u1", "u2", "u3", None])), min_size=4, max_size=9),
    st.sampled_from([0.25, 0.5]),
)
def test_the_lp_rounded_start_keeps_the_bands_and_its_bound_is_below_the_best_plan(accounts, tolerance):
    """The LP within the bands bounds the accounts moved by every plan within them (brute force), and the
    plan rounded from it holds every band, moves no fewer than the bound, and is found again the same."""
    engine = one_territory(f"[{{measure: revenue, tolerance: {tolerance}}}, {{measure: accounts, tolerance: {tolerance}}}]", users=3)
    records = [{"id": f"A{i}", "country": "US", "revenue": revenue, "owner_id": owner} for i, (revenue, owner) in enumerate(accounts)]
    problem = engine.prepare(table_of(engine, records), [User(f"u{i}") for i in range(1, 4)]).problem
    ((users, units),) = components(problem)
    part = Component(problem, users, units)
    bands = {i: (d.lo, d.hi) for i, d in enumerate(part.dims) if isinstance(d, Band)}
    best = None
    for choice in itertools.product(*(range(part.ptr[k], part.ptr[k + 1]) for k in range(len(units)))):
        chosen = np.array(choice)
        if all(np.all(bands[i][0] <= load) and np.all(load <= bands[i][1]) for i, load in enumerate(part.loads(chosen)) if i in bands):
            value = int(part.continuity[chosen].sum())
            best = value if best is None else min(best, value)
    relaxation = strict_relaxation(part, part.continuity, bands)
    if best is None:
        return  # no plan within the bands (the LP may still have a fractional one)
    assert relaxation is not None
    assert integral(relaxation.bound) <= best
    rounded = lp_rounded_start(part, relaxation.values, part.continuity, bands)
    if rounded is not None:
        assert np.array_equal(part.pair_unit[rounded], np.arange(len(units)))
        for i, load in enumerate(part.loads(rounded)):
            if i in bands:
                assert np.all(bands[i][0] <= load) and np.all(load <= bands[i][1])
        assert part.scores(rounded)["continuity"] >= best
        assert np.array_equal(rounded, lp_rounded_start(part, relaxation.values, part.continuity, bands))


def _whale_part(accounts: list[tuple[int, str | None]], whale: int, tolerance: float):  # type: ignore[no-untyped-def]
    """A component of three users, the accounts given and one of revenue ``whale`` held by u1, and its bands."""
    engine = one_territory(f"[{{measure: revenue, tolerance: {tolerance}}}, {{measure: accounts, tolerance: {tolerance}}}]", users=3)
    records = [
        {"id": f"A{i}", "country": "US", "revenue": revenue, "owner_id": owner}
        for i, (revenue, owner) in enumerate([*accounts, (whale, "u1")])
    ]
    problem = engine.prepare(table_of(engine, records), [User(f"u{i}") for i in range(1, 4)]).problem
    ((users, units),) = components(problem)
    part = Component(problem, users, units)
    return part, {i: (d.lo, d.hi) for i, d in enumerate(part.dims) if isinstance(d, Band)}


def _best_within(part, bands) -> tuple[int, int] | None:  # type: ignore[no-untyped-def]
    """The least continuity and the fewest accounts moved of the plans within ``bands`` (brute force); None: no plan."""
    best = None
    for choice in itertools.product(*(range(part.ptr[k], part.ptr[k + 1]) for k in range(len(part.units)))):
        chosen = np.array(choice)
        if all(np.all(bands[i][0] <= load) and np.all(load <= bands[i][1]) for i, load in enumerate(part.loads(chosen)) if i in bands):
            value = (int(part.continuity[chosen].sum()), int(part.moves[chosen].sum()))
            best = value if best is None else (min(best[0], value[0]), min(best[1], value[1]))
    return best


# small books for brute force: (revenue, current owner) per account, one account that may be larger than every band
SMALL_BOOKS = st.lists(st.tuples(st.integers(1, 40), st.sampled_from(["u1", "u2", "u3", None])), min_size=3, max_size=8)
WHALES = st.integers(0, 400)
TOLERANCES = st.sampled_from([0.1, 0.3])


@settings(max_examples=120, deadline=None)
@given(SMALL_BOOKS, WHALES, TOLERANCES)
def test_the_lp_bounds_with_branching_on_a_large_unit_are_below_the_best_plan(accounts, whale, tolerance):
    """The LP's bound on continuity, its prices' bound on accounts moved alone, and the least bound of the
    LPs branched on a unit larger than the bands never exceed the best plan within the bands (brute force);
    branches that show no plan are right."""
    part, bands = _whale_part(accounts, whale, tolerance)
    best = _best_within(part, bands)
    relaxation = strict_relaxation(part, part.continuity, bands)
    if relaxation is None:
        return  # GLOP found no plan, or none placed every unit: no bound is claimed
    branches = branched(part, part.continuity, bands, relaxation)
    if best is None:
        return  # no integer plan: any bound holds
    assert _lp_bound(part, relaxation) <= best[0]
    assert accounts_moved_bound(moves_floor(part, relaxation)) <= best[1]
    if branches is not None:
        assert branches, "branches showed no plan, but there is one"
        assert min(_lp_bound(part, b) for b in branches) <= best[0]


def test_branching_on_an_account_larger_than_the_bands_lifts_the_bound_to_the_best_plan():
    """Three users, an account of 50 among eight of 2 to 40 (164 in all): the revenue band, ±10 % of 54.7, is
    11 wide. The LP splits the large account; branched on it, the bound on accounts moved rises from 2 to 3,
    the best plan's (brute force), and the component's plan meets it."""
    accounts = [(2, "u3"), (5, "u1"), (2, "u2"), (5, "u2"), (40, "u3"), (40, "u3"), (10, "u3"), (10, None)]
    part, bands = _whale_part(accounts, 50, 0.1)
    best = _best_within(part, bands)
    assert best is not None
    relaxation = strict_relaxation(part, part.continuity, bands)
    assert relaxation is not None
    branches = branched(part, part.continuity, bands, relaxation)
    assert branches  # the large account is split, and more than a band's width
    plain = accounts_moved_bound(_lp_bound(part, relaxation))
    lifted = accounts_moved_bound(min(_lp_bound(part, b) for b in branches))
    assert (plain, lifted) == (2, 3) and best[1] == 3
    _, result = part.solve()
    assert result.moves == result.moves_bound == 3


def test_branching_shows_bands_that_no_plan_holds():
    """An account of 80 among others of 146 (226 in all), bands ±10 % of 75.3: the LP holds the bands by splitting
    it, but no plan does (brute force), and every branch shows it has none."""
    accounts = [(10, "u1"), (5, "u1"), (40, None), (1, "u2"), (20, "u2"), (40, "u1"), (10, "u3"), (20, "u3")]
    part, bands = _whale_part(accounts, 80, 0.1)
    assert _best_within(part, bands) is None
    relaxation = strict_relaxation(part, part.continuity, bands)
    assert relaxation is not None
    assert branched(part, part.continuity, bands, relaxation) == []


@settings(max_examples=80, deadline=None)
@given(SMALL_BOOKS, WHALES, TOLERANCES)
def test_widened_bands_hold_the_plan_and_admit_no_plan_with_more_slack(accounts, whale, tolerance):
    """Bands redrawn around a plan contain it, and every plan that places all units within them has at
    most that plan's slack on each band (brute force over every placement)."""
    engine = one_territory(f"[{{measure: revenue, tolerance: {tolerance}}}, {{measure: accounts, tolerance: {tolerance}}}]", users=3)
    records = [
        {"id": f"A{i}", "country": "US", "revenue": revenue, "owner_id": owner}
        for i, (revenue, owner) in enumerate([*accounts, (whale, "u1")])
    ]
    problem = engine.prepare(table_of(engine, records), [User(f"u{i}") for i in range(1, 4)]).problem
    ((users, units),) = components(problem)
    part = Component(problem, users, units)
    best = part.greedy()
    assume(np.all(best >= 0))

    def slack(chosen: np.ndarray) -> dict[int, int]:
        return {
            i: int(np.maximum(load - d.hi, 0).sum() + np.maximum(d.lo - load, 0).sum())
            for i, (d, load) in enumerate(zip(part.dims, part.loads(chosen), strict=True))
            if isinstance(d, Band)
        }

    bands = widened_bands(part, best)
    within = [
        np.array(c)
        for c in itertools.product(*(range(part.ptr[k], part.ptr[k + 1]) for k in range(len(units))))
        if all(np.all(bands[i][0] <= load) and np.all(load <= bands[i][1]) for i, load in enumerate(part.loads(np.array(c))) if i in bands)
    ]
    assert any(np.array_equal(c, best) for c in within)
    ceiling = slack(best)
    for chosen in within:
        assert all(value <= ceiling[i] for i, value in slack(chosen).items())


GAP_RULES = """
version: 1
fields: {pool: string}
measures: {effort: {pair: workload}}
territory_types: [{name: pool, priority: 1}]
territories:
  - {id: all, type: pool, rules: [{when: {pool: gap}}], members: [{user: a0}, {user: a1}]}
assignment: {hierarchy: independent, balance: [], objectives: [affinity], pair_eligibility: listed, effort: 1}
"""


def _gap_plan(listed: list[tuple[int, int]], cost: float) -> list[str | None]:
    """Five jobs of effort 2, 3, 2, 3, 2 on two agents of capacity 6, only the ``listed`` (job, agent) pairs eligible."""
    engine = Engine(compile_rules(GAP_RULES, "gap.yaml"))
    table = table_of(engine, [{"id": f"j{j}", "pool": "gap"} for j in range(5)])
    effort = [2.0, 3.0, 2.0, 3.0, 2.0]
    pairs = PairTable(
        account=np.array([j for j, _ in listed]),
        user=np.array([a for _, a in listed]),
        cost=np.full(len(listed), cost),
        workload=np.array([effort[j] for j, _ in listed]),
    )
    plan = engine.assign(table, [User("a0", capacity={"effort": 6.0}), User("a1", capacity={"effort": 6.0})], pairs=pairs)
    return plan.owner_ids


def test_a_strict_model_with_nothing_to_optimise_is_still_solved():
    # zero costs leave affinity nothing to optimise; the greedy start leaves a job out, the strict model places all five
    owners = _gap_plan([(j, a) for j in range(5) for a in range(2)], cost=0.0)
    assert None not in owners
    effort = {"j0": 2, "j1": 3, "j2": 2, "j3": 3, "j4": 2}
    assert all(sum(effort[f"j{j}"] for j, o in enumerate(owners) if o == agent) <= 6 for agent in ("a0", "a1"))


@pytest.mark.parametrize("missing", [4, 0, 2])
def test_a_job_with_no_eligible_pair_stays_unassigned_wherever_it_is(missing):
    owners = _gap_plan([(j, a) for j in range(5) for a in range(2) if j != missing], cost=1.0)
    assert owners[missing] is None
    assert all(o is not None for j, o in enumerate(owners) if j != missing)


CAPACITY_RULES = """
version: 1
fields: {country: string, revenue: number}
measures: {revenue: {field: revenue}}
territory_types: [{name: geo, priority: 1}]
territories: [{id: pool, type: geo, rules: [{when: {country: US}}], members: [{user: a}, {user: b}]}]
assignment: {hierarchy: independent, balance: [], effort: 1}
"""


@pytest.mark.parametrize("value", [3.5, 0.1, 0.7, 7.0, 999_999_999_999_999.5, 1e15])
def test_an_account_that_exactly_fills_a_capacity_fits(value):
    engine = Engine(compile_rules(CAPACITY_RULES))
    table = engine.table([{"id": "x", "country": "US", "revenue": value}])
    plan = engine.assign(table, [User("a", capacity={"revenue": value}), User("b", capacity={"revenue": value / 2})])
    assert plan.owner_ids == ["a"]


def test_capacities_at_the_value_bound_do_not_overflow_the_model():
    engine = Engine(compile_rules(CAPACITY_RULES))
    table = engine.table([{"id": f"x{j}", "country": "US", "revenue": 1e15} for j in range(5_000)])
    plan = engine.assign(table, [User("a", capacity={"revenue": 1e15}), User("b", capacity={"revenue": 1e15})])
    assert sorted(o for o in plan.owner_ids if o is not None) == ["a", "b"]
    assert plan.summary()["status_counts"]["unassigned"] == 4_998


def test_a_worker_that_dies_fails_the_run_instead_of_hanging(tmp_path):
    # as the OOM killer would: one worker process is killed outright while it solves
    script = tmp_path / "kill_a_worker.py"
    script.write_text(
        "import os, signal\n"
        "from assignment_engine import AssignmentEngineError, demo_files, optimize, plan_files\n"
        "parent, solve = os.getpid(), optimize.Component.solve\n"
        "def dying(self):\n"
        "    if os.getpid() != parent:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return solve(self)\n"
        "optimize.Component.solve = dying\n"
        "files = demo_files()\n"
        "try:\n"
        "    plan_files(files['rules'], files['accounts'], files['users'], workers=2, effort=0.2)\n"
        "except AssignmentEngineError as error:\n"
        "    print(error)\n",
        encoding="utf-8",
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "workers: a worker process died (killed, or out of memory?); nothing was written. Try fewer workers"


def test_a_component_too_large_for_a_model_keeps_its_greedy_start(monkeypatch):
    """Past MAX_MODEL_PAIRS no CP-SAT model is built (it would take gigabytes); the plan is the greedy start, said so."""
    engine = engine_of(rules_text(WEST_EAST, assignment="{hierarchy: independent, balance: [{measure: revenue, tolerance: 0.1}]}"))
    book = [
        {"id": f"A{i}", "country": "US", "state": "CA" if i % 2 else "NY", "revenue": float(i + 1), "owner_id": "w1" if i % 2 else "e1"}
        for i in range(40)
    ]
    users = [User(u) for u in ("w1", "w2", "e1", "e2")]
    exact = engine.assign(engine.table(book), users)
    assert {c["status"] for c in exact.summary()["solver"]["per_component"]} <= {"OPTIMAL", "FEASIBLE", "TRIVIAL"}
    monkeypatch.setattr(component, "MAX_MODEL_PAIRS", 10)
    greedy = engine.assign(engine.table(book), users)
    per_component = greedy.summary()["solver"]["per_component"]
    assert {c["status"] for c in per_component} == {"GREEDY"} and {c["stopped_on"] for c in per_component} == {"size"}
    assert all(
        o in ("w1", "w2") if i % 2 else o in ("e1", "e2") for i, o in enumerate(greedy.owner_ids)
    )  # every account placed, in its territory
