"""Time and effort: a wall-clock limit for the whole run, deterministic effort per component, and how both are
checked, recorded and read back (optimize/clock.py)."""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from assignment_engine import Engine, OptionError, User, compile_rules, read_accounts, read_users
from assignment_engine.batch import assign_files
from assignment_engine.cli import main
from assignment_engine.errors import RuleFileError
from assignment_engine.files.manifest import Manifest
from assignment_engine.optimize.clock import DEFAULT_EFFORT, HARD_BANDS_WORK, Clock, effort_in_force, share_time, solving_deadline, work
from assignment_engine.plan.result import results_of
from assignment_engine.review.diff import compare_plans
from assignment_engine.rules.ruleset import DEFAULT_EFFORT as RULE_FILE_DEFAULT
from assignment_engine.saved import load_plan
from assignment_engine.synthetic import generate_book
from assignment_engine.tables.table import PairTable
from conftest import EXAMPLE_RULES, strip_timing, table_of

LIMIT = 2.0  # wall-clock seconds given to the runs below
SLACK = 0.75  # seconds past the limit and the measured overhead a run may take (a loaded machine's scheduling)


def _gap_rules(agents: int) -> str:
    """Jobs in one pool, ``agents`` members each with a capacity of the pair measure ``load`` (YAML read as JSON)."""
    pool = {"id": "all", "type": "pool", "rules": [{"when": {"pool": "gap"}}], "members": [{"user": f"a{i}"} for i in range(agents)]}
    return json.dumps(
        {
            "version": 1,
            "fields": {"pool": "string"},
            "measures": {"load": {"pair": "workload"}},
            "territory_types": [{"name": "pool", "priority": 1}],
            "territories": [pool],
            "assignment": {"hierarchy": "independent", "balance": [], "objectives": ["affinity"], "pair_eligibility": "listed"},
        }
    )


def _gap(agents: int, jobs: int, seed: int = 1) -> tuple[Engine, Any, list[User], PairTable]:
    """A generalized-assignment instance of type D (cost falls as load rises, capacity 80 % of the mean load):
    hard enough that CP-SAT neither proves it nor stops improving it within seconds."""
    rng = np.random.default_rng(seed)
    load = rng.integers(1, 101, size=(agents, jobs))
    cost = 111 - load + rng.integers(-10, 11, size=(agents, jobs))
    capacity = 0.8 * load.sum(axis=1) / agents
    engine = Engine(compile_rules(_gap_rules(agents), "gap.yaml"))
    table = table_of(engine, [{"id": f"j{j}", "pool": "gap"} for j in range(jobs)])
    users = [User(f"a{i}", capacity={"load": float(capacity[i])}) for i in range(agents)]
    pairs = PairTable(
        account=np.tile(np.arange(jobs), agents),
        user=np.repeat(np.arange(agents), jobs),
        cost=cost.reshape(-1).astype(np.float64),
        workload=load.reshape(-1).astype(np.float64),
    )
    return engine, table, users, pairs


def _book(directory: Path, accounts: int, users: int, territories: int, seed: int) -> tuple[Engine, Any, list[User]]:
    """A synthetic book (many components) written to ``directory`` and read back."""
    generate_book(accounts, users, territories, seed=seed).write(directory)
    engine = Engine.from_file(directory / "rules.yaml")
    return (
        engine,
        read_accounts(directory / "accounts.csv", engine.rules.field_types),
        read_users(directory / "users.csv", list(engine.rules.measures)),
    )


