"""Rule-matching benchmark (issue 13): a book's accounts matched to its territories, alone.

    python benchmarks/match.py [--preset S|M|L] [--repeat 3]

The preset's book is generated once into benchmarks/out/<preset>/ (as
scale.py does) and read; then ``match_accounts`` runs ``--repeat`` times and
the best and median are printed, in seconds and in microseconds per account,
beside a baseline timed in the same run: one rule (the first region's
inherited country rule) read over every account, the unit of work a matcher
without indexes repeats for each territory. The L preset has 1,000,000
accounts and 1,007 territories (3 regions with an inherited country rule,
each leaf a country and a postal range); the target is 10 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

from scale import generate

from assignment_engine import Engine, read_accounts
from assignment_engine.matching.match import NO_TERRITORY, match_accounts


def timed(call, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="L", choices=["S", "M", "L"])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    book = generate(args.preset)
    engine = Engine.from_file(book / "rules.yaml")
    start = time.perf_counter()
    accounts = read_accounts(book / "accounts.csv", engine.rules.field_types)
    read = time.perf_counter() - start
    rules = engine.rules
    region = next(n for n in rules.territories.values() if any(r.inherit for r in n.rules))
    rule = next(r for r in region.rules if r.inherit)
    baseline = timed(lambda: rule.condition.mask(accounts), args.repeat)
    matching = timed(lambda: match_accounts(rules, accounts), args.repeat)
    matches = match_accounts(rules, accounts)
    n = len(accounts)
    print(
        f"preset {args.preset}: {n:,} accounts, {len(rules.territories):,} territories; read in {read:.1f} s; "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, load {os.getloadavg()[0]:.1f}"
    )
    head = f"{'run':58}{'best s':>9}{'median s':>10}{'µs / account':>14}{'× baseline':>12}{'≤ 10 s':>8}"
    print(head)
    print("-" * len(head))
    unit = min(baseline)
    for name, times, target in (
        (f"baseline: rule {rule.label} of {region.id}, every account", baseline, False),
        (f"match_accounts, {len(rules.territories):,} territories", matching, True),
    ):
        best = min(times)
        print(
            f"{name:58}{best:>9.2f}{statistics.median(times):>10.2f}{best / n * 1e6:>14.2f}{best / unit:>12.1f}"
            f"{('yes' if best <= 10 else 'NO') if target else '':>8}"
        )
    owned = int((matches.owning != NO_TERRITORY).sum())
    print(f"accounts with an owning territory (or a tie): {owned:,} of {n:,}")


if __name__ == "__main__":
    main()
