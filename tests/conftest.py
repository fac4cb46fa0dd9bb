"""Shared helpers for the assignment_engine test suite.

Everything here builds inputs (rule-file text, account tables, users); no helper
computes an expected result, so every expectation is written in the tests.
"""

from __future__ import annotations

import csv
import json
import math
import re
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from hypothesis import HealthCheck, Phase, settings

from assignment_engine import AccountTable, Engine, Plan, TerritoryMatch, User, compile_rules

settings.register_profile(
    "suite",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,  # the same examples on every run: a red test stays red, a green one stays green
    database=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],  # no patch files written
)
settings.load_profile("suite")

# The example rule file of the project's first issue, verbatim.
EXAMPLE_RULES = """\
version: 1
fields: {country: string, state: string, postal_code: string, industry: string, annual_revenue: number, employees: integer}
measures:
  revenue: {field: annual_revenue}
  accounts: {constant: 1}
tiers: {by: revenue, levels: [{name: key, top: 0.05}, {name: growth, top: 0.30}, {name: core}]}
territory_types: [{name: named, priority: 1}, {name: geo, priority: 2}]
territories:
  - id: strategic
    type: named
    rules: [{name: enterprise, when: {annual_revenue: {gte: 1000000000}}}]
    members: [{user: u001, role: owner}]
  - id: amer
    type: geo
    rules: [{name: americas, inherit: true, when: {country: {in: [US, CA, MX, BR]}}}]
    children:
      - id: amer-west
        rules: [{when: {state: {in: [CA, OR, WA, NV]}}}]
        members: [{user: u010}, {user: u011}]
      - id: amer-east
        rules:
          - when:
              any:
                - {state: {in: [NY, NJ, MA]}}
                - {postal_code: {between: ["10000", "19999"]}}
        members: [{user: u012}, {user: u013}]
assignment:
  hierarchy: follow_ultimate_parent     # or: independent
  balance: [{measure: revenue, tolerance: 0.10}, {measure: accounts, tolerance: 0.15}]
"""

# Two geographic territories of two owners each, for tests that add their own territories.
WEST_EAST = """
- id: west
  type: geo
  rules: [{when: {state: CA}}]
  members: [{user: w1}, {user: w2}]
- id: east
  type: geo
  rules: [{when: {state: NY}}]
  members: [{user: e1}, {user: e2}]
"""

EXAMPLE_USERS = ["u001", "u010", "u011", "u012", "u013"]
EXAMPLE_FIELDS = ["country", "state", "postal_code", "industry", "annual_revenue", "employees"]


def rules_text(
    territories: str,
    *,
    fields: str = "{country: string, state: string, revenue: number}",
    measures: str = "{revenue: {field: revenue}, accounts: {constant: 1}}",
    types: str = "[{name: named, priority: 1}, {name: geo, priority: 2}]",
    assignment: str = "{hierarchy: follow_ultimate_parent}",
    extra: str = "",
) -> str:
    """A rule file: ``territories`` is the YAML block of the territory list (any indentation)."""
    body = textwrap.indent(textwrap.dedent(territories).strip("\n"), "  ")
    text = (
        "version: 1\n"
        f"fields: {fields}\n"
        f"measures: {measures}\n"
        f"territory_types: {types}\n"
        f"{extra}"
        "territories:\n"
        f"{body}\n"
        f"assignment: {assignment}\n"
    )
    return text


def engine_of(text: str, source: str = "rules.yaml") -> Engine:
    return Engine(compile_rules(text, source))


def table_of(engine: Engine, records: list[dict[str, Any]]) -> AccountTable:
    """The accounts, built as a file's rows are: a declared field a record leaves out is missing.

    Engine.table holds a caller to every declared field; a test lists only the fields it is about.
    """
    return AccountTable.from_records(records, engine.rules.field_types)


def match_of(engine: Engine, record: dict[str, Any]) -> TerritoryMatch:
    """Engine.match with every declared field the record leaves out passed as None (unknown)."""
    return engine.match({**dict.fromkeys(engine.rules.field_types), **record})


def users_of(*ids: str, **capacity: float) -> list[User]:
    """Plain users; ``users_of("u1", "u2", accounts=3)`` gives each the same account capacity."""
    return [User(u, capacity=dict(capacity)) for u in ids]


def rows_by_id(plan: Plan) -> dict[str, dict[str, Any]]:
    return {r["account_id"]: r for r in plan.rows()}


def line_col(text: str, needle: str, nth: int = 1) -> tuple[int, int]:
    """1-based (line, column) of the ``nth`` occurrence of ``needle`` in ``text``."""
    start = -1
    for _ in range(nth):
        start = text.index(needle, start + 1)
    line = text.count("\n", 0, start) + 1
    col = start - (text.rfind("\n", 0, start) + 1) + 1
    return line, col