def _timed(run: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    out = run()
    return out, time.perf_counter() - started


def test_a_wall_clock_limit_stops_a_run_that_would_go_on_and_the_summary_says_so():
    engine, table, users, pairs = _gap(10, 200)
    # the same run on a token effort: everything but the solving (matching, model building, the plan)
    _, overhead = _timed(lambda: engine.assign(table, users, pairs=pairs, effort=0.01))
    plan, elapsed = _timed(lambda: engine.assign(table, users, pairs=pairs, time_limit=LIMIT))
    assert elapsed <= LIMIT + overhead + SLACK
    solver = plan.summary()["solver"]
    assert solver["stopped_on_time"] == [0]
    assert solver["per_component"][0]["stopped_on"] == "time_limit"
    assert None not in plan.owner_ids  # the best plan found by then: every job placed
    assert elapsed >= LIMIT / 2  # it used its time (its components get the time left, not an effort)


def test_components_share_the_time_in_worker_processes_and_the_run_ends_on_time(tmp_path: Path):
    engine, table, users = _book(tmp_path, 3_000, 60, 12, seed=5)
    _, overhead = _timed(lambda: engine.assign(table, users, workers=2, effort=0.01))
    plan, elapsed = _timed(lambda: engine.assign(table, users, workers=2, time_limit=LIMIT))
    assert elapsed <= LIMIT + overhead + SLACK
    solver = plan.summary()["solver"]
    stopped = [c["id"] for c in solver["per_component"] if c["stopped_on"] == "time_limit"]
    assert solver["stopped_on_time"] == stopped
    assert {c["stopped_on"] for c in solver["per_component"]} <= {"optimal", "effort", "time_limit"}


def test_an_effort_gives_the_same_plan_for_any_number_of_workers_and_no_stop_on_time(tmp_path: Path):
    engine, table, users = _book(tmp_path, 1_500, 30, 6, seed=2)
    one = engine.assign(table, users, workers=1, effort=0.3)
    two = engine.assign(table, users, workers=2, effort=0.3)
    assert one.owner_ids == two.owner_ids
    assert strip_timing(one.summary()) == strip_timing(two.summary())
    solver = one.summary()["solver"]
    assert solver["stopped_on_time"] == []
    assert {c["stopped_on"] for c in solver["per_component"]} <= {"optimal", "effort"}


def test_effort_in_force_and_the_solving_deadline():
    assert DEFAULT_EFFORT == RULE_FILE_DEFAULT
    assert effort_in_force(None, None) == DEFAULT_EFFORT  # neither: the default, reproducible
    assert effort_in_force(None, 60.0) is None  # a time limit alone: work until it
    assert effort_in_force(3.0, 60.0) == 3.0  # both: whichever comes first
    assert solving_deadline(1000.0, 60.0, 0) == pytest.approx(1059.4)  # 1 % held back for late stops
    assert solving_deadline(1000.0, 60.0, 100_000) == pytest.approx(1053.4)  # and 60 µs an account to build and write
    assert solving_deadline(1000.0, 4.0, 10**9) == 1003.0  # never more than a quarter of the limit
    assert Clock.starting(None, None).effort == DEFAULT_EFFORT  # never unbounded both ways
    assert math.isinf(Clock.starting(None, time.time() + 5).budget)


def test_time_is_shared_by_work_largest_first():
    def part(pairs: int, bands_may_hold: bool = True) -> Any:
        return SimpleNamespace(needs_solver=True, pair_user=range(pairs), dims=[], deadline=None, bands_may_hold=bands_may_hold)

    small, large, middle = part(1), part(3), part(2)
    before = time.time()
    order = share_time([small, large, middle], before + 60, workers=1, weigh=work)
    assert order == [large, middle, small]
    ends = [p.deadline - before for p in order]
    assert ends == pytest.approx([30, 50, 60], abs=0.1)  # one after another: each its part of the window
    order = share_time([small, large, middle], before + 60, workers=2, weigh=work)
    # two at a time: the large one alone on one worker, the middle then the small one on the other
    assert [p.deadline - before for p in (large, middle, small)] == pytest.approx([60, 40, 60], abs=0.1)
    # bands that cannot all hold make a component harder than its size says: it goes first, with more time
    hard = part(1, bands_may_hold=False)
    order = share_time([small, large, hard], before + 60, workers=1, weigh=work)
    assert order == [hard, large, small]
    expected = [HARD_BANDS_WORK, HARD_BANDS_WORK + 3, HARD_BANDS_WORK + 4]
    assert [p.deadline - before for p in order] == pytest.approx([60 * e / expected[-1] for e in expected], abs=0.1)


def _rules(extra: str) -> str:
    assert "hierarchy: follow_ultimate_parent " in EXAMPLE_RULES
    return EXAMPLE_RULES.replace("hierarchy: follow_ultimate_parent ", f"{extra}\n  hierarchy: follow_ultimate_parent ", 1)


@pytest.mark.parametrize("key", ["effort", "time_limit"])
@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("0", "greater than 0"),
        ("-1", "greater than 0"),
        ("86401", "less than or equal to 86400"),
        ("'5'", "valid number"),
        ("true", "valid number"),
        (".inf", "valid number"),
    ],
)
def test_the_rule_file_takes_a_positive_number_of_seconds_up_to_a_day(key, value, fragment):
    with pytest.raises(RuleFileError) as caught:
        compile_rules(_rules(f"{key}: {value}"))
    assert any(key in f.message and fragment in f.message for f in caught.value.findings)


