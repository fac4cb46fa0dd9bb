"""Review and apply on a saved plan: diff, report.html and apply, against bare reads of the same files.

    python benchmarks/review.py --preset S|M [--repeat 3]

The plan is the one benchmarks/explain.py saves (benchmarks/out/<preset>-saved/,
made once). Printed, best of ``--repeat`` in this process (imports excluded):
reading the plan's rows (the baseline diff and the report build on), copying
the input files row by row (the baseline apply builds on), ``diff_plan``,
``render_report`` with the page's size, and ``apply_plan`` in both formats.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from explain import saved_plan

from assignment_engine.files.manifest import Manifest
from assignment_engine.files.rows import Shape, plan_rows
from assignment_engine.review.apply import apply_plan
from assignment_engine.review.diff import diff_plan
from assignment_engine.review.report import render_report


def best(work: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="M", choices=["S", "M"])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    plan = saved_plan(args.preset)
    manifest = Manifest.read(plan)
    scratch = Path(tempfile.mkdtemp(prefix="review-bench-"))

    def read_rows() -> None:
        for table in ("accounts", "opportunities"):
            for _ in plan_rows(plan, table, shape=Shape()):  # no keys checked: the bare read
                pass

    def copy_inputs() -> None:
        for role in ("accounts", "opportunities"):
            source = manifest.input(role)
            assert source is not None
            with (
                open(source.path, newline="", encoding="utf-8") as raw,
                open(scratch / f"{role}.csv", "w", newline="", encoding="utf-8") as copy,
            ):
                csv.writer(copy).writerows(csv.reader(raw))

    def apply(form: str) -> Callable[[], object]:
        def run() -> object:
            shutil.rmtree(scratch / "updates", ignore_errors=True)
            return apply_plan(plan, scratch / "updates", format=form)

        return run

    page = render_report(plan)
    rows = [
        ("baseline: read the plan's rows", best(read_rows, args.repeat), ""),
        ("diff_plan", best(lambda: diff_plan(plan), args.repeat), ""),
        ("render_report", best(lambda: render_report(plan), args.repeat), f"{len(page.encode()) / 1e6:.1f} MB"),
        ("baseline: copy the input files", best(copy_inputs, args.repeat), ""),
        ("apply_plan (csv)", best(apply("csv"), args.repeat), ""),
        ("apply_plan (salesforce)", best(apply("salesforce"), args.repeat), ""),
    ]
    shutil.rmtree(scratch, ignore_errors=True)
    accounts = manifest.input("accounts")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"book {args.preset}: {accounts.rows if accounts else 0:,} accounts; best of {args.repeat}"
    )
    print(f"{'step':<32} {'seconds':>8} {'output':>9}")
    for name, seconds, output in rows:
        print(f"{name:<32} {seconds:>8.2f} {output:>9}")
    print(json.dumps({name: round(seconds, 3) for name, seconds, _ in rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
