"""Routing benchmark (issue 12): one record in-process on 1,000 territories, and 10,000 new accounts into a 1M-account plan.

    python benchmarks/route.py [--quick] [--part 1|2] [--profile]

Part 1 generates a rule file of 20 region territories (an ``inherit: true``
country rule each) × 50 postal-range children (2–3 owner members per leaf,
balance on revenue and accounts), plans a generated book on it once with
``assign_files`` (cached in benchmarks/out/route-1000-<n>/), loads it with
``Plan.load``, then routes fresh records one by one with ``Router.route``
(owner and reason), timing every call (wall and thread CPU time); beside it, in the same run: a trivially
cheap loop over the same records (``dict`` copy + ``hash``), ``Engine.match``
(the whole-table matcher, the old path) and the router on a SQLite state file.

Part 2 routes 10,000 new accounts (the L book's generator, another seed, ids
``N…``) into the saved plan of the L preset (1M accounts; planned once into
benchmarks/out/L-saved/ by explain.py's ``saved_plan``, 8–16 minutes, then
reused) through the CLI as a subprocess, against the CLI's import time and a
plain ``csv`` read of the same file; times the same steps in-process (where
the time goes); then checks the balance bands of every user who received
records: inside before (the plan) and after (plan + what they received), and
whether another member could have stayed inside a band the owner left (the
decisions replayed in file order with the router's own score, and with
least_loaded's earlier score beside them). The results are in docs/routing.md,
"Measured".

``--quick``: smaller sizes, and part 2 on the S preset instead of L.
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import datetime as dt
import math
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from explain import saved_plan
from scale import OUT

from assignment_engine import Engine, Plan, assign_files
from assignment_engine.files.manifest import Manifest
from assignment_engine.files.readers import read_accounts, read_users
from assignment_engine.files.rows import read_summary
from assignment_engine.matching.records import typed
from assignment_engine.routing.router import Routed, Router
from assignment_engine.routing.state import MemoryState, SqliteState
from assignment_engine.rules.compile import BalanceSpec, load_rules
from assignment_engine.synthetic import PRESETS, generate_book

Score = Callable[[str, dict[str, dict[str, float]], dict[str, float]], tuple[float, ...]]  # a routing policy: user, loads, addition

# fmt: off
COUNTRIES = [
    "US", "CA", "MX", "BR", "AR", "CL", "CO", "PE", "GB", "IE", "DE", "AT", "CH", "FR", "BE", "NL", "LU", "ES", "PT", "IT",
    "NO", "SE", "DK", "FI", "IS", "PL", "CZ", "SK", "HU", "RO", "BG", "GR", "TR", "IL", "JP", "KR", "CN", "TW", "HK", "SG",
    "MY", "TH", "VN", "PH", "ID", "IN", "AU", "NZ", "EG", "MA", "KE", "NG",
]
# fmt: on
UNCOVERED = ["ZA", "AE", "SA", "QA"]  # no territory covers them: matched nothing, unassigned
DAY = dt.date(2026, 12, 1)


# -- part 1: one record in-process ------------------------------------------------------


def rules_1000(n_regions: int, n_ranges: int, seed: int) -> tuple[str, dict[str, list[str]], list[str]]:
    """The rule file (YAML), each region's countries, and the users (2–3 owner members per leaf from its region's pool)."""
    rng = np.random.default_rng(seed)
    per = len(COUNTRIES) // n_regions
    regions = {f"r{r + 1:02d}": COUNTRIES[r * per : (r + 1) * per] for r in range(n_regions)}
    cuts = np.linspace(0, 100_000, n_ranges + 1).astype(int)
    users: list[str] = []
    lines = [
        "version: 1",
        "fields: {country: string, postal_code: string, annual_revenue: number}",
        "measures:",
        "  revenue: {field: annual_revenue}",
        "  accounts: {constant: 1}",
        "territory_types: [{name: geo, priority: 1}]",
        "territories:",
    ]
    for region, countries in regions.items():
        codes = ", ".join(f'"{c}"' for c in countries)
        lines += [
            f"  - id: {region}",
            "    type: geo",
            f"    rules: [{{name: {region}-countries, inherit: true, when: {{country: {{in: [{codes}]}}}}}}]",
            "    children:",
        ]
        pool = [f"u{len(users) + i + 1:05d}" for i in range(round(n_ranges * 1.2))]  # a seller covers about two postal ranges
        users += pool
        for j in range(n_ranges):
            members = sorted(rng.choice(pool, size=int(rng.integers(2, 4)), replace=False))
            low, high = f"{cuts[j]:05d}", f"{cuts[j + 1] - 1:05d}"
            lines += [
                f"      - id: {region}-p{j + 1:02d}",
                f'        rules: [{{name: postal-{j + 1:02d}, when: {{postal_code: {{between: ["{low}", "{high}"]}}}}}}]',
                "        members: [" + ", ".join(f"{{user: {u}}}" for u in members) + "]",
            ]
    lines += [
        "assignment:",
        '  as_of: "2026-11-22"',
        "  balance:",
        "    - {measure: revenue, tolerance: 0.05}",
        "    - {measure: accounts, tolerance: 0.10}",
    ]
    return "\n".join(lines) + "\n", regions, users


def records_1000(n: int, regions: dict[str, list[str]], users: list[str], prefix: str, seed: int, owners: bool) -> list[dict[str, object]]:
    """Accounts as a CRM holds them: 97% in a covered country, uniform 5-digit postal codes, Pareto-like revenue."""
    rng = np.random.default_rng(seed)
    covered = [c for cs in regions.values() for c in cs]
    pool = covered + UNCOVERED
    p = np.array([0.97 / len(covered)] * len(covered) + [0.03 / len(UNCOVERED)] * len(UNCOVERED))
    country = rng.choice(pool, size=n, p=p / p.sum())
    postal = rng.integers(0, 100_000, n)
    revenue = np.round(np.exp(rng.normal(13.0, 1.5, n)), -2)
    owner = rng.choice(users, size=n) if owners else np.full(n, None, dtype=object)
    return [
        {
            "id": f"{prefix}{i + 1:07d}",
            "owner_id": owner[i],
            "country": str(country[i]),
            "postal_code": f"{postal[i]:05d}",
            "annual_revenue": float(revenue[i]),
        }
        for i in range(n)
    ]


def percentiles(ns: list[int]) -> dict[str, float]:
    """p50, p90, p99 and max in microseconds (nearest rank on the sorted times)."""
    s = sorted(ns)

    def at(q: float) -> float:
        return s[min(len(s) - 1, math.ceil(q * len(s)) - 1)] / 1000

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": s[-1] / 1000}


def plan_1000(n_book: int) -> tuple[Path, str]:
    """The generated book planned once by ``assign_files`` into benchmarks/out/route-1000-<n>/ (reused while the
    generated files are unchanged); returns the plan directory and how it was obtained."""
    text, regions, user_ids = rules_1000(20, 50, seed=12)
    target = OUT / f"route-1000-{n_book}"
    book, saved = target / "book", target / "plan"
    rules = book / "rules.yaml"
    if (saved / "plan.json").is_file() and rules.is_file() and rules.read_text(encoding="utf-8") == text:
        return saved, f"reused, made {(time.time() - (saved / 'plan.json').stat().st_mtime) / 3600:.1f} h ago"
    book.mkdir(parents=True, exist_ok=True)
    records = records_1000(n_book, regions, user_ids, "A", seed=1, owners=True)
    with (book / "accounts.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    with (book / "users.csv").open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([("id", "weight"), *((u, "0.5" if k % 20 == 0 else "1") for k, u in enumerate(user_ids))])
    rules.write_text(text, encoding="utf-8")
    started = time.perf_counter()
    workers = os.cpu_count() or 1
    assign_files(rules, book / "accounts.csv", book / "users.csv", saved, report=False, workers=workers)
    return (
        saved,
        f"planned now by assign_files in {time.perf_counter() - started:.0f} s (workers {workers}, default effort)",
    )


def timed_calls(call, records: list[dict[str, object]]) -> tuple[list[int], list[int]]:
    """Wall and thread CPU time of ``call(record)`` for each record, in ns."""
    wall, cpu = [], []
    for r in records:
        t, c = time.perf_counter_ns(), time.thread_time_ns()
        call(r)
        cpu.append(time.thread_time_ns() - c)
        wall.append(time.perf_counter_ns() - t)
    return wall, cpu


def part1(quick: bool, profile: bool) -> None:
    n_book, n_route, n_match = (10_000, 5_000, 50) if quick else (50_000, 20_000, 100)
    print(f"\n== part 1: Router.route in-process, 20 regions × 50 postal ranges; load average {_load()} at the start")
    _, regions, user_ids = rules_1000(20, 50, seed=12)
    saved, how = plan_1000(n_book)
    engine = Engine.from_file(saved.parent / "book" / "rules.yaml")
    started = time.perf_counter()
    plan = Plan.load(saved)
    loaded = time.perf_counter() - started
    fresh = records_1000(n_route, regions, user_ids, "N", seed=2, owners=False)
    leaves = sum(1 for t in engine.rules.territories.values() if not t.children)
    print(
        f"rule file: {len(engine.rules.territories):,} territories ({leaves:,} leaves), {len(user_ids):,} users; "
        f"book {n_book:,} accounts; plan {how}, Plan.load {loaded:.1f} s; {n_route:,} fresh records, each routed once per row"
    )

    rows: list[tuple[str, list[int], list[int]]] = []

    def baseline(r: dict[str, object]) -> None:  # as cheap as touching the record gets
        hash(tuple(dict(r).items()))

    rows.append(("baseline: dict copy + hash", *timed_calls(baseline, fresh)))
    statuses: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        states = (
            ("Router.route, memory state", MemoryState),
            ("Router.route, SQLite state file", lambda: SqliteState(Path(tmp) / "state.db", "bench")),
        )
        for label, make in states:
            store = make()
            started = time.perf_counter()
            router = engine.router(plan, store)
            built = time.perf_counter() - started
            routed: list[Routed] = []
            rows.append(
                (
                    f"{label} (built in {built * 1000:.0f} ms)",
                    *timed_calls(lambda r, router=router, routed=routed: routed.append(router.route(r, today=DAY)), fresh),
                )
            )
            assert all(x.reason for x in routed)
            if not statuses:
                for x in routed:
                    statuses[x.status] = statuses.get(x.status, 0) + 1
            if isinstance(store, SqliteState):
                store.close()
    rows.append(("Engine.match (whole-table matcher, the old path)", *timed_calls(engine.match, fresh[:n_match])))

    b99 = percentiles(rows[0][1])["p99"]
    tenth = n_route // 10
    head = (
        f"{'path':58}{'records':>8}{'p50 µs':>9}{'p90 µs':>9}{'p99 µs':>9}{'max µs':>10}{'p99 first/last 10%':>20}"
        f"{'CPU p50/p99 µs':>16}{'> 1 ms (CPU > 1 ms)':>21}{'p99 / baseline':>16}{'p99 ≤ 1 ms':>12}"
    )
    print(head)
    print("-" * len(head))
    for label, wall, cpu in rows:
        p, c = percentiles(wall), percentiles(cpu)
        first, last = percentiles(wall[:tenth])["p99"], percentiles(wall[-tenth:])["p99"]
        slow, slow_cpu = sum(w > 1_000_000 for w in wall), sum(x > 1_000_000 for x in cpu)
        cpu_cell, slow_cell = f"{c['p50']:.0f} / {c['p99']:.0f}", f"{slow:,} ({slow_cpu:,})"
        print(
            f"{label:58}{len(wall):>8,}{p['p50']:>9.1f}{p['p90']:>9.1f}{p['p99']:>9.1f}{p['max']:>10.1f}{f'{first:.0f} / {last:.0f}':>20}"
            f"{cpu_cell:>16}{slow_cell:>21}{p['p99'] / b99:>16,.0f}{'yes' if p['p99'] <= 1000 else 'NO':>12}"
        )
    print(
        f"load average {_load()} at the end; wall time by perf_counter_ns, "
        "CPU time by thread_time_ns (a call slow in wall time only was preempted)"
    )
    print("routed (memory state): " + ", ".join(f"{k} {v:,}" for k, v in sorted(statuses.items())))

    for label, make in (("memory state", MemoryState),) if profile else ():
        router = engine.router(plan, make())
        profiler = cProfile.Profile()
        profiler.enable()
        for r in fresh:
            router.route(r, today=DAY)
        profiler.disable()
        print(f"\ncProfile of {len(fresh):,} Router.route calls ({label}), by own time:")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(14)


# -- part 2: the CLI on a 1M-account plan -----------------------------------------------


def new_accounts(preset: str, n: int, path: Path, saved: Path) -> dict[str, float]:
    """``n`` new accounts in the preset book's format (its generator, seed 12, ids N…, no owner, lock or exclusion);
    returns id → revenue."""
    params = {**PRESETS[preset], "n_accounts": n}
    book = generate_book(**params, seed=12)
    rules = (saved.parent / preset / "rules.yaml").read_text(encoding="utf-8")
    assert book.rules_yaml == rules, "the generator no longer writes the preset's rule file"
    columns = dict(book.accounts)
    columns["id"] = ["N" + x[1:] for x in columns["id"]]
    columns["parent_id"] = ["N" + x[1:] if x else "" for x in columns["parent_id"]]
    for name in ("owner_id", "locked", "excluded"):
        columns[name] = [""] * n
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(zip(*columns.values(), strict=True))
    return {i: float(v) for i, v in zip(columns["id"], columns["annual_revenue"], strict=True)}


def timed(command: list[str], repeat: int, before=None) -> list[float]:
    out = []
    for _ in range(repeat):
        if before is not None:
            before()
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        out.append(time.perf_counter() - started)
    return out


def part2(quick: bool) -> None:
    preset, n_new, repeat = ("S", 1_000, 2) if quick else ("L", 10_000, 3)
    print(f"\n== part 2: `assignment-engine route` on the {preset} preset's saved plan; load average {_load()}")
    reused = (OUT / f"{preset}-saved" / "plan.json").is_file()
    started = time.perf_counter()
    saved = saved_plan(preset)
    age = time.time() - (saved / "plan.json").stat().st_mtime
    print(f"plan {saved}: " + (f"reused, made {age / 3600:.1f} h ago" if reused else f"made now in {time.perf_counter() - started:.0f} s"))
    work = OUT / f"route-{preset}"
    work.mkdir(parents=True, exist_ok=True)
    new = work / "new.csv"
    revenue = new_accounts(preset, n_new, new, saved)

    cli = Path(sys.executable).with_name("assignment-engine")
    command = [str(cli)] if cli.is_file() else [sys.executable, "-m", "assignment_engine"]
    out, out_state, state = work / "out", work / "out-state", work / "state.db"

    def fresh_state() -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{state}{suffix}").unlink(missing_ok=True)

    startup = timed([sys.executable, "-c", "import assignment_engine.cli"], repeat)
    reads = []
    for _ in range(repeat):
        started = time.perf_counter()
        with new.open(encoding="utf-8", newline="") as handle:
            n_rows = len(list(csv.reader(handle))) - 1
        reads.append(time.perf_counter() - started)
    route = [*command, "route", "--plan", str(saved), "--accounts", str(new), "--today", DAY.isoformat(), "-q"]
    memory = timed([*route, "--out", str(out)], repeat)
    sqlite = timed([*route, "--state", str(state), "--out", str(out_state)], repeat, before=fresh_state)

    base = statistics.median(startup)
    rows = [
        ("baseline: python -c 'import assignment_engine.cli'", startup),
        (f"baseline: csv.reader over new.csv ({n_rows:,} rows, in-process)", reads),
        (f"route {n_new:,} accounts, memory state", memory),
        (f"route {n_new:,} accounts, --state (fresh SQLite file)", sqlite),
    ]
    head = f"{'run':64}{'median s':>10}{'min s':>8}{'max s':>8}{'median / import':>17}{'≤ 10 s':>8}"
    print(f"runs: {repeat} each, wall time of the subprocess; machine {_machine()}")
    print(head)
    print("-" * len(head))
    for label, ts in rows:
        mid = statistics.median(ts)
        target = ("yes" if mid <= 10 else "NO") if label.startswith("route") else ""
        print(f"{label:64}{mid:>10.2f}{min(ts):>8.2f}{max(ts):>8.2f}{mid / base:>17.1f}{target:>8}")
    breakdown(saved, new)
    bands(saved, out, revenue)


def breakdown(saved: Path, new: Path) -> None:
    """Where a ``route`` run's time goes, the same steps timed in this process (imports are the baseline above)."""
    steps: list[tuple[str, float]] = []
    started = time.perf_counter()
    manifest = Manifest.verified(saved, inputs=("rules", "users"))
    steps.append(("Manifest.verified (hashes the plan's files and inputs)", time.perf_counter() - started))
    started = time.perf_counter()
    router = Router.from_directory(saved, None, manifest)
    steps.append(("Router.from_directory (rules, users, summary)", time.perf_counter() - started))
    started = time.perf_counter()
    table = read_accounts(new, router.rules.field_types, router.rules.inputs["accounts"])
    values = [typed(table.record(i), router.rules.field_types) for i in range(len(table))]
    steps.append(("read_accounts + typed", time.perf_counter() - started))
    started = time.perf_counter()
    for v in values:
        router.matcher.match(dict(v), router.run_date)
    steps.append((f"RecordMatcher.match only, {len(values):,} records", time.perf_counter() - started))
    started = time.perf_counter()
    for i, v in enumerate(values):
        router.route_values(table.ids[i], dict(v), today=DAY)
    steps.append((f"Router.route_values (match + choose + state), {len(values):,} records, memory state", time.perf_counter() - started))
    nodes = len(router.rules.territories)
    print(f"\nwhere the time goes, in this process (rule file of {nodes:,} territories):")
    for label, seconds in steps:
        print(f"  {label:72}{seconds:>7.2f} s")