def test_the_rule_file_limits_load_as_floats():
    policy = compile_rules(_rules("effort: 3\n  time_limit: 86400")).policy
    assert (policy.effort, policy.time_limit) == (3.0, 86400.0) and isinstance(policy.effort, float)
    policy = compile_rules(EXAMPLE_RULES).policy
    assert (policy.effort, policy.time_limit) == (None, None)


@pytest.mark.parametrize("option", ["--effort", "--time-limit"])
@pytest.mark.parametrize("value", ["nan", "-1", "inf", "0", "86401", "soon"])
def test_out_of_range_limits_are_usage_errors(example_files, tmp_path, option, value):
    args = [
        "assign",
        "--rules",
        str(example_files["rules"]),
        "--accounts",
        str(example_files["accounts"]),
        "--users",
        str(example_files["users"]),
    ]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "plan"), "--workers", "1", option, value])
    assert result.exit_code == 2
    assert f"Invalid value for '{option}'" in result.stderr
    assert not (tmp_path / "plan").exists()


@pytest.mark.parametrize("where", ["effort", "time_limit"])
@pytest.mark.parametrize("value", [math.nan, -1.0, 0, math.inf, 86_401.0, True, "5"])
def test_library_limits_out_of_range_or_of_the_wrong_type_raise_option_error(example_engine, example_users, where, value):
    with pytest.raises(OptionError) as caught:
        example_engine.assign(example_engine.table([]), example_users, **{where: value})
    assert [str(f.location) for f in caught.value.findings] == [where]


def _old_plan_id(manifest: dict[str, Any]) -> str:
    """The plan id as the engine computed it before effort existed."""
    shaping = {
        "engine_version": manifest["engine_version"],
        "inputs": [(f["role"], f["sha256"], f["rows"]) for f in manifest["inputs"]],
        "settings": {k: manifest["settings"].get(k) for k in ("seed", "time_limit", "as_of", "hierarchy_errors")},
    }
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]


def test_the_manifest_records_effort_and_time_limit(example_files, tmp_path):
    run = assign_files(
        example_files["rules"], example_files["accounts"], example_files["users"], tmp_path / "a", workers=1, report=False, effort=0.5
    )
    assert (run.manifest.settings["effort"], run.manifest.settings["time_limit"]) == (0.5, None)
    run = assign_files(
        example_files["rules"], example_files["accounts"], example_files["users"], tmp_path / "b", workers=1, report=False, time_limit=30
    )
    assert (run.manifest.settings["effort"], run.manifest.settings["time_limit"]) == (None, 30)
    assert load_plan(tmp_path / "b").owner_ids == run.plan.owner_ids
    assert Manifest.read(tmp_path / "a").plan_id != Manifest.read(tmp_path / "b").plan_id  # both shape the plan


def test_a_plan_made_before_effort_existed_loads_keeps_its_id_and_compares_without_false_differences(example_files, tmp_path):
    new = tmp_path / "new"
    run = assign_files(example_files["rules"], example_files["accounts"], example_files["users"], new, workers=1, report=False, effort=0.5)
    old = tmp_path / "old"
    old.mkdir()
    for f in new.iterdir():
        (old / f.name).write_bytes(f.read_bytes())
    data = json.loads((old / "plan.json").read_text(encoding="utf-8"))
    settings = {k: v for k, v in data["settings"].items() if k not in ("effort", "executor")}
    data["settings"] = {**settings, "time_limit": 0.5}  # as written then: the effort under time_limit
    data["format"] = 1  # and the id did not cover the rows
    data["plan_id"] = _old_plan_id(data)
    (old / "plan.json").write_text(json.dumps(data), encoding="utf-8")
    summary = json.loads((old / "summary.json").read_text(encoding="utf-8"))
    for c in summary["solver"]["per_component"]:  # summaries had no stopped_on then
        del c["stopped_on"], c["id"]
    del summary["solver"]["stopped_on_time"]
    assert [c.stopped_on for c in results_of(summary["solver"])] == [c.stopped_on for c in run.plan.solution.components]
    manifest = Manifest.read(old)  # its id still matches its content
    assert manifest.plan_id == data["plan_id"]
    assert (manifest.current_settings["effort"], manifest.current_settings["time_limit"]) == (0.5, None)
    assert load_plan(old).owner_ids == run.plan.owner_ids
    comparison = compare_plans(old, new)
    assert comparison.a.settings["effort"] == comparison.b.settings["effort"] == 0.5
    assert comparison.a.settings["time_limit"] is comparison.b.settings["time_limit"] is None
