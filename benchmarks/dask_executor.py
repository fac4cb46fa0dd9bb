"""Dask executor benchmark: the M book solved locally and on a Dask cluster, and the solve stage of a 10M-account book predicted.

    python benchmarks/dask_executor.py [--sample 40] [--skip-measure]

(Not ``benchmarks/distributed.py``: run as a script, this folder comes first on
``sys.path``, and a file of that name would stand in for the ``distributed``
package itself.)

1. Measured on this machine: the M book (100,000 accounts; generated once into
   benchmarks/out/M, as benchmarks/scale.py does) prepared once, then its
   optimize stage with the local executor on 1 and 2 worker processes and
   with the Dask executor on a ``LocalCluster`` of 2 single-threaded worker
   processes; wall time of each, and whether the plans are identical (they
   must be: owners and every objective's value and bound).
2. Predicted, not measured: the optimize stage of a 10M-account book on 8,
   32 and 128 Dask workers, one core each. The synthetic generator scales
   territories and users with accounts (1,000 accounts a territory from L
   up), so the book is taken as ten copies of the L book's components, their
   sizes from preparing the L book (nothing solved in full). The L book's 3
   largest components and a seeded random sample of the others are solved
   here, one at a time, shipped and built as a worker would (CPU seconds: a
   worker with a core of its own takes that long whatever else this shared
   machine does); every other component is given the sample's CPU seconds per
   candidate pair times its pairs (a ratio estimate of the total; its 90 %
   interval by resampling the sample). The components are placed largest
   first, each on the worker free first (a greedy longest-first list
   schedule, as the executor submits them). Printed per worker count: the
   predicted wall time, its interval, and its lower bound, max(critical path
   = the largest component, serial total / workers); beside it, as a
   cross-check, the same with the M run's own seconds a pair (its summary's
   ``solver.per_component``; a power law in pairs fits those poorly: the
   effort, not the size, bounds most components' time).
   The generator's own 10M book differs in one component: its strategic team
   (users / 40, holding the 0.15 % of giant accounts) is one component of a
   hundred times the L one's pairs, not ten copies of it; past
   ``MAX_MODEL_PAIRS`` it keeps its greedy start (no CP-SAT model), which the
   last lines say.
"""

from __future__ import annotations

import argparse
import datetime as dt
import heapq
import os
import pickle
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from assignment_engine import Engine, read_accounts, read_users
from assignment_engine.errors import RuleFileError
from assignment_engine.optimize import Problem, Solution, solve
from assignment_engine.optimize.component import MAX_MODEL_PAIRS, Component
from assignment_engine.optimize.executors import _parts
from assignment_engine.optimize.shipment import PairTables, ship
from assignment_engine.rules.compile import load_rules

OUT = Path(__file__).parent / "out"
COPIES = 10  # a 10M-account book as ten L books' worth of components
WORKERS = (8, 32, 128)


def book(preset: str) -> Path:
    """The preset's book, generated (again, when the generator changed since: same arguments, same book)."""
    target = OUT / preset
    try:
        fresh = (target / "accounts.csv").is_file() and bool(load_rules(target / "rules.yaml"))
    except RuleFileError:
        fresh = False
    if not fresh:
        subprocess.run([sys.executable, "-m", "assignment_engine.synthetic", "--preset", preset, "--out", str(target)], check=True)
    return target


def prepare(preset: str) -> tuple[Problem, float]:
    started = time.perf_counter()
    directory = book(preset)
    engine = Engine.from_file(directory / "rules.yaml")
    accounts = read_accounts(directory / "accounts.csv", engine.rules.field_types)
    users = read_users(directory / "users.csv", list(engine.rules.measures))
    problem = engine.prepare(accounts, users).problem
    return problem, time.perf_counter() - started


def same_plan(a: Solution, b: Solution) -> bool:
    def objectives(s: Solution) -> list[object]:
        return [[(o.name, o.value, o.bound, o.status) for o in c.objectives] + [c.moves, c.moves_bound] for c in s.components]

    return bool(np.array_equal(a.owner, b.owner)) and objectives(a) == objectives(b)


def measure(problem: Problem) -> tuple[Solution, list[tuple[str, int, float, str]]]:
    """The optimize stage, local on 1 and 2 workers and on a 2-worker LocalCluster; the one-worker solution."""
    from distributed import Client, LocalCluster  # noqa: PLC0415  the distributed extra

    rows = []
    started = time.perf_counter()
    reference = solve(problem, 1)
    rows.append(("local", 1, time.perf_counter() - started, "reference"))
    print(f"  local, 1 worker: {rows[-1][2]:.1f} s (load average {os.getloadavg()[0]:.1f})", flush=True)
    started = time.perf_counter()
    two = solve(problem, 2)
    rows.append(("local", 2, time.perf_counter() - started, "yes" if same_plan(reference, two) else "NO"))
    print(f"  local, 2 workers: {rows[-1][2]:.1f} s (load average {os.getloadavg()[0]:.1f})", flush=True)
    started = time.perf_counter()
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    client = Client(cluster)
    up = time.perf_counter() - started
    started = time.perf_counter()
    on_dask = solve(problem, 2, executor="dask", scheduler=client)
    rows.append(
        (
            "dask LocalCluster",
            2,
            time.perf_counter() - started,
            ("yes" if same_plan(reference, on_dask) else "NO") + f"; the cluster took {up:.1f} s to start",
        )
    )
    print(f"  dask, 2 workers: {rows[-1][2]:.1f} s (load average {os.getloadavg()[0]:.1f})", flush=True)
    client.close()
    cluster.close()
    return reference, rows