def bands(saved: Path, out: Path, revenue: dict[str, float]) -> None:
    """Receivers inside each balance band before (the plan) and after (plan + what they received), for the owners
    ``route`` chose and for an alternative choice replayed on the same records."""
    manifest = Manifest.verified(saved, inputs=("rules", "users"))
    rules = load_rules(manifest.path("rules"))
    users = {u.id: u for u in read_users(manifest.path("users"), list(rules.measures), rules.inputs["users"])}
    assert not any(u.capacity or u.max_new_per_day is not None or u.away_until is not None for u in users.values()), (
        "the replay ignores caps"
    )
    specs = list(rules.balance)
    plan_load: dict[str, dict[str, float]] = {}
    fair: dict[str, dict[str, float]] = {}
    for entry in read_summary(saved)["users"]:
        plan_load[entry["user_id"]] = {k: float(e["after"]) for k, e in entry["loads"].items()}
        fair[entry["user_id"]] = {k: float(e["fair_share"]) for k, e in entry["loads"].items() if e.get("fair_share")}
    with (out / "accounts.csv").open(encoding="utf-8", newline="") as handle:
        routed = list(csv.DictReader(handle))
    statuses: dict[str, int] = {}
    for r in routed:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1

    def adds(account: str) -> dict[str, float]:  # as Router._adds: tier entries get nothing (one record's tier is not known)
        measure = {"revenue": revenue[account], "accounts": 1.0}
        return {s.label: measure[s.measure] if s.tier is None and s.segment is None else 0.0 for s in specs}

    def share(user: str, load: dict[str, dict[str, float]], label: str, extra: float) -> float:
        return (plan_load[user].get(label, 0.0) + load[user].get(label, 0.0) + extra) / fair[user][label]

    router = Router.from_directory(saved, None, manifest)

    def least_loaded(user: str, load: dict[str, dict[str, float]], add: dict[str, float]) -> tuple[float, ...]:
        return router._share_after(user, add, load[user])  # the router's own score: what route did

    def raw_share(user: str, load: dict[str, dict[str, float]], add: dict[str, float]) -> tuple[float, float]:
        """The score before commit 0470868: the largest share of fair share after the addition over every balance entry."""
        shares = [share(user, load, s.label, add[s.label]) for s in specs if s.label in fair[user]]
        return (max(shares), sum(shares)) if shares else (math.inf, math.inf)

    results = {}
    agree = 0
    policies: list[tuple[str, Score]] = [("least_loaded, as routed", least_loaded), ("raw largest share (before 0470868)*", raw_share)]
    for policy, score in policies:
        load: dict[str, dict[str, float]] = {u: {} for u in plan_load}
        receivers: set[str] = set()
        exits = avoidable = 0
        examples: list[str] = []
        for r in routed:
            tid = r["territory_id"]
            if r["status"] != "routed" or not tid:
                continue
            add = adds(r["account_id"])
            members = [u for u in rules.territories[tid].owners if u in users and users[u].active and users[u].available]
            scores = {u: score(u, load, add) for u in members}
            owner = min(members, key=scores.__getitem__)
            if score is least_loaded:
                agree += owner == r["owner_id"]
            left = [
                s.label
                for s in specs
                if s.label in fair[owner]
                and _inside(share(owner, load, s.label, 0), s)
                and not _inside(share(owner, load, s.label, add[s.label]), s)
            ]
            if left:
                exits += 1
                keep = [
                    u
                    for u in members
                    if u != owner
                    and all(
                        share(u, load, s.label, add[s.label]) <= 1 + s.tolerance + 1e-9
                        for s in specs
                        if s.label in fair[u] and add[s.label]
                    )
                ]
                if keep:
                    avoidable += 1
                    if len(examples) < 2:
                        shown = {
                            u: ", ".join(
                                f"{s.label} {share(u, load, s.label, 0):.1%}→{share(u, load, s.label, add[s.label]):.1%}"
                                for s in specs
                                if s.label in fair[u]
                            )
                            for u in (owner, keep[0])
                        }
                        examples.append(
                            f"{r['account_id']} ({add['revenue']:,.0f} revenue) to {owner}, who left {'/'.join(left)} ({shown[owner]}); "
                            f"{keep[0]} would have stayed within every band's upper bound ({shown[keep[0]]})"
                        )
            receivers.add(owner)
            for label, v in add.items():
                load[owner][label] = load[owner].get(label, 0.0) + v
        rows = []
        for s in specs:
            states = [
                (_inside(plan_load[u].get(s.label, 0.0) / fair[u][s.label], s), _inside(share(u, load, s.label, 0), s))
                for u in receivers
                if s.label in fair[u]
            ]
            rows.append(
                (
                    s,
                    len(states),
                    sum(a for a, _ in states),
                    sum(b for _, b in states),
                    sum(a and not b for a, b in states),
                    sum(b and not a for a, b in states),
                )
            )
        results[policy] = (len(receivers), rows, exits, avoidable, examples)

    n_routed = statuses.get("routed", 0)
    print(
        "\nbalance bands of the users who received records "
        f"({', '.join(f'{k} {v:,}' for k, v in sorted(statuses.items()))}); fair shares and tolerances "
        f"as in the plan; replaying least_loaded gives route's owner for {agree:,} of {n_routed:,} routed records"
    )
    head = f"{'choice':38}{'band':22}{'receivers':>10}{'inside before':>15}{'inside after':>14}{'went outside':>14}{'came inside':>13}"
    print(head)
    print("-" * len(head))
    for policy, (_, rows, _, _, _) in results.items():
        for s, count, before, after, out_, in_ in rows:
            print(f"{policy:38}{f'{s.label} ±{s.tolerance:.0%}':22}{count:>10,}{before:>15,}{after:>14,}{out_:>14,}{in_:>13,}")
    for policy, (n, _, exits, avoidable, examples) in results.items():
        print(
            f"{policy}: {n:,} receivers; {exits:,} records took their owner out of a band they were in, "
            f"{avoidable:,} of them when another member would have stayed within every upper bound (avoidable)"
        )
        for line in examples:
            print("  e.g. " + line)
    print(
        "* least_loaded's earlier score, replayed on the same records: the member whose largest share of fair share after the addition, "
        "over every balance entry (tier entries included), is smallest"
    )


def _inside(share: float, spec: BalanceSpec) -> bool:
    return abs(share - 1) <= spec.tolerance + 1e-9


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes; part 2 on the S preset, not L")
    parser.add_argument("--part", type=int, choices=[1, 2], default=None, help="only this part")
    parser.add_argument("--profile", action="store_true", help="cProfile the router in part 1")
    args = parser.parse_args()
    print(f"{dt.datetime.now():%Y-%m-%d %H:%M}; machine {_machine()}")
    if args.part in (None, 1):
        part1(args.quick, args.profile)
    if args.part in (None, 2):
        part2(args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
