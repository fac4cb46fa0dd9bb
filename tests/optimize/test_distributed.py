"""The Dask executor (optimize/distributed.py): the same plan as the local executor, failures as engine errors, the CLI options."""

from __future__ import annotations

import dataclasses
import json
import pickle
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

distributed = pytest.importorskip("distributed")

from assignment_engine import Engine, demo_files, plan_files, read_accounts, read_users
from assignment_engine.cli import main
from assignment_engine.errors import AssignmentEngineError, OptionError
from assignment_engine.optimize import Problem, solve
from assignment_engine.optimize import distributed as dask_executor
from assignment_engine.optimize.clock import share_time, work
from assignment_engine.optimize.component import Component
from assignment_engine.optimize.executors import _parts
from assignment_engine.synthetic import PRESETS, generate_book
from assignment_engine.tables.table import PairTable, User
from conftest import engine_of, rules_text


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """Two single-threaded workers in this process, reachable over TCP (the CLI test connects by address)."""
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, protocol="tcp://", host="127.0.0.1", dashboard_address=":0"
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture(scope="module")
def book(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small preset (2,000 accounts, 40 users, 10 territories: several components)."""
    target = tmp_path_factory.mktemp("book")
    generate_book(**PRESETS["S"]).write(target)
    return target


@pytest.fixture(scope="module")
def book_problem(book: Path) -> Problem:
    engine = Engine.from_file(book / "rules.yaml")
    accounts = read_accounts(book / "accounts.csv", engine.rules.field_types)
    users = read_users(book / "users.csv", list(engine.rules.measures))
    return engine.prepare(accounts, users, effort=0.5).problem


POOLS = """\
- id: north
  type: geo
  rules: [{when: {country: US}}]
  members: [{user: a0}, {user: a1}, {user: a2}]
- id: south
  type: geo
  rules: [{when: {country: BR}}]
  members: [{user: b0}, {user: b1}]
"""


def pairs_problem() -> tuple[Any, list[dict[str, Any]], list[User], PairTable]:
    """Two pools (two components) with a pairs file: listed eligibility, per-pair cost and workload, capacities."""
    engine = engine_of(
        rules_text(
            POOLS,
            fields="{country: string}",
            measures="{effort: {pair: workload}, accounts: {constant: 1}}",
            assignment=(
                "{hierarchy: independent, balance: [{measure: accounts, tolerance: 0.5}], "
                "objectives: [balance, affinity], pair_eligibility: listed, effort: 0.5}"
            ),
        )
    )
    records = [{"id": f"j{j}", "country": "US" if j % 3 else "BR"} for j in range(24)]
    users = [User(u, capacity={"effort": 40.0}) for u in ("a0", "a1", "a2", "b0", "b1")]
    rng = np.random.default_rng(3)
    account, user = np.meshgrid(np.arange(24), np.arange(5), indexing="ij")
    keep = rng.random(account.size) < 0.8  # some pairs unlisted
    pairs = PairTable(
        account=account.reshape(-1)[keep],
        user=user.reshape(-1)[keep],
        cost=rng.integers(1, 30, account.size).astype(np.float64)[keep],
        workload=rng.integers(1, 9, account.size).astype(np.float64)[keep],
    )
    return engine, records, users, pairs


def _same(a: Any, b: Any, path: str) -> None:
    """Deep equality, numpy arrays by dtype and value."""
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b), path
    elif dataclasses.is_dataclass(a) and not isinstance(a, type):
        assert type(a) is type(b), path
        for f in dataclasses.fields(a):
            _same(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _same(a[k], b[k], f"{path}[{k}]")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{path}[{k}]")
    else:
        assert a == b, (path, a, b)


def _assert_shipments_rebuild(problem: Problem) -> None:
    parts, _ = _parts(problem)
    assert len(parts) > 1
    for part in parts:
        shipment = pickle.loads(
            pickle.dumps(dask_executor.ship(problem, part.users, part.units, part=part), protocol=5)
        )  # as a worker gets it
        rebuilt = shipment.component()
        whole = {k: v for k, v in vars(part).items() if k not in ("users", "units")}  # those are numbered from 0 on a worker
        _same(whole, {k: v for k, v in vars(rebuilt).items() if k not in ("users", "units")}, "component")
        assert len(rebuilt.users) == len(part.users) and len(rebuilt.units) == len(part.units)


def test_a_shipment_rebuilds_the_component_field_for_field(book_problem: Problem):
    _assert_shipments_rebuild(book_problem)
    engine, records, users, pairs = pairs_problem()
    problem = engine.prepare(engine.table(records), users, pairs=pairs).problem
    assert problem.pair_allowed and problem.pair_cost and any(d.pair_values for d in problem.dims)
    _assert_shipments_rebuild(problem)


def test_a_components_own_deadline_travels_with_it(book_problem: Problem):
    """Under a wall-clock limit each component gets a deadline of its own (clock.share_time); the worker's copy keeps it."""
    heavy = share_time([p for p in _parts(book_problem)[0] if p.needs_solver], time.time() + 60, 2, work)
    deadlines = []
    for part in heavy:
        rebuilt = pickle.loads(pickle.dumps(dask_executor.ship(book_problem, part.users, part.units, part=part), protocol=5)).component()
        assert rebuilt.deadline == part.deadline
        deadlines.append(rebuilt.deadline)
    assert len(set(deadlines)) > 1


def test_a_shipment_is_smaller_than_the_component(book_problem: Problem):
    parts = [p for p in _parts(book_problem)[0] if p.needs_solver]
    shipped, whole = dask_executor.payload_bytes(book_problem, parts)
    assert shipped < whole / 2, (shipped, whole)


def _objectives(solution: Any) -> list[Any]:
    return [[(o.name, o.value, o.bound, o.status) for o in c.objectives] + [c.moves, c.moves_bound] for c in solution.components]


def test_a_cluster_gives_the_local_plan_on_a_generated_book(client: Any, book_problem: Problem):
    local = solve(book_problem, 1)
    remote = solve(book_problem, 2, executor="dask", scheduler=client)
    assert np.array_equal(local.owner, remote.owner)
    assert _objectives(local) == _objectives(remote)
    assert sum(1 for c in remote.components if c.objectives) > 1  # several components went to the cluster


def test_a_cluster_gives_the_local_plan_with_a_pairs_file(client: Any):
    engine, records, users, pairs = pairs_problem()
    local = engine.assign(engine.table(records), users, pairs=pairs)
    remote = engine.assign(engine.table(records), users, pairs=pairs, executor="dask", scheduler=client)
    assert local.owner_ids == remote.owner_ids
    assert _objectives(local.solution) == _objectives(remote.solution)


def test_a_cluster_gives_the_local_plan_on_the_demo(client: Any):
    files = demo_files()
    inputs = (files["rules"], files["accounts"], files["users"])
    local, _ = plan_files(*inputs, opportunities=files["opportunities"], effort=0.5)
    remote, _ = plan_files(*inputs, opportunities=files["opportunities"], effort=0.5, executor="dask", scheduler=client)
    assert local.owner_ids == remote.owner_ids
    solver_local, solver_remote = local.summary()["solver"], remote.summary()["solver"]
    assert solver_local["objectives"] == solver_remote["objectives"]
    assert [c["objectives"] for c in solver_local["per_component"]] == [c["objectives"] for c in solver_remote["per_component"]]


def test_a_worker_that_raises_fails_the_run(client: Any, book_problem: Problem, monkeypatch: pytest.MonkeyPatch):
    def broken(self: Component) -> Any:
        raise RuntimeError("solver exploded")

    monkeypatch.setattr(Component, "solve", broken)  # the workers run in this process
    with pytest.raises(AssignmentEngineError) as caught:
        dask_executor.on_dask(book_problem, [p for p in _parts(book_problem)[0] if p.needs_solver], client)
    message = str(caught.value)
    assert "failed on a Dask worker: RuntimeError: solver exploded" in message and "units" in message


def test_results_are_awaited_on_the_runs_own_client_loop(client: Any, book_problem: Problem, monkeypatch: pytest.MonkeyPatch):
    """A caller that holds a current client (this module's ``with Client``) and gives an address: the run's futures
    are tracked on the loop of the client that submitted them, not the default client's. On the other loop a
    finished result could be missed and the run waited forever (a CI run hung in the CLI test below)."""
    tracked: list[tuple[Any, set[Any]]] = []
    as_completed = distributed.as_completed

    def recording(futures: list[Any], *args: Any, **kwargs: Any) -> Any:
        tracked.append((kwargs.get("loop"), {f.client.loop for f in futures}))
        return as_completed(futures, *args, **kwargs)

    monkeypatch.setattr(distributed, "as_completed", recording)
    assert distributed.default_client() is client  # another client than the run's is the current one
    parts = [p for p in _parts(book_problem)[0] if p.needs_solver]
    solved = dask_executor.on_dask(book_problem, parts, client.scheduler.address)
    assert len(solved) == len(parts)
    [(loop, loops)] = tracked
    assert loops == {loop} and loop is not client.loop


def test_a_lost_scheduler_fails_the_run(book_problem: Problem, monkeypatch: pytest.MonkeyPatch):
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0")
    with distributed.Client(cluster) as own:
        solve_one = Component.solve

        def slow(self: Component) -> Any:
            time.sleep(0.3)
            return solve_one(self)

        monkeypatch.setattr(Component, "solve", slow)
        parts = [p for p in _parts(book_problem)[0] if p.needs_solver]
        threading.Timer(1.0, own.shutdown).start()  # the scheduler goes away mid-run
        with pytest.raises(AssignmentEngineError, match="lost the Dask scheduler"):
            dask_executor.on_dask(book_problem, parts, own)
    cluster.close()


def test_an_unreachable_scheduler_is_an_error(book_problem: Problem, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(dask_executor, "CONNECT_TIMEOUT", "0.5s")
    parts = [p for p in _parts(book_problem)[0] if p.needs_solver]
    with pytest.raises(AssignmentEngineError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        dask_executor.on_dask(book_problem, parts, "tcp://127.0.0.1:9")


def test_options_are_checked_before_any_work(monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(OptionError, match="executor must be one of local, dask"):
        dask_executor.check_executor("ray")
    with pytest.raises(OptionError, match="only used by the dask executor"):
        dask_executor.check_executor("local", "tcp://127.0.0.1:8786")
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if the extra were not installed
    with pytest.raises(OptionError, match=r"pip install 'assignment-engine\[distributed\]'"):
        dask_executor.check_executor("dask")


def _assign_args(book: Path, out: Path) -> list[str]:
    return [
        "assign",
        "--rules",
        str(book / "rules.yaml"),
        "--accounts",
        str(book / "accounts.csv"),
        "--users",
        str(book / "users.csv"),
        "--effort",
        "0.5",
        "--workers",
        "1",
        "-q",
        "--format",
        "json",
        "--out",
        str(out),
    ]


def _owners(out: Path) -> list[tuple[str, str]]:
    with (out / "accounts.jsonl").open(encoding="utf-8") as handle:
        return [(r["account_id"], r["owner_id"]) for r in map(json.loads, handle)]


def test_the_cli_options(client: Any, book: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    runner = CliRunner()
    local = runner.invoke(main, _assign_args(book, tmp_path / "local"))
    assert local.exit_code == 0, local.output
    remote = runner.invoke(main, [*_assign_args(book, tmp_path / "dask"), "--executor", "dask", "--scheduler", client.scheduler.address])
    assert remote.exit_code == 0, remote.output
    assert _owners(tmp_path / "local") == _owners(tmp_path / "dask")
    manifests = [json.loads((tmp_path / name / "plan.json").read_text()) for name in ("local", "dask")]
    assert [m["settings"]["executor"] for m in manifests] == ["local", "dask"]
    assert manifests[0]["plan_id"] == manifests[1]["plan_id"]  # the executor does not shape the plan

    alone = runner.invoke(main, [*_assign_args(book, tmp_path / "x"), "--scheduler", "tcp://127.0.0.1:8786"])
    assert alone.exit_code == 2 and "--executor dask" in alone.output
    monkeypatch.setitem(sys.modules, "distributed", None)
    missing = runner.invoke(main, [*_assign_args(book, tmp_path / "y"), "--executor", "dask"])
    assert missing.exit_code == 2 and "pip install 'assignment-engine[distributed]'" in missing.output
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_the_cli_starts_a_local_cluster_without_a_scheduler(tmp_path: Path):
    """--executor dask alone: a LocalCluster of --workers processes for the run (one here: spawning is slow)."""
    files = demo_files()
    args = [
        "assign",
        "--rules",
        str(files["rules"]),
        "--accounts",
        str(files["accounts"]),
        "--users",
        str(files["users"]),
        "--effort",
        "0.3",
        "--workers",
        "1",
        "-q",
        "--format",
        "json",
    ]
    local = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "local")])
    remote = CliRunner().invoke(main, [*args, "--executor", "dask", "--out", str(tmp_path / "dask")])
    assert local.exit_code == 0 and remote.exit_code == 0, remote.output
    assert _owners(tmp_path / "local") == _owners(tmp_path / "dask")
    ids = [json.loads((tmp_path / name / "plan.json").read_text())["plan_id"] for name in ("local", "dask")]
    assert ids[0] == ids[1]
