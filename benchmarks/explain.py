"""Explain from a saved plan: time per account and deal, against re-running the plan.

    python benchmarks/explain.py --preset S|M [--samples 20]

The book is generated once into benchmarks/out/<preset>/ and planned once into
benchmarks/out/<preset>-saved/ (with opportunities). Printed: the time of
``explain_saved`` for accounts spread over the file and for deals (min, median,
max), beside a baseline timed in the same run (reading the plan's
accounts.jsonl line by line) and the time the plan took to compute, which is
what ``explain`` without ``--plan`` pays.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from scale import OUT, generate

from assignment_engine import assign_files
from assignment_engine.review.explain import explain_saved


def saved_plan(preset: str) -> Path:
    """The preset's book planned once into benchmarks/out/<preset>-saved/: with opportunities and the report, except
    for L (1M accounts, used by benchmarks/route.py), planned without either: its 600k deals' overlay assignment took
    more than 12 GiB per worker and was killed for memory on a 23 GiB machine, and routing reads neither."""
    book = generate(preset)
    saved = OUT / f"{preset}-saved"
    if not (saved / "plan.json").is_file():
        extra = {"report": False} if preset == "L" else {"opportunities": book / "opportunities.csv"}
        assign_files(book / "rules.yaml", book / "accounts.csv", book / "users.csv", saved, workers=os.cpu_count() or 1, **extra)
    return saved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="M", choices=["S", "M"])
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()
    started = time.perf_counter()
    reused = (OUT / f"{args.preset}-saved" / "plan.json").is_file()
    saved = saved_plan(args.preset)
    planned = "not timed (plan reused)" if reused else f"{time.perf_counter() - started:.1f} s"

    def ids(table: str, key: str) -> list[str]:
        with (saved / f"{table}.jsonl").open(encoding="utf-8") as handle:
            every = [json.loads(line)[key] for line in handle]
        step = max(1, len(every) // args.samples)
        return every[::step][: args.samples]

    started = time.perf_counter()
    with (saved / "accounts.jsonl").open(encoding="utf-8") as handle:
        lines = sum(1 for _ in handle)
    baseline = time.perf_counter() - started

    rows = []
    for kind, table, key in (("account", "accounts", "account_id"), ("deal", "opportunities", "opportunity_id")):
        times = []
        for record_id in ids(table, key):
            started = time.perf_counter()
            explain_saved(saved, record_id)
            times.append(time.perf_counter() - started)
        rows.append((kind, len(times), min(times), statistics.median(times), max(times)))

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; book {args.preset}: {lines:,} accounts"
    )
    print(f"baseline (read the plan's accounts.jsonl line by line): {baseline:.3f} s; computing the plan: {planned}")
    print(f"{'record':<8} {'samples':>7} {'min s':>7} {'median s':>9} {'max s':>7} {'median / baseline':>18}")
    for kind, n, low, mid, high in rows:
        print(f"{kind:<8} {n:>7} {low:>7.3f} {mid:>9.3f} {high:>7.3f} {mid / baseline:>18.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
