"""Scale benchmark: a synthetic book end to end (read, match, solve, write), against baselines.

    python benchmarks/scale.py --preset S|M|L [--workers 2] [--effort SECONDS] [--time-limit SECONDS]

The book is generated once (deterministically) into benchmarks/out/<preset>/ by
``python -m assignment_engine.synthetic`` in a separate process, so its memory
does not count. Printed side by side for the same eligibility (territories,
locks, families): the engine, a largest-first greedy and round robin (both
blind to current owners, as the scripts users compare us with), with each
balance measure's min and max load relative to fair share, accounts and value
moved, and the engine's proven lower bound on accounts moved.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from assignment_engine import Engine, read_accounts, read_users, write_plan
from assignment_engine.optimize import Problem, solve
from assignment_engine.plan.result import Plan

OUT = Path(__file__).parent / "out"


class PssPeak:
    """The peak, over samples every ``interval`` seconds, of the summed proportional set size (PSS) of this
    process and its descendants: shared pages counted once across the forked workers, as RSS does not.
    Linux only (/proc/<pid>/smaps_rollup); elsewhere it stays at 0."""

    def __init__(self, interval: float = 0.5):
        self.peak_kib, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def start(self) -> PssPeak:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.peak_kib = max(self.peak_kib, sum(_pss(pid) for pid in _tree(os.getpid())))


def _tree(pid: int) -> list[int]:
    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        children = []
    return [pid, *(p for c in children for p in _tree(c))]


def _pss(pid: int) -> int:
    try:
        return next(int(line.split()[1]) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines() if line.startswith("Pss:"))
    except (OSError, StopIteration):
        return 0


def generate(preset: str) -> Path:
    target = OUT / preset
    if not (target / "accounts.csv").is_file():
        subprocess.run([sys.executable, "-m", "assignment_engine.synthetic", "--preset", preset, "--out", str(target)], check=True)
    return target


def largest_first(problem: Problem, fair: dict[str, np.ndarray]) -> np.ndarray:
    """Biggest unit first, to the candidate with the lowest load relative to fair share (capacity respected)."""
    primary = next(d for d in problem.dims if d.tolerance is not None)
    share = np.maximum(fair[primary.label], 1e-9)
    load = {d.label: d.fixed.copy() for d in problem.dims}
    owner = np.full(problem.n_units, -1, dtype=np.int64)
    for k in np.argsort(-primary.unit_values, kind="stable"):
        options = [u for u in problem.candidate_sets[problem.unit_set[k]] if _fits(problem, load, k, u)]
        if options:
            u = min(options, key=lambda u: ((load[primary.label][u] + primary.unit_values[k]) / share[u], u))
            _place(problem, load, k, u)
            owner[k] = u
    return owner


def round_robin(problem: Problem) -> np.ndarray:
    """Units in input order, dealt to their candidates in turn (capacity respected)."""
    load = {d.label: d.fixed.copy() for d in problem.dims}
    turn: dict[int, int] = {}
    owner = np.full(problem.n_units, -1, dtype=np.int64)
    for k in range(problem.n_units):
        s = int(problem.unit_set[k])
        cands = problem.candidate_sets[s]
        for step in range(len(cands)):
            u = cands[(turn.get(s, 0) + step) % len(cands)]
            if _fits(problem, load, k, u):
                turn[s] = turn.get(s, 0) + step + 1
                _place(problem, load, k, u)
                owner[k] = u
                break
    return owner


def _fits(problem: Problem, load: dict[str, np.ndarray], k: int, u: int) -> bool:
    return all(d.capacity is None or load[d.label][u] + d.unit_values[k] <= d.capacity[u] for d in problem.dims)


def _place(problem: Problem, load: dict[str, np.ndarray], k: int, u: int) -> None:
    for d in problem.dims:
        load[d.label][u] += d.unit_values[k]


def measure(problem: Problem, fair: dict[str, np.ndarray], owner: np.ndarray) -> dict[str, Any]:
    placed = owner >= 0
    row: dict[str, Any] = {}
    for d in problem.dims:
        if d.tolerance is None:
            continue
        load = d.fixed + np.bincount(owner[placed], weights=d.unit_values[placed], minlength=len(problem.user_ids))
        share = fair[d.label]
        dev = (load[share > 0] - share[share > 0]) / share[share > 0]
        row[d.label] = (float(dev.min()), float(dev.max()), float(np.mean(np.abs(dev) <= d.tolerance + 1e-9)))
    eligible = np.array([bool(problem.candidate_sets[s]) for s in problem.unit_set], dtype=bool)  # others: unassigned whatever the method
    held_accounts, held_value = problem.held.lookup(np.arange(problem.n_units), owner)
    row["moved"] = int((problem.unit_size - held_accounts)[eligible].sum())
    row["moved_value"] = float((problem.unit_value - held_value)[eligible].sum())
    row["unassigned"] = int(problem.unit_size[~placed].sum())  # includes units without any eligible owner
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="S", choices=["S", "M", "L"])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--effort", type=float, default=None, help="solver work per component, deterministic seconds (default: the rule file's)"
    )
    parser.add_argument("--time-limit", type=float, default=None, help="wall-clock seconds for the whole run, reading included")
    parser.add_argument("--no-baselines", action="store_true")
    args = parser.parse_args()
    book = generate(args.preset)
    stages: dict[str, float] = {}
    start = clock = time.perf_counter()
    started = time.time()  # the run's start, as engine.prepare counts a time limit

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        stages[name] = now - clock
        clock = now

    sampler = PssPeak().start()
    engine = Engine.from_file(book / "rules.yaml")
    accounts = read_accounts(book / "accounts.csv", engine.rules.field_types)
    users = read_users(book / "users.csv", list(engine.rules.measures))
    lap("read")
    prepared = engine.prepare(accounts, users, effort=args.effort, time_limit=args.time_limit, started=started)
    lap("match+families+rank")
    solution = solve(prepared.problem, args.workers)
    lap("optimize")
    plan = Plan.build(prepared, solution)
    summary = write_plan(plan, OUT / f"{args.preset}-plan")
    lap("plan+write")
    total = time.perf_counter() - start
    sampler.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    problem, fair = prepared.problem, solution.fair
    rows = {"engine": measure(problem, fair, solution.owner)}
    times = {"engine": total}
    if not args.no_baselines:
        for name, method in (("largest-first greedy", lambda: largest_first(problem, fair)), ("round robin", lambda: round_robin(problem))):
            t = time.perf_counter()
            owner = method()
            times[name] = time.perf_counter() - t + stages["read"] + stages["match+families+rank"]
            rows[name] = measure(problem, fair, owner)

    labels = [d.label for d in problem.dims if d.tolerance is not None]
    tolerance = {d.label: d.tolerance for d in problem.dims if d.tolerance is not None}
    print(
        f"\npreset {args.preset}: {len(accounts):,} accounts, {len(users):,} users, {len(engine.rules.territories):,} territories, "
        f"{problem.n_units:,} units, {len(solution.components):,} components; workers {args.workers}"
    )
    head = (
        f"{'method':22}"
        + "".join(f"{f'{lb} ±{tolerance[lb]:.0%} min/max (in band)':>40}" for lb in labels)
        + f"{'moved':>10}{'value moved':>20}{'unassigned':>12}{'time s':>9}"
    )
    print(head)
    print("-" * len(head))
    for name, row in rows.items():
        cells = "".join(f"{f'{row[lb][0]:+.1%} / {row[lb][1]:+.1%} ({row[lb][2]:.0%})':>40}" for lb in labels)
        print(f"{name:22}{cells}{row['moved']:>10,}{row['moved_value']:>20,.0f}{row['unassigned']:>12,}{times[name]:>9.1f}")
    solver = summary["solver"]
    print(f"{'lower bound (moves)':22}{'':>{40 * len(labels)}}{solver['moves_lower_bound']:>10,}")
    print("\nstages: " + ", ".join(f"{k} {v:.1f}s" for k, v in stages.items()) + f"; total {total:.1f}s")
    print(f"components: {solver['status']}; moves gap to bound {solver['moves_gap']:.2%}")
    print(
        f"peak memory: {peak:,.0f} MiB (this process), {children:,.0f} MiB (largest worker or generator); "
        f"{sampler.peak_kib / 1024:,.0f} MiB PSS of all processes together (sampled every 0.5 s)"
    )
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
