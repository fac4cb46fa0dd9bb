"""The saved plan, written and read back: the plan directory as one unit, the plan it holds, its owners for an incremental run.

:func:`write_plan` writes what ``assign`` made; :func:`load_plan` rebuilds the
:class:`Plan` from a directory without solving again (``Plan.load`` calls it);
:func:`read_baseline` gives an incremental run the owners a plan holds. Every
reader goes through the manifest (:mod:`files.manifest`), which verifies the
files first.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .engine import Engine
from .errors import DataError, Finding, Location
from .files.manifest import MANIFEST, ROLES, Manifest, engine_version, fingerprint, headline
from .files.output import PLAN_ACCOUNT_COLUMNS, durable_open, output_directory, write_json, write_table
from .files.parquet import require_pyarrow
from .files.readers import read_accounts, read_pairs, read_users
from .files.rows import Shape, plan_rows, read_summary
from .optimize import replay
from .plan.deals import DEAL_COLUMNS, DealPlan, DealTable, read_deals
from .plan.result import REPLAN_WHY, Baseline, Plan, Prepared, results_of
from .review.diff import Review
from .review.report import MOVED_ROWS, render_report, report_available
from .tables.table import AccountTable, PairTable, User, shown


def write_plan(
    plan: Plan,
    out: str | Path,
    progress: Callable[[str], None] | None = None,
    *,
    deals: DealPlan | None = None,
    inputs: Iterable[str | Path | None] = (),
    manifest: Manifest | None = None,
    report: bool = True,
    parquet: bool = False,
) -> dict[str, Any]:
    """``accounts.csv``, ``accounts.jsonl`` (and ``opportunities.*`` with deals), ``summary.json`` and, given its
    manifest, ``plan.json`` and (with the ``report`` extra, unless ``report`` is False) ``report.html``; returns the summary.
    With ``parquet`` (the ``parquet`` extra), ``accounts.parquet`` (and ``opportunities.parquet``) too.

    The files replace whatever plan ``out`` held, all at once; ``inputs`` are
    files the directory must not hold (see :func:`files.output.check_output`).
    """
    say = progress or (lambda _m: None)
    if parquet:
        require_pyarrow()
    also = ", .jsonl and .parquet" if parquet else " and .jsonl"
    with output_directory(out, inputs) as staging:
        summary = plan.summary()
        if deals is not None:
            summary["opportunities"] = deals.summary()
        write_json(staging / "summary.json", summary)
        # the report adds up the rows as they are written (a Review of the summary as saved), not read back after
        review = Review(read_summary(staging), out, MOVED_ROWS) if report and report_available() else None
        say(f"writing {Path(out) / 'accounts.csv'}{also}")
        rows = plan.rows()
        write_table(staging / "accounts", PLAN_ACCOUNT_COLUMNS, rows if review is None else review.accounts(rows), parquet=parquet)
        if deals is not None:
            say(f"writing {Path(out) / 'opportunities.csv'}{also}")
            rows = deals.rows()
            write_table(staging / "opportunities", DEAL_COLUMNS, rows if review is None else review.deals(rows), parquet=parquet)
        written = {p.name: fingerprint(p) for p in sorted(staging.iterdir())}  # what review and apply check the plan against
        manifest = replace(
            manifest or Manifest(engine_version(), [], {}), headline=headline(summary), outputs=written
        )  # from memory: no inputs
        write_json(staging / MANIFEST, manifest.to_json())
        if review is not None:
            say(f"writing {Path(out) / 'report.html'}")
            with durable_open(staging / "report.html") as handle:
                handle.write(render_report(staging, location=out, review=review.result(manifest)))
        elif report:
            say("report.html skipped: the report extra is not installed (pip install 'assignment-engine[report]')")
    return summary


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
            raise DataError(
                [
                    Finding(
                        Location(str(Path(directory) / "accounts.jsonl"), line),
                        "damaged plan row: 16 hex digits of fingerprint and why it was replanned (or '') expected",
                    )
                ]
            ) from None
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
    table, user_list, pair_table, deal_table = read_inputs(
        engine, sources["accounts"], sources["users"], sources.get("pairs"), sources.get("opportunities")
    )
    summary = read_summary(directory)
    baseline = None
    if settings.get("from_plan"):  # an incremental plan: what it kept and replanned, as its rows record
        if summary.get("incremental") is None:
            raise DataError(
                [
                    Finding(
                        Location(str(Path(directory) / "summary.json")),
                        "damaged plan summary: an incremental plan's summary has an incremental section",
                    )
                ]
            )
        baseline = read_baseline(directory, table.ids, recorded=True)
        baseline.plan_id = settings["from_plan"]
        baseline.removed = summary["incremental"]["removed"]
    prepared = engine.prepare(
        table,
        user_list,
        seed=settings["seed"],
        time_limit=settings["time_limit"],
        effort=settings["effort"],
        on_hierarchy_error=settings["hierarchy_errors"],
        users_source=f"users file {sources['users']}",
        pairs=pair_table,
        deals=deal_table,
        as_of=manifest.as_of,
        baseline=baseline,
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
                raise DataError(
                    [
                        Finding(
                            Location(str(path), i + 1),
                            f"owner {shown(row['owner_id'])} is not an active owner "
                            f"member of a territory account {shown(account_id)} matches",
                        )
                    ]
                )
            owner[k] = u
    return owner


def read_inputs(
    engine: Engine, accounts: str | Path, users: str | Path, pairs: str | Path | None, opportunities: str | Path | None
) -> tuple[AccountTable, list[User], PairTable | None, DealTable | None]:
    inputs = engine.rules.inputs
    table = read_accounts(accounts, engine.rules.field_types, inputs["accounts"])
    user_list = read_users(users, list(engine.rules.measures), inputs["users"])
    pair_table = read_pairs(pairs, table, user_list, inputs["pairs"]) if pairs else None
    deal_table = read_deals(opportunities, engine.rules, table) if opportunities else None
    return table, user_list, pair_table, deal_table
