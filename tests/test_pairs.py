"""Per-pair data (--pairs): affinity cost, user-dependent workload, listed eligibility, located errors."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import example, given
from hypothesis import strategies as st

from assignment_engine import DataError, User, plan_files
from assignment_engine.cli import main
from assignment_engine.optimize import Component, ComponentResult, Objective, Solution, components
from assignment_engine.optimize.relaxation import LoadRows, lagrangian_bound, relax
from assignment_engine.plan.result import solver_summary
from assignment_engine.tables.table import PairTable, pairs_from_columns
from conftest import engine_of, rules_text, write_csv

POOL = """
- id: pool
  type: geo
  rules: [{when: {country: US}}]
  members: [{user: a0}, {user: a1}, {user: a2}]
"""


def gap_engine(eligibility: str = "listed", balance: str = "[]", objectives: str = "[affinity]"):
    return engine_of(
        rules_text(
            POOL,
            fields="{country: string}",
            measures="{effort: {pair: workload}, accounts: {constant: 1}}",
            assignment=(
                f"{{hierarchy: independent, balance: {balance}, objectives: {objectives}, pair_eligibility: {eligibility}, effort: 5}}"
            ),
        )
    )


def full_pairs(cost: np.ndarray, load: np.ndarray) -> PairTable:
    m, n = cost.shape
    return PairTable(
        account=np.tile(np.arange(n), m),
        user=np.repeat(np.arange(m), n),
        cost=cost.reshape(-1).astype(np.float64),
        workload=load.reshape(-1).astype(np.float64),
    )


def brute_force(cost: np.ndarray, load: np.ndarray, capacity: np.ndarray) -> float | None:
    """The least total cost over every capacity-feasible assignment (an independent oracle)."""
    m, n = cost.shape
    best = None
    for choice in itertools.product(range(m), repeat=n):
        used = np.zeros(m)
        for j, i in enumerate(choice):
            used[i] += load[i, j]
        if np.all(used <= capacity):
            total = sum(cost[i, j] for j, i in enumerate(choice))
            best = total if best is None else min(best, total)
    return best


def agents_by_jobs(n: int, low: int, high: int) -> st.SearchStrategy:
    """Three agents × n jobs of integers in [low, high]."""
    return st.lists(st.lists(st.integers(low, high), min_size=n, max_size=n), min_size=3, max_size=3)


GAP_INSTANCES = st.integers(2, 6).flatmap(  # (cost, load, capacity) of three agents
    lambda n: st.tuples(agents_by_jobs(n, 1, 20), agents_by_jobs(n, 1, 9), st.lists(st.integers(3, 20), min_size=3, max_size=3))
)


@given(GAP_INSTANCES)
def test_small_generalized_assignment_problems_are_solved_to_optimality(instance):
    cost, load, capacity = (np.array(x) for x in instance)
    n = cost.shape[1]
    engine = gap_engine()
    users = [User(f"a{i}", capacity={"effort": float(capacity[i])}) for i in range(3)]
    plan = engine.assign(engine.table([{"id": f"j{j}", "country": "US"} for j in range(n)]), users, pairs=full_pairs(cost, load))
    owner = [int(o[1:]) if o else -1 for o in plan.owner_ids]
    optimum = brute_force(cost, load, capacity)
    if optimum is None:
        assert -1 in owner or plan.conflicts()  # nothing fits: jobs left unassigned and said so, capacity still held
    else:
        assert -1 not in owner
        assert sum(cost[i, j] for j, i in enumerate(owner)) == optimum
        assert plan.solution.components[0].objective("affinity").bound <= optimum  # a proven bound is never above the optimum
    for i in range(3):
        assert sum(load[i, j] for j in range(n) if owner[j] == i) <= capacity[i]


def test_listed_eligibility_leaves_unlisted_pairs_out_and_any_keeps_them():
    records = [{"id": "A", "country": "US"}, {"id": "B", "country": "US"}]
    users = [User("a0"), User("a1"), User("a2")]
    pairs = PairTable(account=np.array([0, 1]), user=np.array([2, 2]), cost=np.array([5.0, 5.0]), workload=np.array([np.nan, np.nan]))
    listed = gap_engine("listed")
    plan = listed.assign(listed.table(records), users, pairs=pairs)
    assert plan.owner_ids == ["a2", "a2"]
    free = gap_engine("any")
    plan = free.assign(free.table(records), users, pairs=pairs)
    assert "a2" not in plan.owner_ids  # listed pairs cost 5, unlisted ones 0


def test_workload_from_pairs_is_balanced_per_user():
    # a0 is twice as slow on every account: balanced effort gives a0 fewer accounts
    engine = gap_engine("any", balance="[{measure: effort, tolerance: 0.2}]", objectives="[balance, continuity]")
    records = [{"id": f"j{j}", "country": "US"} for j in range(9)]
    users = [User("a0"), User("a1"), User("a2")]
    cost = np.zeros((3, 9))
    load = np.array([[2.0] * 9, [1.0] * 9, [1.0] * 9])
    plan = engine.assign(engine.table(records), users, pairs=full_pairs(cost, load))
    counts = [plan.owner_ids.count(u) for u in ("a0", "a1", "a2")]
    effort = [counts[0] * 2, counts[1], counts[2]]
    assert counts[0] < counts[1] and counts[0] < counts[2]
    assert max(effort) - min(effort) <= 2


def test_bad_pair_rows_are_located():
    engine = gap_engine()
    table = engine.table([{"id": "A", "country": "US"}])
    users = [User("a0")]
    columns = {"account_id": ["A", "Z", "A", "A"], "user_id": ["a0", "a0", "nobody", "a0"], "cost": ["1", "1", "1", "x"]}
    with pytest.raises(DataError) as error:
        pairs_from_columns(columns, table, users, source="pairs.csv")
    messages = [str(f) for f in error.value.findings]
    assert "pairs.csv:3:account_id: unknown account 'Z'" in messages
    assert "pairs.csv:4:user_id: unknown user 'nobody'" in messages
    assert any(m.startswith("pairs.csv:5:") and "duplicate pair (first at row 2)" in m for m in messages)
    assert any(m.startswith("pairs.csv:5:cost:") for m in messages)


def test_pairs_file_through_the_cli(tmp_path):
    (tmp_path / "rules.yaml").write_text(
        rules_text(
            POOL,
            fields="{country: string}",
            measures="{effort: {pair: workload}}",
            assignment="{hierarchy: independent, balance: [], objectives: [affinity], pair_eligibility: listed}",
        ),
        encoding="utf-8",
    )
    write_csv(tmp_path / "accounts.csv", [{"id": "A", "country": "US"}, {"id": "B", "country": "US"}], ["id", "country"])
    (tmp_path / "users.csv").write_text("id,max_effort\na0,3\na1,3\na2,3\n", encoding="utf-8")
    pairs = [
        {"account_id": "A", "user_id": "a0", "cost": 1, "workload": 2},
        {"account_id": "B", "user_id": "a0", "cost": 1, "workload": 2},  # a0 is cheapest for both but holds only one
        {"account_id": "A", "user_id": "a1", "cost": 4, "workload": 1},
        {"account_id": "B", "user_id": "a2", "cost": 3, "workload": 1},
    ]
    write_csv(tmp_path / "pairs.csv", pairs, ["account_id", "user_id", "cost", "workload"])
    args = [
        "assign",
        "--rules",
        str(tmp_path / "rules.yaml"),
        "--accounts",
        str(tmp_path / "accounts.csv"),
        "--users",
        str(tmp_path / "users.csv"),
    ]
    result = CliRunner().invoke(main, [*args, "--pairs", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    owners = {
        r["account_id"]: r["owner_id"]
        for r in map(json.loads, (tmp_path / "out" / "accounts.jsonl").read_text(encoding="utf-8").splitlines())
    }
    assert owners == {"A": "a0", "B": "a2"}  # cost 1 + 3 beats 4 + 1


def test_room_first_start_places_what_cheapest_first_leaves_out():
    """Two agents of capacity 10: cheapest-first puts both 4s on a0 and finds no room for the second 6."""
    engine = gap_engine()
    load = np.array([[4, 4, 6, 6], [4, 4, 6, 6], [99, 99, 99, 99]], dtype=float)
    cost = np.array([[1, 1, 1, 1], [9, 9, 2, 2], [50, 50, 50, 50]], dtype=float)
    users = [User("a0", capacity={"effort": 10}), User("a1", capacity={"effort": 10}), User("a2", capacity={"effort": 10})]
    records = [{"id": f"j{j}", "country": "US"} for j in range(4)]
    problem = engine.prepare(engine.table(records), users, pairs=full_pairs(cost, load)).problem
    ((members, units),) = components(problem)
    part = Component(problem, members, units)
    assert part.scores(part.greedy())["unassigned"] == 1  # the second job of load 6 is left out
    placed = part.greedy(room_first=True)
    assert part.scores(placed)["unassigned"] == 0
    for load_of_user in part.loads(placed):
        assert np.all(load_of_user <= 10)


@given(
    GAP_INSTANCES,
    st.lists(st.floats(0, 10), min_size=6, max_size=6),  # prices of two capacities × three agents
    st.lists(st.integers(0, 3), min_size=6, max_size=6),  # fixed loads (locked accounts)
    st.integers(0, 2),  # an agent with no cap on the first capacity
)
@example(
    ([[0, 0], [100, 100], [100, 100]], [[5, 5], [5, 5], [5, 5]], [10, 10, 10]), [10, 0, 0, 0, 0, 0], [0] * 6, 0
)  # the free agent takes all
def test_any_non_negative_capacity_prices_give_a_lower_bound(instance, prices, fixed, uncapped):
    """The bound reported from the LP's duals must hold whatever prices the LP solver returns,
    with fixed loads, an uncapped agent and a second capacity (an account count of 2 per agent)."""
    cost, load, capacity = (np.array(x) for x in instance)
    fixed = np.array(fixed).reshape(2, 3)
    n = cost.shape[1]
    capped = np.ones(3, dtype=bool)
    capped[uncapped] = False
    capacity[uncapped] = 0  # not in force: a price on it must not count
    first = LoadRows(load.T.reshape(-1), capacity, capped, fixed[0])
    count = LoadRows(np.ones(3 * n, dtype=np.int64), np.full(3, 2 + 3), np.ones(3, dtype=bool), fixed[1])
    bound = lagrangian_bound(
        np.arange(0, 3 * n + 1, 3), np.tile(np.arange(3), n), cost.T.reshape(-1), [first, count], np.array(prices).reshape(2, 3)
    )
    optimum = None  # brute force over the same constraints
    for choice in itertools.product(range(3), repeat=n):
        used = fixed[0] + np.bincount(choice, weights=[load[i, j] for j, i in enumerate(choice)], minlength=3)
        counted = fixed[1] + np.bincount(choice, minlength=3)
        if np.all((used <= capacity) | ~capped) and np.all(counted <= 5):
            total = sum(cost[i, j] for j, i in enumerate(choice))
            optimum = total if optimum is None else min(optimum, total)
    if optimum is not None:
        assert bound <= optimum + 1e-9


@given(
    st.integers(1, 5).flatmap(lambda n: st.tuples(agents_by_jobs(n, 0, 9), agents_by_jobs(n, 0, 6))),  # (cost, load)
    st.lists(st.integers(0, 3), min_size=3, max_size=3),  # fixed loads
    st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12)), min_size=3, max_size=3),  # bands, in either order
    st.lists(st.floats(0, 10), min_size=6, max_size=6),  # prices on the high and the low ends
)
def test_band_rows_bound_every_plan_within_the_bands(instance, fixed, bands, prices):
    """A balance band is a two-sided row: the LP's bound, and the Lagrangian bound for any prices on either
    end, hold for every plan that keeps each user's load within its band (brute force over tiny instances)."""
    cost, load = (np.array(x) for x in instance)
    n = cost.shape[1]
    lo, hi = np.array([sorted(b) for b in bands]).T
    ptr, pair_user = np.arange(0, 3 * n + 1, 3), np.tile(np.arange(3), n)
    rows = [LoadRows(load.T.reshape(-1), hi, np.ones(3, dtype=bool), np.array(fixed), floor=lo)]
    objective = cost.T.reshape(-1)
    optimum = None
    for choice in itertools.product(range(3), repeat=n):
        used = np.array(fixed) + np.bincount(choice, weights=[load[i, j] for j, i in enumerate(choice)], minlength=3)
        if np.all((lo <= used) & (used <= hi)):
            total = sum(cost[i, j] for j, i in enumerate(choice))
            optimum = total if optimum is None else min(optimum, total)
    user_pairs = [np.flatnonzero(pair_user == u) for u in range(3)]
    relaxed = relax(ptr, pair_user, user_pairs, objective, rows, effort=10.0)
    if optimum is None:
        return  # no plan: any bound holds (and the LP may have a fractional one)
    assert relaxed is not None  # a plan within the bands is a solution of the LP
    assert relaxed.bound <= optimum + 1e-6
    bound = lagrangian_bound(ptr, pair_user, objective, rows, np.array(prices[:3]).reshape(1, 3), np.array(prices[3:]).reshape(1, 3))
    assert bound <= optimum + 1e-6