def power_law(pairs: np.ndarray, seconds: np.ndarray) -> tuple[float, float]:
    """seconds ≈ a × pairs^k, least squares in logs."""
    k, log_a = np.polyfit(np.log(pairs), np.log(np.maximum(seconds, 1e-3)), 1)
    return float(np.exp(log_a)), float(k)


def schedule(times: np.ndarray, workers: int) -> float:
    """The makespan of a greedy longest-first list schedule: each component, largest first, to the worker free first."""
    free = [0.0] * workers
    for t in np.sort(times)[::-1].tolist():
        heapq.heappush(free, heapq.heappop(free) + t)
    return max(free)


def solved_here(problem: Problem, part: Component) -> float:
    """CPU seconds to ship, unpickle, build and solve ``part``, as a worker would."""
    started = time.process_time()
    pickle.loads(pickle.dumps(ship(problem, part.users, part.units, part=part), protocol=5)).component().solve()
    return time.process_time() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=40, help="L components solved here beside its 3 largest (a seeded random sample)")
    parser.add_argument(
        "--skip-measure", action="store_true", help="only the prediction (the M cross-check then comes from one local M run)"
    )
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores (shared with other work), Python {platform.python_version()}; "
        f"{dt.date.today().isoformat()}; load average {os.getloadavg()[0]:.1f} at the start"
    )

    # 1. measured
    print("\npreparing the M book", flush=True)
    problem_m, prepare_m = prepare("M")
    parts_m, _ = _parts(problem_m)
    heavy_m = [p for p in parts_m if p.needs_solver]
    tables = PairTables(problem_m)
    started = time.perf_counter()
    shipments = [pickle.dumps(ship(problem_m, p.users, p.units, tables, p), protocol=5) for p in heavy_m]
    ship_seconds = time.perf_counter() - started
    shipped = sum(map(len, shipments))
    whole = sum(len(pickle.dumps(p, protocol=5)) for p in heavy_m)
    started = time.perf_counter()
    for blob in shipments:
        pickle.loads(blob).component()
    build_seconds = time.perf_counter() - started
    pairs_m = sum(len(p.pair_user) for p in heavy_m)
    print(f"M: {problem_m.n_units:,} units, {len(parts_m):,} components, {len(heavy_m):,} need CP-SAT; prepared in {prepare_m:.1f} s")
    print(
        f"shipped: {shipped / 2**20:.1f} MiB pickled for the {len(heavy_m)} components (as built components: {whole / 2**20:.1f} MiB); "
        f"packing and pickling them took {ship_seconds:.2f} s in the run's process, "
        f"unpickling and building them {build_seconds:.2f} s (on the workers)"
    )
    if args.skip_measure:
        reference = solve(problem_m, 1)
    else:
        print("solving", flush=True)
        reference, rows = measure(problem_m)
        print(f"\nMEASURED: the M book's optimize stage ({problem_m.n_units:,} units, {len(heavy_m)} components for CP-SAT), wall seconds")
        head = f"{'executor':20}{'workers':>8}{'optimize s':>12}  same plan as local × 1"
        print(head)
        print("-" * len(head))
        for name, workers, seconds, same in rows:
            print(f"{name:20}{workers:>8}{seconds:>12.1f}  {same}")

    # 2. predicted
    solver_m = [r for r in reference.components if r.objectives]
    pairs_solved = np.array([r.pairs for r in solver_m], dtype=np.float64)
    seconds_solved = np.array([r.seconds for r in solver_m])
    a, k = power_law(pairs_solved, seconds_solved)
    rate_m = float(seconds_solved.sum() / pairs_solved.sum())
    print(
        f"\nthe M run's per-component wall seconds (one worker, {len(solver_m)} components; "
        f"solver.per_component): {rate_m * 1e6:.0f} µs a candidate pair "
        f"in all; a power law fits them as seconds ≈ {a:.3g} × pairs^{k:.2f} (median error "
        f"{np.median(np.abs(a * pairs_solved**k / np.maximum(seconds_solved, 1e-3) - 1)):.0%}): "
        "size alone explains little, the effort bounds most of them"
    )
    print("preparing the L book (component sizes; nothing solved in full)", flush=True)
    problem_l, prepare_l = prepare("L")
    parts_l, _ = _parts(problem_l)
    heavy_l = [p for p in parts_l if p.needs_solver]
    started = time.perf_counter()
    for p in parts_l:
        if not p.needs_solver:
            p.solve()
    trivial_seconds = time.perf_counter() - started
    pairs = np.array([len(p.pair_user) for p in heavy_l], dtype=np.float64)
    order = np.argsort(-pairs, kind="stable")
    largest = order[:3].tolist()
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(order[3:], size=min(args.sample, len(order) - 3), replace=False)).tolist()
    print(
        f"L: {problem_l.n_units:,} units, {len(parts_l):,} components, {len(heavy_l):,} need CP-SAT (largest {int(pairs.max()):,} pairs, "
        f"median {int(np.median(pairs)):,}); prepared in {prepare_l:.1f} s; solving {len(largest) + len(sample)} of its components here",
        flush=True,
    )
    cpu = np.full(len(heavy_l), np.nan)
    strategic = max(range(len(heavy_l)), key=lambda i: len(heavy_l[i].users))  # the strategic team: the most users
    for i in sorted({*largest, *sample, strategic}):
        cpu[i] = solved_here(problem_l, heavy_l[i])
    print(f"{'L component':>12}{'units':>8}{'users':>7}{'pairs':>9}{'CPU s':>8}")
    for i in largest + sample[:12]:
        part = heavy_l[i]
        print(f"{i:>12}{len(part.units):>8,}{len(part.users):>7}{int(pairs[i]):>9,}{cpu[i]:>8.2f}")
    print(f"(… {len(sample) - 12} more sampled)" if len(sample) > 12 else "")
    rate = cpu[sample].sum() / pairs[sample].sum()
    rest = np.isnan(cpu)
    rates = []
    for _ in range(400):  # the ratio estimate, resampled
        pick = rng.choice(sample, size=len(sample), replace=True)
        rates.append(cpu[pick].sum() / pairs[pick].sum())
    low_rate, high_rate = np.quantile(rates, [0.05, 0.95])

    def book_times(per_pair: float) -> np.ndarray:
        times = np.where(rest, pairs * per_pair, cpu)
        return np.tile(times, COPIES)

    from_m = book_times(rate_m)  # the cross-check: the M run's seconds a pair for the components not solved here
    times = book_times(rate)
    serial, critical = float(times.sum()), float(times.max())
    print(
        f"\nPREDICTED, not measured: the optimize stage of a 10M-account book = {COPIES} × the L book's components "
        f"({COPIES * len(parts_l):,} components, {COPIES * len(heavy_l):,} for CP-SAT, {COPIES * int(pairs.sum()):,} candidate pairs), "
        f"on Dask workers with a core each"
    )
    print(
        f"per-component seconds: the {len(largest) + len(sample)} L components solved here as measured (CPU), the others "
        f"{rate * 1e6:.0f} µs a candidate pair (the random sample's ratio; 90 % interval {low_rate * 1e6:.0f}–{high_rate * 1e6:.0f} µs)"
    )
    head = f"{'Dask workers':>12}{'predicted wall s':>18}{'90 % interval':>16}{'lower bound s':>15}{'at M rate s':>15}"
    print(head)
    print("-" * len(head))
    for workers in WORKERS:
        span = schedule(times, workers)
        interval = f"{schedule(book_times(low_rate), workers):.0f}–{schedule(book_times(high_rate), workers):.0f}"
        print(f"{workers:>12}{span:>18.1f}{interval:>16}{max(critical, serial / workers):>15.1f}{schedule(from_m, workers):>15.1f}")
    print(
        f"critical path: the largest component, {int(pairs.max()):,} candidate "
        f"pairs and {len(heavy_l[order[0]].users)} users, {critical:.1f} s measured"
    )
    print(f"serial total (one worker): {serial:,.0f} s = {serial / 3600:.2f} h")
    strategic_l = heavy_l[strategic]
    units_10m, users_10m = COPIES * len(strategic_l.units), COPIES * len(strategic_l.users)
    big = units_10m * users_10m
    print(
        "the generator's own 10M book: its strategic team is one component "
        f"of about {units_10m:,} units × {users_10m:,} users = {big:,} pairs "
        f"(L's: {len(strategic_l.pair_user):,} pairs, {cpu[strategic]:.1f} s), "
        + (
            f"past MAX_MODEL_PAIRS ({MAX_MODEL_PAIRS:,}): it would keep its greedy start, "
            "unproven (status GREEDY), in the time of the greedy alone "
            "(not measured here); the critical path would then be the next largest component"
            if big > MAX_MODEL_PAIRS
            else "within MAX_MODEL_PAIRS"
        )
    )
    ship_10m = ship_seconds / max(pairs_m, 1) * COPIES * float(pairs.sum())
    print(
        "not in these figures, serial in the run's process: reading, "
        f"matching and building the problem ({COPIES} × L's {prepare_l:.0f} s here ≈ "
        f"{COPIES * prepare_l:.0f} s), packing the components (≈ {ship_10m:.0f} s, "
        "while the first ones solve), the components without a choice "
        f"({COPIES} × {trivial_seconds:.1f} s), building and writing the plan"
    )
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
