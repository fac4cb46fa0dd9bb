"""Incremental replans: ``assign --from-plan`` against the full run, on a synthetic book with 1 % of it changed.

    python benchmarks/incremental.py [--preset M] [--workers 2] [--effort SECONDS]

The book is generated once (deterministically) into benchmarks/out/incremental/<preset>/ by
``python -m assignment_engine.synthetic`` in a separate process. The full run plans it end to end
(read, match, solve, write the plan directory, as ``assign`` does). Then 1 % of the book changes,
deterministically: 0.5 % new accounts (the fields of existing ones, no owner, no parent) and 0.5 % of
the accounts with a changed revenue; ``assign --from-plan`` plans the changed book against the full
run's plan. Printed: both times, their ratio, what was replanned and why, and the check that no
account outside the replanned set has another owner than in the full run's plan, that every account
appears once in the new plan and that families are together.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from assignment_engine import assign_files

OUT = Path(__file__).parent / "out" / "incremental"


def generate(preset: str) -> Path:
    target = OUT / preset
    if not (target / "accounts.csv").is_file():
        subprocess.run([sys.executable, "-m", "assignment_engine.synthetic", "--preset", preset, "--out", str(target)], check=True)
    return target


def change(book: Path, target: Path, share: float, seed: int = 1) -> tuple[set[str], set[str]]:
    """A copy of the book's accounts file with ``share`` / 2 new accounts and ``share`` / 2 revenues changed; their ids."""
    with (book / "accounts.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    rng = np.random.default_rng(seed)
    n = len(rows)
    half = max(1, round(n * share / 2))
    changed = set()
    for k in sorted(rng.choice(n, size=half, replace=False).tolist()):
        row = rows[k]
        revenue = float(row["annual_revenue"] or 0)
        row["annual_revenue"] = str(round(revenue * 1.5 + 100_000))  # any revenue: a new value
        changed.add(row["id"])
    new = []
    for j, k in enumerate(rng.choice(n, size=half, replace=False).tolist(), start=1):
        row = {**rows[k], "id": f"N{j:07d}", "name": f"New Co {j}", "parent_id": "", "owner_id": "", "locked": "", "excluded": ""}
        new.append(row)
    target.mkdir(parents=True, exist_ok=True)
    with (target / "accounts.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows + new)
    return {r["id"] for r in new}, changed


def rows_of(plan: Path) -> dict[str, dict[str, object]]:
    with (plan / "accounts.jsonl").open(encoding="utf-8") as handle:
        return {r["account_id"]: r for r in map(json.loads, handle)}


def cpu_seconds() -> float:
    """User and system time of this process and of its finished children (worker processes)."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))


def timed(label: str, **kwargs: object) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one assign_files call; prints when each progress message came."""
    stages: dict[str, float] = {}
    cpu = cpu_seconds()
    start = time.perf_counter()

    def say(message: str) -> None:
        stages[message.split(" ")[0] + " " + message.split(" ")[1]] = time.perf_counter() - start

    assign_files(progress=say, report=True, **kwargs)  # type: ignore[arg-type]
    total = time.perf_counter() - start
    cpu = cpu_seconds() - cpu
    print(f"{label}: {total:.1f}s, CPU {cpu:.1f}s  (" + ", ".join(f"{k} at {v:.1f}s" for k, v in stages.items()) + ")", flush=True)
    return total, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="M", choices=["S", "M", "L"])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--effort", type=float, default=None, help="solver effort per component (deterministic seconds; default: the rule file's)"
    )
    parser.add_argument("--share", type=float, default=0.01, help="share of the book new or changed (half each)")
    args = parser.parse_args()
    book = generate(args.preset)
    changed_book = OUT / f"{args.preset}-changed"
    new_ids, changed_ids = change(book, changed_book, args.share)
    full_plan, incremental_plan = OUT / f"{args.preset}-plan", OUT / f"{args.preset}-incremental-plan"
    common = {"rules": book / "rules.yaml", "users": book / "users.csv", "workers": args.workers, "effort": args.effort}

    full, full_cpu = timed("full run", accounts=book / "accounts.csv", out=full_plan, **common)
    incremental, incremental_cpu = timed(
        "incremental run", accounts=changed_book / "accounts.csv", out=incremental_plan, from_plan=full_plan, **common
    )

    before, after = rows_of(full_plan), rows_of(incremental_plan)
    with (incremental_plan / "summary.json").open(encoding="utf-8") as handle:
        summary = json.load(handle)
    replanned = {a for a, r in after.items() if r["replanned"]}
    outside = [a for a, r in after.items() if a not in replanned and a in before and r["owner_id"] != before[a]["owner_id"]]
    lines = sum(1 for _ in (incremental_plan / "accounts.jsonl").open(encoding="utf-8"))
    missed = [
        a
        for a in new_ids | changed_ids
        if a in after and not after[a]["replanned"] and after[a]["status"] not in ("locked", "excluded", "pinned")
    ]
    owners: dict[str, set[object]] = {}
    for a, r in after.items():
        owners.setdefault(str(r["ultimate_parent_id"] or a), set()).add(
            r["owner_id"] if r["status"] not in ("locked", "excluded") else None
        )
    split = sum(1 for o in owners.values() if len(o - {None}) > 1)
    inc = summary["incremental"]
    moved_inside = sum(1 for a in replanned if a in before and after[a]["owner_id"] != before[a]["owner_id"])

    print(
        f"\npreset {args.preset}: {len(before):,} accounts; {len(new_ids):,} new "
        f"and {len(changed_ids):,} with a changed revenue; workers {args.workers}"
    )
    head = f"{'':6}{'full s':>8}{'incremental s':>15}{'ratio':>8}{'replanned':>11}{'kept':>9}{'moved outside changed set':>27}"
    print(head)
    print("-" * len(head))
    print(
        f"{'wall':6}{full:>8.1f}{incremental:>15.1f}{full / incremental:>7.1f}×{inc['replanned']:>11,}{inc['kept']:>9,}{len(outside):>27,}"
    )
    print(f"{'CPU':6}{full_cpu:>8.1f}{incremental_cpu:>15.1f}{full_cpu / incremental_cpu:>7.1f}×")
    print(f"\nreplanned by reason: {inc['why']}; of them now with another owner than in the full plan: {moved_inside:,}")
    print(
        f"accounts in the new plan: {lines:,} rows, {len(after):,} distinct (book: {len(before) + len(new_ids):,}); "
        f"new or changed but not replanned (locked, excluded or pinned only): {len(missed)}; {split} families split"
    )
    print(
        "balance after: "
        + ", ".join(
            f"{b['balance']} {b['min_deviation']:+.1%} / {b['max_deviation']:+.1%} ({len(b['users_outside_tolerance'])} outside)"
            for b in summary["balance"]
        )
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; load average at the end {os.getloadavg()[0]:.1f}"
    )
    return 0 if not outside and not missed and lines == len(after) and not split else 1


if __name__ == "__main__":
    sys.exit(main())
