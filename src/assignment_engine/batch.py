"""File-level workflows shared by the CLI and scripts: read inputs, run, write outputs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .engine import Engine
from .errors import InfeasibleError
from .opportunities import DealPlan, assign_deals
from .plan import Plan
from .readers import read_accounts, read_deals, read_pairs, read_users
from .writers import check_output, write_plan

Progress = Callable[[str], None]


@dataclass
class Run:
    plan: Plan
    deals: DealPlan | None
    summary: dict[str, Any]


def plan_files(
    rules: str | Path,
    accounts: str | Path,
    users: str | Path,
    *,
    opportunities: str | Path | None = None,
    as_of: dt.date | None = None,
    seed: int | None = None,
    time_limit: float | None = None,
    on_hierarchy_error: Literal["raise", "independent"] = "raise",
    progress: Progress | None = None,
    workers: int = 1,
    pairs: str | Path | None = None,
) -> tuple[Plan, DealPlan | None]:
    """Load the rule file and data files and compute the plan (nothing written)."""
    say = progress or (lambda _m: None)
    engine = Engine.from_file(rules)
    say(f"reading {accounts}")
    table = read_accounts(accounts, engine.rules.field_types)
    user_list = read_users(users, list(engine.rules.measures))
    pair_table = read_pairs(pairs, table, user_list) if pairs else None
    deal_table = read_deals(opportunities, engine.rules, table) if opportunities else None
    plan = engine.assign(
        table,
        user_list,
        seed=seed,
        time_limit=time_limit,
        on_hierarchy_error=on_hierarchy_error,
        progress=say,
        users_source=f"users file {users}",
        workers=workers,
        pairs=pair_table,
        deals=deal_table,
    )
    deal_plan = assign_deals(plan, deal_table, as_of=as_of, workers=workers, progress=say) if deal_table is not None else None
    return plan, deal_plan


def assign_files(rules: str | Path, accounts: str | Path, users: str | Path, out: str | Path, *, strict: bool = False, **options: Any) -> Run:
    """Plan and write ``accounts.csv``/``.jsonl``, ``opportunities.csv``/``.jsonl`` (with deals) and ``summary.json``.

    ``out`` is checked before any work (see :func:`check_output`) and receives
    the plan as one unit. With ``strict``, a plan whose hard constraints could
    not all hold (see :meth:`Plan.conflicts`) raises :class:`InfeasibleError`
    and writes nothing.
    """
    inputs = (rules, accounts, users, options.get("opportunities"), options.get("pairs"))
    check_output(out, inputs)
    plan, deals = plan_files(rules, accounts, users, **options)
    if strict and (conflicts := plan.conflicts()):
        raise InfeasibleError(conflicts)
    summary = write_plan(plan, out, options.get("progress"), deals=deals, inputs=inputs)
    return Run(plan, deals, summary)


def demo_files() -> dict[str, Path]:
    """The embedded example: the rule file and the demo book.

    Installed packages carry them under ``assignment_engine/_demo``; a source
    checkout has them at the top level (``rules/``, ``fixtures/``).
    """
    here = Path(__file__).resolve().parent
    for base, rules_dir, data_dir in ((here / "_demo", "rules", "fixtures"), (here.parents[1], "rules", "fixtures")):
        rules = base / rules_dir / "territories.yaml"
        if rules.is_file():
            return {
                "rules": rules,
                "accounts": base / data_dir / "accounts.csv",
                "users": base / data_dir / "users.csv",
                "opportunities": base / data_dir / "opportunities.csv",
            }
    raise FileNotFoundError("the embedded demo files are missing from this installation")
