"""File-level workflows shared by the CLI and scripts: read inputs, run, write outputs."""

from __future__ import annotations

import datetime as dt
import itertools
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .compile import CompiledRules
from .engine import Engine
from .errors import DataError, Finding, InfeasibleError, Location, OptionError
from .opportunities import DealPlan, DealTable, assign_deals
from .optimize import replay
from .optimize.clock import effort_in_force
from .optimize.distributed import check_executor
from .parquet import require_pyarrow
from .plan import REPLAN_WHY, Baseline, Plan, Prepared, results_of
from .planfile import ROLES, InputFile, Manifest, Shape, engine_version, fingerprint, plan_rows, read_summary
from .rank import measure_values
from .readers import read_accounts, read_deals, read_pairs, read_users
from .table import AccountTable, PairTable, User, shown
from .writers import check_output, write_plan

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
    table, user_list, pair_table, deal_table = _read_inputs(engine, accounts, users, pairs, opportunities)
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
    rows = {"accounts": len(table), "users": len(user_list), "opportunities": None if deal_table is None else len(deal_table.table), "pairs": None if pair_table is None else len(pair_table.account)}
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
            "executor": executor,  # not plan-shaping (planfile._PLAN_SHAPING): every executor makes the same plan
            **({"from_plan": baseline.plan_id} if baseline is not None else {}),
        },
    )
    return Run(plan, deal_plan, manifest)


_NO_FINGERPRINT = {"fingerprint": "; plans written before incremental runs have none: run assign without --from-plan once"}
_BASELINE = Shape(("account_id", "owner_id", "previous_owner_id", "territory_id", "status", "fingerprint"), hints=_NO_FINGERPRINT)
_RECORDED = Shape((*_BASELINE.keys, "replanned"), hints=_NO_FINGERPRINT)  # an incremental plan reloaded
_LOADED = Shape(("account_id", "owner_id"))


def read_baseline(directory: str | Path, ids: Sequence[str], *, recorded: bool = False) -> Baseline:
    """A saved plan's owners, territories, statuses and fingerprints, aligned to the accounts ``ids`` of a new run.

    The plan's own files must be as written (its input files may have changed since) and its rows must
    carry fingerprints (plans written before incremental runs do not: plan the book in full once). With
    ``recorded`` (an incremental plan reloaded), what its rows say was replanned is kept as it is."""
    manifest = Manifest.verified(directory, consequence="; an incremental run needs the plan as it was written")
    at: dict[str, int] = {}
    owners: list[str | None] = []
    previous: list[str | None] = []
    territories: list[str | None] = []
    statuses: list[str | None] = []
    prints: list[int] = []
    why: list[int] = []
    codes = {name: code for code, name in enumerate(REPLAN_WHY)}
    shape = _RECORDED if recorded else _BASELINE
    for line, row in enumerate(plan_rows(directory, shape=shape), start=1):
        try:
            prints.append(_fingerprint(row["fingerprint"]))
            if recorded:
                why.append(codes[row["replanned"]])
        except (KeyError, ValueError):
            raise DataError([Finding(Location(str(Path(directory) / "accounts.jsonl"), line), "damaged plan row: 16 hex digits of fingerprint and why it was replanned (or '') expected")]) from None
        at[row["account_id"]] = len(owners)
        owners.append(sys.intern(row["owner_id"]) or None)  # interned: a few distinct values a million times
        previous.append(sys.intern(row["previous_owner_id"]) or None)
        territories.append(sys.intern(row["territory_id"]) or None)
        statuses.append(sys.intern(row["status"]))
    where = np.array([at.get(a, -1) for a in ids], dtype=np.int64)
    found = where >= 0
    fingerprints = np.zeros(len(ids), dtype=np.uint64)
    fingerprints[found] = np.array(prints, dtype=np.uint64)[where[found]] if prints else 0

    def aligned(values: list[str | None]) -> list[str | None]:
        return [values[j] if j >= 0 else None for j in where.tolist()]

    return Baseline(
        plan_id=manifest.plan_id,
        in_plan=found,
        owner=aligned(owners),
        previous=aligned(previous),
        territory=aligned(territories),
        status=aligned(statuses),
        fingerprint=fingerprints,
        removed=len(at) - int(np.count_nonzero(found)),
        why=np.array([why[j] if j >= 0 else 0 for j in where.tolist()], dtype=np.int8) if recorded else None,
    )


def _fingerprint(text: str) -> int:
    """A row's fingerprint (16 hex digits) as the unsigned 64-bit number it is; else a ValueError."""
    value = int(text, 16)
    if len(text) != 16 or value < 0:
        raise ValueError(text)
    return value