def test_a_band_floor_raises_the_bound_to_the_cost_of_meeting_it():
    """Two accounts cost 0 with user a and 10 with user b, whose band needs at least one of them: every plan
    within the bands costs 10, and so do the LP's bound and the Lagrangian bound at the floor's price."""
    ptr, pair_user, objective = np.array([0, 2, 4]), np.array([0, 1, 0, 1]), np.array([0, 10, 0, 10])
    rows = [
        LoadRows(np.ones(4, dtype=np.int64), np.array([2, 2]), np.ones(2, dtype=bool), np.zeros(2, dtype=np.int64), floor=np.array([0, 1]))
    ]
    relaxed = relax(ptr, pair_user, [np.array([0, 2]), np.array([1, 3])], objective, rows, effort=10.0)
    assert relaxed is not None and relaxed.bound == pytest.approx(10)
    assert lagrangian_bound(ptr, pair_user, objective, rows, np.zeros((1, 2)), np.array([[0.0, 10.0]])) == pytest.approx(10)


@given(st.integers(2, 6).flatmap(lambda n: st.tuples(agents_by_jobs(n, 1, 30), agents_by_jobs(n, 2, 9), st.floats(1.0, 1.5))))
def test_lp_guided_start_holds_capacities_and_its_bound_is_below_the_optimum(instance):
    cost, load, slack = np.array(instance[0], dtype=float), np.array(instance[1], dtype=float), instance[2]
    n = cost.shape[1]
    capacity = np.full(3, np.floor(load.mean(axis=0).sum() / 3 * slack))
    engine = gap_engine()
    users = [User(f"a{i}", capacity={"effort": float(capacity[i])}) for i in range(3)]
    problem = engine.prepare(
        engine.table([{"id": f"j{j}", "country": "US"} for j in range(n)]), users, pairs=full_pairs(cost, load)
    ).problem
    ((members, units),) = components(problem)
    part = Component(problem, members, units)
    guided = part._lp_guided("affinity")
    optimum = brute_force(cost, load, capacity)
    if guided is None:  # the LP has no solution: neither has the integer problem
        assert optimum is None
        return
    assert all(np.all(load_of_user <= capacity) for load_of_user in part.loads(guided))
    if optimum is not None:
        assert part.lp_bounds["affinity"] <= optimum
        if part.scores(guided)["unassigned"] == 0:
            assert part.scores(guided)["affinity"] >= optimum