def write_csv(path: Path, records: Iterable[dict[str, Any]], columns: list[str]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for r in records:
            writer.writerow(["" if r.get(c) is None else r.get(c) for c in columns])
    return path


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for r in records:
            handle.write(json.dumps(r) + "\n")
    return path


def strip_timing(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary without wall-clock seconds (the only part that may legitimately differ run to run)."""
    s = json.loads(json.dumps(summary))
    s["solver"].pop("seconds", None)
    for c in s["solver"].get("per_component", []):
        c.pop("seconds", None)
    return s


@pytest.fixture
def example_engine() -> Engine:
    return engine_of(EXAMPLE_RULES, "example.yaml")


@pytest.fixture
def example_users() -> list[User]:
    return [User(u) for u in EXAMPLE_USERS]


@pytest.fixture
def example_files(tmp_path: Path) -> dict[str, Path]:
    """The example rule file, a small accounts CSV and a users CSV on disk."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(EXAMPLE_RULES, encoding="utf-8")
    accounts = [
        {
            "id": "W1",
            "name": "West one",
            "country": "US",
            "state": "CA",
            "postal_code": "94000",
            "industry": "tech",
            "annual_revenue": 500,
            "employees": 5,
            "owner_id": "u010",
        },
        {
            "id": "W2",
            "name": "West two",
            "country": "US",
            "state": "OR",
            "postal_code": "97000",
            "industry": "tech",
            "annual_revenue": 400,
            "employees": 5,
            "owner_id": "u011",
        },
        {
            "id": "E1",
            "name": "East one",
            "country": "US",
            "state": "NY",
            "postal_code": "01234",
            "industry": "retail",
            "annual_revenue": 300,
            "employees": 7,
            "owner_id": "u012",
        },
        {
            "id": "E2",
            "name": "East two",
            "country": "US",
            "state": "PA",
            "postal_code": "15000",
            "industry": "retail",
            "annual_revenue": 200,
            "employees": 7,
            "owner_id": "u013",
        },
        {
            "id": "BIG",
            "name": "Big",
            "country": "US",
            "state": "CA",
            "postal_code": "94100",
            "industry": "tech",
            "annual_revenue": 2000000000,
            "employees": 9000,
            "owner_id": "u010",
        },
        {
            "id": "NOR",
            "name": "Norway",
            "country": "NO",
            "state": "ON",
            "postal_code": "01234",
            "industry": "oil",
            "annual_revenue": 100,
            "employees": 3,
            "owner_id": "",
        },
    ]
    columns = ["id", "name", "owner_id", *EXAMPLE_FIELDS]
    write_csv(tmp_path / "accounts.csv", accounts, columns)
    users = tmp_path / "users.csv"
    users.write_text("id,name\n" + "".join(f"{u},{u.upper()}\n" for u in EXAMPLE_USERS), encoding="utf-8")
    return {"rules": rules, "accounts": tmp_path / "accounts.csv", "users": users, "dir": tmp_path}


def write_xlsx(path: Path, sheets: dict[str, list[list[Any]]]) -> Path:
    """A workbook of the given sheets (in order), each a list of rows; None is an empty cell."""
    book = openpyxl.Workbook()
    book.remove(book.active)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
    book.save(path)
    return path


def _oracle_leaf(field: str, op: str, operand, raw_value, kinds: dict[str, str]) -> bool:
    """Direct per-row reading of the documented semantics."""
    text = kinds[field] == "string"
    if text:
        v = None if raw_value is None or str(raw_value).strip() == "" else str(raw_value).strip()
    else:
        v = None if raw_value is None or (isinstance(raw_value, float) and math.isnan(raw_value)) else float(raw_value)
    if op == "exists":
        return (v is not None) == operand
    if op == "is_null":
        return (v is None) == operand
    items = operand if isinstance(operand, list) else [operand]
    if op == "ne":
        return not _oracle_leaf(field, "eq", operand, raw_value, kinds)
    if op == "not_in":
        return not _oracle_leaf(field, "in", operand, raw_value, kinds)
    if v is None:
        return False
    if text:
        fold = v.casefold()
        if op == "eq":
            return fold == str(operand).casefold()
        if op == "in":
            return fold in {str(x).casefold() for x in items}
        if op == "starts_with":
            return any(fold.startswith(x.casefold()) for x in items)
        if op == "ends_with":
            return any(fold.endswith(x.casefold()) for x in items)
        if op == "contains":
            return any(x.casefold() in fold for x in items)
        if op == "matches":
            return re.search(operand, v) is not None
    else:
        if op == "eq":
            return v == float(operand)
        if op == "in":
            return any(v == float(x) for x in items)
    if op == "between":
        lo, hi = (str(x) if text else float(x) for x in items)
        return lo <= v <= hi
    x = str(operand) if text else float(operand)
    return {"lt": v < x, "lte": v <= x, "gt": v > x, "gte": v >= x}[op]


def oracle(condition, row: dict, kinds: dict[str, str] | None = None) -> bool:
    """Does ``condition`` (rule-file form) hold for ``row``? ``kinds`` maps field → type (default s/n)."""
    kinds = kinds or {"s": "string", "n": "number"}
    if isinstance(condition, list):
        return all(oracle(c, row, kinds) for c in condition)
    results = []
    for key, value in condition.items():
        if key == "all":
            results.append(all(oracle(c, row, kinds) for c in value))
        elif key == "any":
            results.append(any(oracle(c, row, kinds) for c in value))
        elif key == "not":
            results.append(not oracle(value, row, kinds))
        else:
            if isinstance(value, list):
                value = {"in": value}
            elif not isinstance(value, dict):
                value = {"eq": value}
            results.extend(_oracle_leaf(key, op, operand, row.get(key), kinds) for op, operand in value.items())
    return all(results)