def load_plan(directory: str | Path) -> Plan:
    """The plan a saved directory holds, as :func:`run_files` made it: inputs re-read and matched, owners and
    solver results taken from the directory, nothing solved again. Inputs that changed since are a :class:`DataError`."""
    manifest = Manifest.verified(directory, inputs=("rules", "accounts", "users"), optional=ROLES)
    sources = {f.role: f.path for f in manifest.inputs}
    settings = manifest.current_settings  # an old plan's time_limit is its effort
    engine = Engine(manifest.rules(directory))
    table, user_list, pair_table, deal_table = _read_inputs(engine, sources["accounts"], sources["users"], sources.get("pairs"), sources.get("opportunities"))
    summary = read_summary(directory)
    baseline = None
    if settings.get("from_plan"):  # an incremental plan: what it kept and replanned, as its rows record
        if summary.get("incremental") is None:
            raise DataError([Finding(Location(str(Path(directory) / "summary.json")), "damaged plan summary: an incremental plan's summary has an incremental section")])
        baseline = read_baseline(directory, table.ids, recorded=True)
        baseline.plan_id = settings["from_plan"]
        baseline.removed = summary["incremental"]["removed"]
    prepared = engine.prepare(
        table, user_list, seed=settings["seed"], time_limit=settings["time_limit"], effort=settings["effort"], on_hierarchy_error=settings["hierarchy_errors"],
        users_source=f"users file {sources['users']}", pairs=pair_table, deals=deal_table, as_of=manifest.as_of, baseline=baseline,
    )
    owner = _unit_owners(directory, table.ids, prepared, user_list)
    solution = replay(prepared.problem, owner, results_of(summary["solver"]))
    return Plan.build(prepared, solution)


def _unit_owners(directory: str | Path, ids: Sequence[str], prepared: Prepared, users: Sequence[User]) -> np.ndarray:
    """Per unit of ``prepared``, the owner the plan's rows give it (user index, -1 none): one of the unit's candidates."""
    path = Path(directory) / "accounts.jsonl"
    user_index = {u.id: k for k, u in enumerate(users)}
    owner = np.full(prepared.problem.n_units, -1, dtype=np.int64)
    for i, (account_id, row) in enumerate(itertools.zip_longest(ids, plan_rows(directory, shape=_LOADED))):
        if row is None or account_id is None or row["account_id"] != account_id:
            raise DataError([Finding(Location(str(path), i + 1), "the plan's accounts do not follow its accounts file")])
        k = int(prepared.unit[i])
        if k >= 0 and row["owner_id"]:
            u = user_index.get(row["owner_id"], -1)
            if u < 0:
                raise DataError([Finding(Location(str(path), i + 1), f"owner {shown(row['owner_id'])} is not in the users file")])
            if u not in prepared.candidate_sets[prepared.unit_set[k]]:
                raise DataError([Finding(Location(str(path), i + 1), f"owner {shown(row['owner_id'])} is not an active owner member of a territory account {shown(account_id)} matches")])
            owner[k] = u
    return owner


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


def _read_inputs(
    engine: Engine, accounts: str | Path, users: str | Path, pairs: str | Path | None, opportunities: str | Path | None
) -> tuple[AccountTable, list[User], PairTable | None, DealTable | None]:
    inputs = engine.rules.inputs
    table = read_accounts(accounts, engine.rules.field_types, inputs["accounts"])
    user_list = read_users(users, list(engine.rules.measures), inputs["users"])
    pair_table = read_pairs(pairs, table, user_list, inputs["pairs"]) if pairs else None
    deal_table = read_deals(opportunities, engine.rules, table) if opportunities else None
    return table, user_list, pair_table, deal_table


def validate_files(rules: CompiledRules, *, users: str | Path | None = None, accounts: str | Path | None = None, opportunities: str | Path | None = None) -> list[Finding]:
    """Read the data files given through the rule file's ``inputs:`` as a run would; raise on the first bad file, return the warnings.

    Users are checked against the territories' members; opportunities need the accounts they refer to.
    The rule file's deprecations come first.
    """
    warnings = list(rules.deprecations)
    if users is not None:
        Engine(rules).check_members(read_users(users, list(rules.measures), rules.inputs["users"]), f"users file {users}")
    if opportunities is not None and accounts is None:
        raise OptionError([Finding(Location("--opportunities"), "checking opportunities needs --accounts: deals are read against their accounts")])
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
    run.summary = write_plan(run.plan, out, options.get("progress"), deals=run.deals, inputs=inputs, manifest=run.manifest, report=report, parquet=parquet)
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