def test_pair_numbers_out_of_bounds_are_located():
    engine = gap_engine()
    table = engine.table([{"id": "A", "country": "US"}, {"id": "B", "country": "US"}])
    users = [User("a0"), User("a1")]
    columns = {
        "account_id": ["A", "B", "A", "B"],
        "user_id": ["a0", "a0", "a1", "a1"],
        "cost": ["1e300", "-1e16", "-5", "1e15"],
        "workload": ["-1", "1e16", "0", "1e15"],
    }
    with pytest.raises(DataError) as error:
        pairs_from_columns(columns, table, users, source="pairs.csv")
    assert sorted(str(f) for f in error.value.findings) == [
        "pairs.csv:2:cost: cost must be between -1e15 and 1e15, got 1e300",
        "pairs.csv:2:workload: workload must be between 0 and 1e15, got -1",
        "pairs.csv:3:cost: cost must be between -1e15 and 1e15, got -1e16",
        "pairs.csv:3:workload: workload must be between 0 and 1e15, got 1e16",
    ]


def test_a_plan_with_values_at_the_bound_runs_to_completion(tmp_path):
    """Capacity, cost, workload and revenue of 1e15 (the documented bound) on a few accounts: every account placed."""
    measures = "{revenue: {field: revenue}, effort: {pair: workload, field: revenue}, accounts: {constant: 1}}"
    rules = rules_text(
        POOL,
        fields="{country: string, revenue: number}",
        measures=measures,
        assignment="{hierarchy: independent, balance: [{measure: revenue, tolerance: 0.5}], objectives: [affinity, balance, continuity]}",
    )
    (tmp_path / "rules.yaml").write_text(rules, encoding="utf-8")
    accounts = [{"id": f"j{j}", "country": "US", "revenue": "1e15" if j < 3 else "999999999999999", "owner_id": "a0"} for j in range(5)]
    write_csv(tmp_path / "accounts.csv", accounts, ["id", "country", "revenue", "owner_id"])
    (tmp_path / "users.csv").write_text(
        "id,max_revenue,max_effort,max_accounts\na0,1e15,1e15,1e15\na1,1e15,,\na2,,1e15,\n", encoding="utf-8"
    )
    pairs = [{"account_id": f"j{j}", "user_id": f"a{j % 3}", "cost": "1e15" if j % 2 else "-1e15", "workload": "1e15"} for j in range(5)]
    write_csv(tmp_path / "pairs.csv", pairs, ["account_id", "user_id", "cost", "workload"])
    plan, _ = plan_files(
        tmp_path / "rules.yaml", tmp_path / "accounts.csv", tmp_path / "users.csv", pairs=tmp_path / "pairs.csv", effort=2.0
    )
    assert [r["account_id"] for r in plan.rows()] == [f"j{j}" for j in range(5)]
    counts = plan.summary()["status_counts"]
    assert (counts["assigned"], counts["unassigned"]) == (3, 2)  # each user has room for one account of about 1e15, no more


def test_a_zero_cost_above_a_negative_bound_has_a_gap_not_a_division_by_zero():
    """Negative costs (a bonus for a pair) can leave the affinity total at 0 above a proven bound of -3."""
    component = ComponentResult(
        ["a0", "a1"], units=2, pairs=4, objectives=[Objective("affinity", 0.0, -3.0, 0.0, "FEASIBLE")], moves=0, moves_bound=0, seconds=0.1
    )
    summary = solver_summary(Solution(np.zeros(2, dtype=np.int64), {}, [component]))
    assert summary["objectives"]["affinity"]["gap"] == component.objectives[0].gap > 0
