"""File-level workflows shared by the CLI and scripts: read inputs, run, write outputs."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .engine import Engine
from .errors import DataError, Finding, InfeasibleError, Location, OptionError
from .files.manifest import InputFile, Manifest, engine_version, fingerprint
from .files.output import check_output
from .files.parquet import require_pyarrow
from .files.readers import read_accounts, read_users
from .matching.rank import measure_values
from .optimize.clock import effort_in_force
from .optimize.distributed import check_executor
from .plan.deals import DealPlan, assign_deals, read_deals
from .plan.result import Plan
from .rules.compile import CompiledRules
from .saved import read_baseline, read_inputs, write_plan

Progress = Callable[[str], None]


@dataclass
class Run:
    """A computed plan, what it was made from, and (once written) its summary; ``manifest`` is then the one written."""

    plan: Plan
    deals: DealPlan | None
    manifest: Manifest
    summary: dict[str, Any] = field(default_factory=dict)


def plan_files(
    rules: str | Path,
    accounts: str | Path,
    users: str | Path,
    **options: Any,
) -> tuple[Plan, DealPlan | None]:
    """Load the rule file and data files and compute the plan (nothing written); options as :func:`run_files`."""
    run = run_files(rules, accounts, users, **options)
    return run.plan, run.deals


def run_files(
    rules: str | Path,
    accounts: str | Path,
    users: str | Path,
    *,
    opportunities: str | Path | None = None,
    as_of: dt.date | None = None,
    seed: int | None = None,
    time_limit: float | None = None,
    effort: float | None = None,
    on_hierarchy_error: Literal["raise", "independent"] = "raise",
    progress: Progress | None = None,
    workers: int = 1,
    pairs: str | Path | None = None,
    from_plan: str | Path | None = None,
    executor: str = "local",
    scheduler: Any = None,
) -> Run:
    """Load the rule file and data files, compute the plan and its manifest (nothing written).

    ``executor`` and ``scheduler`` choose where components are solved (see :meth:`Engine.assign`); the plan is the same.
    ``time_limit`` (wall-clock seconds) counts from this call; ``effort`` is the solver's deterministic work per component.

    With ``from_plan`` (a saved plan's directory) the run is incremental: only accounts that changed since
    that plan are replanned, the others keep its owners (see :meth:`Engine.prepare`); the plan may have been
    made from other input files (that is the point), but its own files must be as written."""
    started = time.time()
    say = progress or (lambda _m: None)
    check_executor(executor, scheduler)
    engine = Engine.from_file(rules)
    policy = engine.rules.policy
    sources = {"rules": rules, "accounts": accounts, "users": users, "opportunities": opportunities, "pairs": pairs}
    digests = _fingerprints(sources)
    say(f"reading {accounts}")
    table, user_list, pair_table, deal_table = read_inputs(engine, accounts, users, pairs, opportunities)
    baseline = None
    if from_plan is not None:
        say(f"reading the plan in {from_plan}")
        baseline = read_baseline(from_plan, table.ids)
    run_date = engine.rules.run_date(as_of)
    plan = engine.assign(
        table,
        user_list,
        as_of=run_date,
        seed=seed,
        time_limit=time_limit,
        effort=effort,
        started=started,
        on_hierarchy_error=on_hierarchy_error,
        progress=say,
        users_source=f"users file {users}",
        workers=workers,
        pairs=pair_table,
        deals=deal_table,
        baseline=baseline,
        executor=executor,
        scheduler=scheduler,
    )
    deal_plan = assign_deals(plan, deal_table, as_of=run_date, workers=workers, progress=say) if deal_table is not None else None
    rows = {
        "accounts": len(table),
        "users": len(user_list),
        "opportunities": None if deal_table is None else len(deal_table.table),
        "pairs": None if pair_table is None else len(pair_table.account),
    }
    time_limit = policy.time_limit if time_limit is None else time_limit
    manifest = Manifest(
        engine_version(),
        [InputFile(role, str(Path(path).resolve()), digests[role], rows.get(role)) for role, path in sources.items() if path is not None],
        {
            "seed": policy.seed if seed is None else seed,
            "time_limit": time_limit,  # wall clock
            "effort": effort_in_force(policy.effort if effort is None else effort, time_limit),
            "as_of": run_date.isoformat() if deal_table is not None or engine.rules.uses_run_date else None,
            "hierarchy_errors": on_hierarchy_error,
            "workers": workers,
            "executor": executor,  # not plan-shaping (files.manifest._PLAN_SHAPING): every executor makes the same plan
            **({"from_plan": baseline.plan_id} if baseline is not None else {}),
        },
    )
    return Run(plan, deal_plan, manifest)


def _fingerprints(sources: dict[str, str | Path | None]) -> dict[str, str]:
    """sha256 of every input, taken before reading it (what was read is at most newer). Each is read twice, so
    a pipe or a device is refused: its second read would find nothing."""
    digests = {}
    for role, path in sources.items():
        if path is None:
            continue
        where = Location(str(path))
        if not Path(path).exists():
            raise DataError([Finding(where, f"cannot read the {role} file: it does not exist")])
        if not Path(path).is_file():
            raise DataError([Finding(where, f"the {role} file must be a regular file, not a directory, pipe or device")])
        try:
            digests[role] = fingerprint(path)
        except OSError as exc:
            raise DataError([Finding(where, f"cannot read the {role} file: {exc.strerror}")]) from None
    return digests


def validate_files(
    rules: CompiledRules, *, users: str | Path | None = None, accounts: str | Path | None = None, opportunities: str | Path | None = None
) -> list[Finding]:
    """Read the data files given through the rule file's ``inputs:`` as a run would; raise on the first bad file, return the warnings.

    Users are checked against the territories' members; opportunities need the accounts they refer to.
    The rule file's deprecations come first.
    """
    warnings = list(rules.deprecations)
    if users is not None:
        Engine(rules).check_members(read_users(users, list(rules.measures), rules.inputs["users"]), f"users file {users}")
    if opportunities is not None and accounts is None:
        raise OptionError(
            [Finding(Location("--opportunities"), "checking opportunities needs --accounts: deals are read against their accounts")]
        )
    if accounts is not None:
        table = read_accounts(accounts, rules.field_types, rules.inputs["accounts"])
        measure_values(rules, table)  # the values a run refuses as loads
        warnings += table.warnings
        if opportunities is not None:
            warnings += read_deals(opportunities, rules, table).table.warnings
    return warnings


def assign_files(
    rules: str | Path,
    accounts: str | Path,
    users: str | Path,
    out: str | Path,
    *,
    strict: bool = False,
    report: bool = True,
    parquet: bool = False,
    **options: Any,
) -> Run:
    """Plan and write the plan directory: ``plan.json``, ``accounts.*``, ``opportunities.*`` (with deals), ``summary.json``
    and ``report.html`` (with the ``report`` extra, unless ``report`` is False); with ``parquet``, ``accounts.parquet``
    (and ``opportunities.parquet``) as well.

    ``out`` (and, with ``parquet``, the ``parquet`` extra) is checked before
    any work (see :func:`check_output`) and receives the plan as one unit.
    With ``strict``, a plan whose hard constraints could not all hold (see
    :meth:`Plan.conflicts`) raises :class:`InfeasibleError` and writes nothing.
    """
    inputs = (rules, accounts, users, options.get("opportunities"), options.get("pairs"))
    if parquet:
        require_pyarrow()
    check_output(out, inputs)
    run = run_files(rules, accounts, users, **options)
    if strict and (conflicts := run.plan.conflicts()):
        raise InfeasibleError(conflicts)
    run.summary = write_plan(
        run.plan, out, options.get("progress"), deals=run.deals, inputs=inputs, manifest=run.manifest, report=report, parquet=parquet
    )
    run.manifest = Manifest.read(out)  # as written: with the sha256 of the plan's files, which its id covers
    return run


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
