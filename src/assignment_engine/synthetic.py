"""Deterministic synthetic sales books: a rule file, accounts, users and deals.

Used for the embedded demo and the benchmarks; handy for trying the engine on
a book of any size. The shape follows what CRM exports look like: ISO country
codes (``NO`` is Norway), postal codes with leading zeros, Pareto-like revenue
with a few giants, account families, current owners unbalanced around their
fair share, a few locked, excluded and unmatched accounts, open and closed deals.

    python -m assignment_engine.synthetic --preset demo|S|M|L --out DIR
    python -m assignment_engine.synthetic --accounts N --users N --territories N --out DIR
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# region → (countries with account weights, postal-code digits)
REGIONS: dict[str, list[tuple[str, float, int]]] = {
    "amer": [("US", 0.42, 5), ("CA", 0.05, 5), ("MX", 0.03, 5), ("BR", 0.04, 5)],
    "emea": [("GB", 0.08, 5), ("DE", 0.08, 5), ("FR", 0.06, 5), ("NO", 0.02, 4), ("SE", 0.03, 5)],
    "apac": [("JP", 0.07, 5), ("AU", 0.05, 4), ("IN", 0.05, 5)],
}
UNCOVERED = [("ZA", 0.01, 4), ("AE", 0.01, 5)]  # countries no territory covers: unassigned by design
US_STATES = ["CA", "NY", "TX", "FL", "WA", "MA", "IL", "NJ", "OR", "NV", "GA", "PA"]
CA_PROVINCES = ["ON", "QC", "BC", "AB"]
INDUSTRIES = [
    "software",
    "healthcare",
    "pharma",
    "retail",
    "banking",
    "insurance",
    "manufacturing",
    "energy",
    "media",
    "logistics",
    "education",
    "public",
]
STAGES = [
    ("prospecting", 0.25),
    ("qualification", 0.2),
    ("proposal", 0.15),
    ("negotiation", 0.1),
    ("closed_won", 0.18),
    ("closed_lost", 0.12),
]
PRODUCT_LINES = [("core", 0.6), ("analytics", 0.25), ("security", 0.15)]
PRESETS = {
    "demo": {"n_accounts": 2_000, "n_users": 40, "n_territories": 12},
    "S": {"n_accounts": 2_000, "n_users": 40, "n_territories": 10},
    "M": {"n_accounts": 100_000, "n_users": 1_000, "n_territories": 200},
    "L": {"n_accounts": 1_000_000, "n_users": 5_000, "n_territories": 1_000},
}


@dataclass
class Book:
    rules_yaml: str
    accounts: dict[str, list[str]]  # column → values (text)
    users: dict[str, list[str]]
    opportunities: dict[str, list[str]]

    def write(self, directory: str | Path, rules_name: str = "rules.yaml") -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        _atomic_text(directory / rules_name, self.rules_yaml)
        for name, columns in (("accounts", self.accounts), ("users", self.users), ("opportunities", self.opportunities)):
            _atomic_csv(directory / f"{name}.csv", columns)


def _atomic_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _atomic_csv(path: Path, columns: dict[str, list[str]]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(zip(*columns.values(), strict=True))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


@dataclass
class _Leaf:
    id: str
    region: str
    country: str
    rule: str  # YAML flow mapping
    low: int  # postal range (numeric) this leaf covers
    high: int
    owners: list[str]


def generate_book(
    n_accounts: int,
    n_users: int,
    n_territories: int,
    *,
    family_share: float = 0.05,
    imbalance: float = 0.4,
    deals_per_account: float = 0.6,
    seed: int = 0,
) -> Book:
    """A book with about ``n_territories`` geographic leaf territories; same arguments, same book."""
    rng = np.random.default_rng(seed)
    width = len(str(n_users))
    user_ids = [f"u{i + 1:0{width}d}" for i in range(n_users)]
    n_strategic = max(1, n_users // 40)
    n_overlay = max(4, n_users // 20)
    strategic = user_ids[:n_strategic]
    overlay = user_ids[n_strategic : n_strategic + n_overlay]
    owners = user_ids[n_strategic + n_overlay :]
    leaves = _leaves(n_territories, owners)

    # accounts: country, postal code, then the leaf that covers it
    countries = [c for region in REGIONS.values() for c in region] + UNCOVERED
    weights = np.array([w for _, w, _ in countries])
    country_index = rng.choice(len(countries), size=n_accounts, p=weights / weights.sum())
    digits = np.array([d for _, _, d in countries])[country_index]
    postal_number = (rng.random(n_accounts) * (10.0**digits)).astype(np.int64)
    country = np.array([c for c, _, _ in countries])[country_index]
    postal = [f"{p:0{d}d}" for p, d in zip(postal_number.tolist(), digits.tolist(), strict=True)]
    state = np.full(n_accounts, "", dtype=object)
    us = country == "US"
    state[us] = rng.choice(US_STATES, size=int(us.sum()))
    ca = country == "CA"
    state[ca] = rng.choice(CA_PROVINCES, size=int(ca.sum()))

    revenue = np.round(np.exp(rng.normal(13.0, 1.5, n_accounts)), -2)
    giants = rng.random(n_accounts) < 0.0015
    revenue[giants] = np.round(rng.uniform(1e9, 2e10, int(giants.sum())), -3)
    employees = np.maximum(1, (revenue / rng.uniform(80_000, 400_000, n_accounts)).astype(np.int64))
    industry = rng.choice(INDUSTRIES, size=n_accounts)

    leaf_of = np.full(n_accounts, -1, dtype=np.int64)
    for k, leaf in enumerate(leaves):
        hit = (country == leaf.country) & (postal_number >= leaf.low) & (postal_number <= leaf.high)
        leaf_of[hit] = k
    leaf_of[giants] = -2  # the strategic territory owns them

    # current owners: unbalanced around the fair share, some outside the territory, some empty
    bias = {u: 1 + imbalance * rng.uniform(-1, 1) for u in user_ids}
    owner = np.empty(n_accounts, dtype=object)
    pools = [(k, leaf.owners) for k, leaf in enumerate(leaves)] + [(-2, strategic)]  # leaf_of value → its owners
    for k, pool in pools:
        rows = np.flatnonzero(leaf_of == k)
        p = np.array([bias[u] for u in pool])
        owner[rows] = rng.choice(pool, size=len(rows), p=p / p.sum())
    stray = (leaf_of == -1) | (rng.random(n_accounts) < 0.03)
    owner[stray] = rng.choice(owners, size=int(stray.sum()))
    owner[rng.random(n_accounts) < 0.01] = ""

    # families: trees of 2–8 accounts, members drawn anywhere in the book (subsidiaries abroad)
    parent = np.full(n_accounts, "", dtype=object)
    ids = [f"A{i + 1:07d}" for i in range(n_accounts)]
    in_family = int(n_accounts * family_share)
    order = rng.permutation(n_accounts)
    taken = 0
    while taken + 2 <= in_family:
        size = min(int(rng.integers(2, 9)), in_family - taken)
        members = order[taken : taken + size]
        for j in range(1, size):
            parent[members[j]] = ids[members[rng.integers(0, j)]]
        taken += size

    locked = rng.random(n_accounts) < 0.01
    excluded = ~locked & (rng.random(n_accounts) < 0.005)
    accounts = {
        "id": ids,
        "name": [f"{industry[i].title()} Co {i + 1}" for i in range(n_accounts)],
        "parent_id": parent.tolist(),
        "owner_id": owner.tolist(),
        "locked": ["true" if x else "" for x in locked],
        "excluded": ["true" if x else "" for x in excluded],
        "country": country.tolist(),
        "state": state.tolist(),
        "postal_code": postal,
        "industry": industry.tolist(),
        "annual_revenue": [f"{x:.0f}" for x in revenue],
        "employees": [str(x) for x in employees.tolist()],
    }

    weight = np.where(rng.random(n_users) < 0.05, "0.5", "1")
    active = np.where(rng.random(n_users) < 0.01, "false", "true")
    active[: n_strategic + n_overlay] = "true"
    users = {"id": user_ids, "name": [f"Seller {u[1:]}" for u in user_ids], "weight": weight.tolist(), "active": active.tolist()}

    opportunities = _deals(rng, ids, owner, overlay, deals_per_account)
    return Book(_rules_yaml(leaves, strategic, overlay), accounts, users, opportunities)


def _leaves(n_territories: int, owners: list[str]) -> list[_Leaf]:
    """Split every covered country's postal range into leaves, in proportion to its accounts."""
    covered = [(region, c, w, d) for region, cs in REGIONS.items() for c, w, d in cs]
    total = sum(w for _, _, w, _ in covered)
    counts = [max(1, round(n_territories * w / total)) for _, _, w, _ in covered]
    leaves: list[_Leaf] = []
    for (region, country, _, digits), count in zip(covered, counts, strict=True):
        top = 10**digits
        cuts = np.linspace(0, top, count + 1).astype(np.int64)
        for j in range(count):
            low, high = int(cuts[j]), int(cuts[j + 1]) - 1
            name = f"{region}-{country.lower()}" + (f"-{j + 1:02d}" if count > 1 else "")
            if count == 1:
                rule = f'{{country: "{country}"}}'
            else:
                rule = f'{{country: "{country}", postal_code: {{between: ["{low:0{digits}d}", "{high:0{digits}d}"]}}}}'
            leaves.append(_Leaf(name, region, country, rule, low, high, []))
    per_leaf = max(2, len(owners) // len(leaves))
    for k, leaf in enumerate(leaves):
        start = (k * per_leaf) % len(owners)
        leaf.owners = [owners[(start + j) % len(owners)] for j in range(per_leaf)]
    for j, user in enumerate(owners[len(leaves) * per_leaf :]):  # left-over users join leaves in turn
        leaves[j % len(leaves)].owners.append(user)
    return leaves


def _deals(rng: np.random.Generator, ids: list[str], owner: np.ndarray, overlay: list[str], rate: float) -> dict[str, list[str]]:
    counts = rng.poisson(rate, len(ids))
    account = np.repeat(np.arange(len(ids)), counts)
    n = len(account)
    stage = rng.choice([s for s, _ in STAGES], size=n, p=[p for _, p in STAGES])
    line = rng.choice([p for p, _ in PRODUCT_LINES], size=n, p=[p for _, p in PRODUCT_LINES])
    amount = np.round(np.exp(rng.normal(10.5, 1.0, n)), -2)
    start = np.datetime64("2026-10-01")
    close = start + rng.integers(0, 270, n).astype("timedelta64[D]")
    deal_owner = owner[account].copy()
    drift = rng.random(n) < 0.05
    deal_owner[drift] = rng.choice(owner, size=int(drift.sum()))
    specialist = np.where((line == "analytics") & (rng.random(n) < 0.6), rng.choice(overlay, size=n), "")
    return {
        "id": [f"O{i + 1:07d}" for i in range(n)],
        "account_id": [ids[a] for a in account.tolist()],
        "owner_id": deal_owner.tolist(),
        "amount": [f"{x:.0f}" for x in amount],
        "stage": stage.tolist(),
        "close_date": [str(d) for d in close],
        "product_line": line.tolist(),
        "overlay_owner_ids": specialist.tolist(),
    }


def _rules_yaml(leaves: list[_Leaf], strategic: list[str], overlay: list[str]) -> str:
    def members(users: list[str], role: str = "") -> str:
        suffix = f", role: {role}" if role else ""
        return "[" + ", ".join(f"{{user: {u}{suffix}}}" for u in users) + "]"

    half = len(overlay) // 2 or 1
    lines = [
        "# yaml-language-server: $schema=../rule-file.schema.json",
        "# Territory plan: named accounts first, then geography; overlay specialists on deals.",
        "version: 1",
        "fields: {country: string, state: string, postal_code: string, industry: string, annual_revenue: number, employees: integer}",
        "measures:",
        "  revenue: {field: annual_revenue}",
        "  accounts: {constant: 1}",
        "  pipeline: {deals: amount}      # open deal amount per account",
        "tiers: {by: revenue, levels: [{name: key, top: 0.05}, {name: growth, top: 0.30}, {name: core}]}",
        "territory_types:",
        "  - {name: named, priority: 1}",
        "  - {name: geo, priority: 2}",
        "  - {name: specialist, priority: 3, overlay: true}",
        "territories:",
        "  # the largest companies are owned by the strategic team wherever they are",
        "  - id: strategic",
        "    type: named",
        "    rules: [{name: enterprise, when: {annual_revenue: {gte: 1000000000}}}]",
        f"    members: {members(strategic)}",
    ]
    for region, countries in REGIONS.items():
        codes = ", ".join(f'"{c}"' for c, _, _ in countries)
        lines += [
            f"  - id: {region}",
            "    type: geo",
            f"    rules: [{{name: {region}-countries, inherit: true, when: {{country: {{in: [{codes}]}}}}}}]",
            "    children:",
        ]
        for leaf in (x for x in leaves if x.region == region):
            lines += [f"      - id: {leaf.id}", f"        rules: [{{when: {leaf.rule}}}]", f"        members: {members(leaf.owners)}"]
    lines += [
        "  # overlay teams: one specialist per matching open deal, besides its owner",
        "  - id: healthcare-specialists",
        "    type: specialist",
        "    rules: [{name: life-sciences, when: {industry: [healthcare, pharma]}}]",
        f"    members: {members(overlay[:half], 'overlay')}",
        "  - id: analytics-specialists",
        "    type: specialist",
        "    rules: [{name: analytics-deals, when: {product_line: analytics, industry: {not_in: [healthcare, pharma]}}}]",
        f"    members: {members(overlay[half:] or overlay, 'overlay')}",
        "assignment:",
        "  hierarchy: follow_ultimate_parent",
        '  as_of: "2026-11-22"',
        "  balance:",
        "    - {measure: revenue, tolerance: 0.05}",
        "    - {measure: accounts, tolerance: 0.10}",
        "    - {measure: accounts, tier: key, tolerance: 0.50}",
        "opportunities:",
        "  fields: {amount: number, product_line: string}",
        "  keep_owner: {when: {stage: {in: [negotiation]}}, closing_within_days: 30}",
        "  territory_tie: balance",
        "  measures: {amount: {field: amount}, deals: {constant: 1}}",
        "  balance: [{measure: amount, tolerance: 0.15}, {measure: deals, tolerance: 0.15}]",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a synthetic book: rules.yaml, accounts.csv, users.csv, opportunities.csv")
    parser.add_argument("--preset", choices=sorted(PRESETS))
    parser.add_argument("--accounts", type=int)
    parser.add_argument("--users", type=int)
    parser.add_argument("--territories", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    params = dict(PRESETS[args.preset]) if args.preset else {}
    for key, value in (("n_accounts", args.accounts), ("n_users", args.users), ("n_territories", args.territories)):
        if value is not None:
            params[key] = value
    if len(params) < 3:
        parser.error("give --preset or all of --accounts, --users, --territories")
    generate_book(**params, seed=args.seed).write(args.out)


if __name__ == "__main__":
    main()
