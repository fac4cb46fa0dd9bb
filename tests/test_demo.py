"""The embedded demo and the synthetic book generator behind it and the benchmarks."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import pytest

from assignment_engine import compile_rules, demo_files, plan_files
from assignment_engine.synthetic import generate_book


def test_demo_plan_is_within_every_tolerance_and_keeps_every_row():
    files = demo_files()
    plan, deals = plan_files(files["rules"], files["accounts"], files["users"], opportunities=files["opportunities"])
    summary = plan.summary()
    with files["accounts"].open(encoding="utf-8") as handle:
        account_ids = [r["id"] for r in csv.DictReader(handle)]
    assert [r["account_id"] for r in plan.rows()] == account_ids
    assert len(summary["balance"]) >= 2
    for band in summary["balance"]:
        assert band["users_outside_tolerance"] == [], band
        # the demo's current owners are badly balanced: the plan must have had work to do
        assert band["max_deviation_before"] > band["tolerance"] or band["min_deviation_before"] < -band["tolerance"]
    assert summary["moved"]["accounts"] < len(account_ids) // 4
    assert all(u["reason"] for u in summary["unassigned"])
    assert deals is not None
    with files["opportunities"].open(encoding="utf-8") as handle:
        deal_ids = [r["id"] for r in csv.DictReader(handle)]
    assert [r["opportunity_id"] for r in deals.rows()] == deal_ids
    deal_summary = deals.summary()
    assert {"follows_account", "kept", "closed"} <= set(deal_summary["status_counts"])
    assert deal_summary["overlay_balance"]
    for band in deal_summary["overlay_balance"]:
        assert band["users_outside_tolerance"] == [], band


def test_generated_books_are_deterministic_and_their_rules_compile():
    one, again, other = generate_book(300, 12, 4, seed=7), generate_book(300, 12, 4, seed=7), generate_book(300, 12, 4, seed=8)
    assert one == again
    assert one.accounts != other.accounts
    rules = compile_rules(one.rules_yaml, "generated.yaml")
    assert len(one.accounts["id"]) == 300 and len(set(one.accounts["id"])) == 300
    assert len(one.users["id"]) == 12
    owners = {m.user for node in rules.territories.values() for m in node.members}
    assert owners <= set(one.users["id"])
    children = [p for p in one.accounts["parent_id"] if p]
    assert children and set(children) <= set(one.accounts["id"])  # families, with parents in the book
    assert set(one.opportunities["account_id"]) <= set(one.accounts["id"])


@pytest.mark.parametrize("script", sorted(p.name for p in (Path(__file__).parents[1] / "benchmarks").glob("*.py")))
def test_every_benchmark_imports_what_the_package_still_has(script, monkeypatch):
    """Benchmarks run by hand, not in CI: loading each (its main is not run) catches a name the package renamed."""
    path = Path(__file__).parents[1] / "benchmarks" / script
    monkeypatch.syspath_prepend(str(path.parent))  # as when run: a benchmark imports its siblings
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, path.stem, module)
    spec.loader.exec_module(module)
    assert callable(getattr(module, "main", None))
