"""Generalized assignment benchmark: the engine, end to end, on public GAP instances.

Each instance becomes a book: jobs are accounts, agents are users with a
``max_effort`` capacity, and a pairs table gives the per-pair cost (affinity)
and workload (the ``effort`` measure). The engine must place every job within
capacity at least cost. Printed side by side: the engine, a largest-first
greedy, round robin, the best known value and the engine's proven bound, with
the engine's wall-clock seconds per instance and what its component stopped on.

    python benchmarks/gap.py [--time-limit 60] [--effort SECONDS] [--only NAME ...]

``--time-limit`` is wall-clock seconds per instance, the engine run end to end
(the default, 60); ``--effort`` is deterministic seconds of solver work instead
(or as well): the same plan on any machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

from assignment_engine import Engine, User, compile_rules
from assignment_engine.tables.table import PairTable

DATA = Path(__file__).parent / "data" / "gap"
BEST_KNOWN = {  # best known value, and whether it is proven optimal (data/gap/README.md)
    "cattrysse1994_gap1-0": (261, True),
    "cattrysse1994_gap12-0": (974, True),
    "chu1997_a05100": (1698, True),
    "chu1997_c05100": (1931, True),
    "chu1997_d05100": (6353, True),
    "chu1997_d10100": (6347, True),
    "chu1997_d20200": (12238, False),
    "yagiura2004_e05100": (12681, True),
    "yagiura2004_e10200": (23307, True),
    "yagiura2004_c10400": (5597, True),
    "yagiura2004_d20400": (24567, False),
    "yagiura2004_d801600": (97034, True),
    "yagiura2004_e801600": (176820, True),
}


def read_instance(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cost[m, n], load[m, n], capacity[m])."""
    numbers = np.array(path.read_text().split(), dtype=np.int64)
    m, n = int(numbers[0]), int(numbers[1])
    cost = numbers[2 : 2 + m * n].reshape(m, n)
    load = numbers[2 + m * n : 2 + 2 * m * n].reshape(m, n)
    capacity = numbers[2 + 2 * m * n : 2 + 2 * m * n + m]
    return cost, load, capacity


def rules_text(m: int) -> str:
    members = ", ".join(f"{{user: a{i}}}" for i in range(m))
    return f"""
version: 1
fields: {{pool: string}}
measures: {{effort: {{pair: workload}}}}
territory_types: [{{name: pool, priority: 1}}]
territories:
  - id: all
    type: pool
    rules: [{{when: {{pool: gap}}}}]
    members: [{members}]
assignment:
  hierarchy: independent
  balance: []
  objectives: [affinity]
  pair_eligibility: listed
"""


def engine_solve(
    cost: np.ndarray, load: np.ndarray, capacity: np.ndarray, time_limit: float | None, effort: float | None, workers: int
) -> tuple[float | None, float, str, str]:
    """The engine's cost (None: a job left out), its proven bound, status and what its component stopped on;
    the time limit counts from this call, as the benchmark's clock does."""
    started = time.time()
    m, n = cost.shape
    engine = Engine(compile_rules(rules_text(m), "gap.yaml"))
    table = engine.table([{"id": f"j{j}", "pool": "gap"} for j in range(n)])
    users = [User(f"a{i}", capacity={"effort": float(capacity[i])}) for i in range(m)]
    pairs = PairTable(
        account=np.tile(np.arange(n), m),
        user=np.repeat(np.arange(m), n),
        cost=cost.reshape(-1).astype(np.float64),
        workload=load.reshape(-1).astype(np.float64),
    )
    plan = engine.assign(table, users, pairs=pairs, workers=workers, time_limit=time_limit, effort=effort, started=started)
    owner = {u.id: i for i, u in enumerate(users)}
    chosen = [owner.get(o, -1) if o else -1 for o in plan.owner_ids]
    comp = plan.solution.components[0]
    if min(chosen) < 0:
        return None, float("nan"), "INFEASIBLE", comp.stopped_on
    for i in range(m):
        assert load[i, [j for j in range(n) if chosen[j] == i]].sum() <= capacity[i], "capacity violated"
    total = float(sum(cost[chosen[j], j] for j in range(n)))
    affinity = comp.objective("affinity")
    return total, affinity.bound if affinity else total, comp.status, comp.stopped_on


def greedy(cost: np.ndarray, load: np.ndarray, capacity: np.ndarray) -> float | None:
    """Largest job first (by its smallest load), to the cheapest agent with room."""
    m, n = cost.shape
    room = capacity.astype(np.int64).copy()
    total = 0
    for j in sorted(range(n), key=lambda j: (-int(load[:, j].min()), j)):
        options = [i for i in range(m) if load[i, j] <= room[i]]
        if not options:
            return None
        i = min(options, key=lambda i: (cost[i, j], i))
        room[i] -= load[i, j]
        total += int(cost[i, j])
    return float(total)


def round_robin(cost: np.ndarray, load: np.ndarray, capacity: np.ndarray) -> float | None:
    """Jobs in order to agents in turn, skipping an agent without room."""
    m, n = cost.shape
    room = capacity.astype(np.int64).copy()
    total, turn = 0, 0
    for j in range(n):
        for step in range(m):
            i = (turn + step) % m
            if load[i, j] <= room[i]:
                room[i] -= load[i, j]
                total += int(cost[i, j])
                turn = i + 1
                break
        else:
            return None
    return float(total)


def _pct(value: float | None, best: float) -> str:
    return "infeasible" if value is None else f"{value:,.0f} ({(value - best) / best:+.2%})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--time-limit", type=float, default=None, help="wall-clock seconds per instance, end to end (default 60 without --effort)"
    )
    parser.add_argument("--effort", type=float, default=None, help="solver effort, deterministic seconds per phase (reproducible)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--only", nargs="*", help="instance names to run")
    args = parser.parse_args()
    time_limit = 60.0 if args.time_limit is None and args.effort is None else args.time_limit
    names = args.only or list(BEST_KNOWN)
    print(
        f"time limit {time_limit} s, effort {args.effort}; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {time.strftime('%Y-%m-%d %H:%M')}"
    )
    header = (
        f"{'instance':22} {'m×n':>8} {'best known':>11} {'engine':>20} {'proven bound':>13} "
        f"{'status':>9} {'stopped on':>10} {'greedy':>20} {'round robin':>20} {'time s':>7}"
    )
    print(header)
    print("-" * len(header))
    for name in names:
        cost, load, capacity = read_instance(DATA / f"{name}.txt")
        best, proven = BEST_KNOWN[name]
        start = time.perf_counter()
        ours, bound, status, stopped = engine_solve(cost, load, capacity, time_limit, args.effort, args.workers)
        seconds = time.perf_counter() - start
        print(
            f"{name:22} {f'{cost.shape[0]}×{cost.shape[1]}':>8} {best:>11,}{'' if proven else '*'} "
            f"{_pct(ours, best):>20} {bound:>13,.0f} {status:>9} {stopped:>10} "
            f"{_pct(greedy(cost, load, capacity), best):>20} {_pct(round_robin(cost, load, capacity), best):>20} {seconds:>7.2f}",
            flush=True,
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"\n* best known, not proven optimal. Peak memory {peak:,.0f} MiB. Python "
        f"{sys.version.split()[0]}. Load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
