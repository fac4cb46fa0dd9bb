"""``assignment-engine``: a thin terminal layer over the library (needs the ``cli`` extra).

Exit codes: 0 success, 1 findings (invalid rules, bad data, infeasible), 2 usage
(including an unusable ``--out``), 130/143 stopped by SIGINT/SIGTERM. Messages
go to stderr, results to stdout; ``--format json`` prints machine output. Text
from data files reaches the terminal through :func:`printable`.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .batch import assign_files, demo_files, plan_files, validate_files
from .errors import AssignmentEngineError, OptionError, printable
from .files.output import write_text_atomically
from .optimize import MAX_SEED
from .plan.result import outside_band
from .review.apply import FORMATS as UPDATE_FORMATS
from .review.apply import apply_plan
from .review.diff import LARGEST, Band, Load, Move, MovedAccount, PlanComparison, PlanDiff, compact, compare_plans, diff_plan
from .review.explain import explain_saved
from .routing.route import route_files
from .rules.compile import load_rules
from .rules.ruleset import MAX_SECONDS, json_schema

F = TypeVar("F", bound=Callable[..., Any])
err = Console(stderr=True, highlight=False)
out = Console(highlight=False)
FORMAT = click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True, help="output for people or for machines"
)
QUIET = click.option("--quiet", "-q", is_flag=True, help="no progress on stderr")


def _progress(quiet: bool):
    start = time.perf_counter()

    def say(message: str) -> None:
        if not quiet:
            err.print(f"[dim]{time.perf_counter() - start:7.1f}s[/dim] {escape(message)}")

    return say


def _fail(error: AssignmentEngineError) -> None:
    click.echo(str(error), err=True)  # plain: file:line:col lines must not be wrapped
    sys.exit(2 if isinstance(error, OptionError) else 1)


class _Seconds(click.ParamType):
    """A positive, finite number of seconds up to a day (click's FloatRange lets nan through)."""

    name = "seconds"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            seconds = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not (math.isfinite(seconds) and 0 < seconds <= MAX_SECONDS):
            self.fail(f"{value!r} is not a positive, finite number of seconds up to {MAX_SECONDS:,}", param, ctx)
        return seconds


def _stop(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


_PROCESS_ENDS_WITH_COMMAND = False  # set by run(): this process exits once its one command returns


def run() -> None:
    """The ``assignment-engine`` script and ``python -m assignment_engine``: :func:`main` as a process of its own.

    Once a command's work is done, a stop ends the process at once, as the signal does by default (status
    130 or 143 to a shell), rather than reaching click as "Aborted!" with exit 1 for a run that finished.
    (``main`` called in a process that goes on, as by click's test runner, leaves the handlers as they were.)"""
    global _PROCESS_ENDS_WITH_COMMAND
    _PROCESS_ENDS_WITH_COMMAND = True
    main()


@contextmanager
def _running(out: str | None = None) -> Iterator[None]:
    """A command's work: engine errors exit 1 (2 for options); SIGTERM stops it like Ctrl-C, and
    one line then says what became of the plan in ``out``."""
    before = _identity(out) if out else None
    previous = signal.signal(signal.SIGTERM, _stop)
    done = False
    try:
        yield
        if _PROCESS_ENDS_WITH_COMMAND:  # a stop before this is reported below; after it, it ends the process (run())
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            done = True
    except AssignmentEngineError as exc:
        _fail(exc)
    except KeyboardInterrupt as stopped:
        name = stopped.args[0] if stopped.args else "SIGINT"
        if out is None:
            click.echo(f"stopped by {name}", err=True)
        elif _identity(out) != before:
            click.echo(f"stopped by {name} after the new plan was written to {out}", err=True)
        elif before is None:
            click.echo(f"stopped by {name}: nothing was written to {out}", err=True)
        else:
            click.echo(f"stopped by {name}: the previous plan in {out} is untouched", err=True)
        sys.exit(128 + signal.Signals[name].value)
    finally:
        if not done:
            signal.signal(signal.SIGTERM, previous)


def _identity(out: str) -> tuple[int, int] | None:
    """The plan directory's identity: a written plan is a new directory swapped into place."""
    try:
        st = os.stat(out)
    except OSError:
        return None
    return st.st_dev, st.st_ino


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="assignment-engine")
def main() -> None:
    """Assign accounts to territories and owners from YAML rules, balanced by value."""


@main.command()
@click.argument("rules", type=click.Path(dir_okay=False))
@click.option(
    "--users", type=click.Path(exists=True, dir_okay=False), help="also read the users file and check that every member is a user"
)
@click.option(
    "--accounts",
    type=click.Path(exists=True, dir_okay=False),
    help="also read the accounts file through the rule file's inputs: columns, types, values",
)
@click.option("--opportunities", type=click.Path(exists=True, dir_okay=False), help="also read the opportunities file (needs --accounts)")
@FORMAT
def validate(rules: str, users: str | None, accounts: str | None, opportunities: str | None, fmt: str) -> None:
    """Check a rule file, and the data files given against it; print every problem as file:line:col."""
    try:
        compiled = load_rules(rules)
        warnings = validate_files(compiled, users=users, accounts=accounts, opportunities=opportunities)
    except AssignmentEngineError as exc:
        if fmt == "json":
            click.echo(
                json.dumps(
                    {"valid": False, "findings": [{"location": str(f.location), "message": f.message} for f in exc.findings]}, indent=2
                )
            )
            sys.exit(1)
        _fail(exc)
    owners = {m.user for t in compiled.territories.values() for m in t.members}
    if fmt == "json":
        click.echo(
            json.dumps(
                {
                    "valid": True,
                    "territories": len(compiled.territories),
                    "members": len(owners),
                    "warnings": [str(w) for w in warnings],
                    "deprecations": [str(d) for d in compiled.deprecations],
                }
            )
        )
        return
    for warning in warnings:
        err.print(printable(f"warning: {warning}"), markup=False, soft_wrap=True)
    click.echo(f"{rules}: valid ({len(compiled.territories)} territories, {len(owners)} members)")


def _options(*options: Callable[[F], F]) -> Callable[[F], F]:
    """The options as one decorator, shown by --help in the order given."""

    def decorate(f: F) -> F:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


_TABLE = "(CSV, JSON Lines, .xlsx or Parquet)"


def _data_options(*, required: bool) -> Callable[[F], F]:
    """The book: the rule file and the data files of assign and explain."""
    return _options(
        click.option("--rules", required=required, type=click.Path(dir_okay=False), help="rule file (YAML)"),
        click.option("--accounts", required=required, type=click.Path(dir_okay=False), help=f"accounts {_TABLE}"),
        click.option("--users", required=required, type=click.Path(dir_okay=False), help=f"users {_TABLE}"),
        click.option("--pairs", type=click.Path(dir_okay=False), default=None, help=f"per account–user cost and workload {_TABLE}"),
        click.option("--opportunities", type=click.Path(dir_okay=False), default=None, help=f"open and closed deals {_TABLE}"),
        click.option(
            "--as-of",
            type=click.DateTime(["%Y-%m-%d"]),
            default=None,
            help="run date for within_days, older_than_days and closing-soon protection (default: the rule file's, else today)",
        ),
    )


SOLVER = _options(
    click.option("--seed", type=click.IntRange(0, MAX_SEED), default=None, help="solver seed (default: the rule file's)"),
    click.option(
        "--time-limit",
        type=_Seconds(),
        default=None,
        help=(
            "wall-clock seconds for the whole run: the best plan found by then "
            "(not reproducible if it stops a component; the summary says which)"
        ),
    ),
    click.option(
        "--effort",
        type=_Seconds(),
        default=None,
        help="solver work per component, deterministic seconds: the same plan on any machine (default 1.5, or none under a time limit)",
    ),
    click.option(
        "--hierarchy-errors",
        type=click.Choice(["raise", "independent"]),
        default="raise",
        show_default=True,
        help="on a bad parent link: stop, or report and treat the accounts as independent",
    ),
    click.option(
        "--workers",
        type=click.IntRange(min=1),
        default=os.cpu_count() or 1,
        show_default="CPU count",
        help="processes for independent components (same plan for any number)",
    ),
    click.option(
        "--executor",
        type=click.Choice(["local", "dask"]),
        default="local",
        show_default=True,
        help="where components are solved: local processes, or a Dask cluster (needs the distributed extra; same plan)",
    ),
    click.option(
        "--scheduler",
        metavar="ADDRESS",
        default=None,
        help=(
            "the Dask scheduler for --executor dask, e.g. tcp://host:8786 "
            "(default: a local cluster of --workers processes, started for the run)"
        ),
    ),
)
"""How the plan is solved: the options of assign and explain after the book's."""


@main.command()
@_data_options(required=True)
@SOLVER
@QUIET
@click.option("--out", required=True, type=click.Path(file_okay=False), help="directory for accounts.csv, accounts.jsonl, summary.json")
@click.option("--strict", is_flag=True, help="fail (exit 1, nothing written) when capacity or locks cannot all hold")
@click.option("--parquet", is_flag=True, help="also write accounts.parquet / opportunities.parquet (needs the parquet extra)")
@click.option(
    "--from-plan",
    type=click.Path(file_okay=False),
    default=None,
    help="a saved plan: replan only accounts that changed since it, keep the others (--out may be the same directory)",
)
@FORMAT
def assign(
    rules: str,
    accounts: str,
    users: str,
    pairs: str | None,
    opportunities: str | None,
    as_of,
    seed: int | None,
    time_limit: float | None,
    effort: float | None,
    hierarchy_errors: Literal["raise", "independent"],
    workers: int,
    executor: str,
    scheduler: str | None,
    quiet: bool,
    out: str,
    strict: bool,
    parquet: bool,
    from_plan: str | None,
    fmt: str,
) -> None:
    """Assign every account to a territory and an owner; write the plan to --out.

    With --from-plan DIR, only new accounts and accounts that changed since that plan (fields, owner, territory,
    an owner who left, their family) are replanned; every other account keeps the plan's owner and counts as load.
    """
    with _running(out):
        run = assign_files(
            rules,
            accounts,
            users,
            out,
            strict=strict,
            parquet=parquet,
            pairs=pairs,
            opportunities=opportunities,
            as_of=as_of and as_of.date(),
            seed=seed,
            time_limit=time_limit,
            effort=effort,
            on_hierarchy_error=hierarchy_errors,
            workers=workers,
            executor=executor,
            scheduler=scheduler,
            progress=_progress(quiet),
            from_plan=from_plan,
        )
        _report(run.summary, fmt, out)
        if fmt == "text" and "incremental" in run.summary:
            inc = run.summary["incremental"]
            why = ", ".join(f"{name.replace('_', ' ')} {count:,}" for name, count in inc["why"].items() if count) or "nothing changed"
            out_line = (
                f"incremental from plan {inc['from_plan']}: replanned {inc['replanned']:,} ({why}); kept {inc['kept']:,}; "
                f"no longer in the book {inc['removed']:,}"
            )
            click.echo(printable(out_line))


@main.command()
@click.argument("account_id")
@click.option(
    "--plan",
    "saved",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="a saved plan (assign --out): explain from it, nothing re-run",
)
@_data_options(required=False)
@SOLVER
@QUIET
@FORMAT
def explain(
    account_id: str,
    saved: str | None,
    rules: str | None,
    accounts: str | None,
    users: str | None,
    pairs: str | None,
    opportunities: str | None,
    as_of,
    seed: int | None,
    time_limit: float | None,
    effort: float | None,
    hierarchy_errors: Literal["raise", "independent"],
    workers: int,
    executor: str,
    scheduler: str | None,
    quiet: bool,
    fmt: str,
) -> None:
    """Why ACCOUNT_ID (or an opportunity id) lands where it does: rules matched or failed, territory, owner.

    With --plan, from a saved plan (nothing re-run); otherwise the plan is computed from the files given.
    """
    if saved is not None:
        with _running():
            record, lines = explain_saved(saved, account_id)
    elif rules is None or accounts is None or users is None:
        raise click.UsageError("give --plan DIR, or --rules, --accounts and --users")
    else:
        with _running():
            plan, deals = plan_files(
                rules,
                accounts,
                users,
                pairs=pairs,
                opportunities=opportunities,
                as_of=as_of and as_of.date(),
                seed=seed,
                time_limit=time_limit,
                effort=effort,
                on_hierarchy_error=hierarchy_errors,
                workers=workers,
                executor=executor,
                scheduler=scheduler,
                progress=_progress(quiet),
            )
        if (i := plan.accounts.position(account_id)) is not None:
            record = plan.row(i)
            lines = plan.explain(account_id)
        elif deals is not None and deals.deals.table.position(account_id) is not None:
            record = next(r for r in deals.rows() if r["opportunity_id"] == account_id)
            lines = deals.explain(account_id)
        else:
            click.echo(
                printable(
                    f"'{account_id}' is neither an account of {accounts} "
                    f"nor an opportunity{' of ' + opportunities if opportunities else ''}"
                ),
                err=True,
            )
            sys.exit(1)
    if fmt == "json":
        click.echo(json.dumps({**record, "explanation": lines}, indent=2))
    else:
        click.echo("\n".join(printable(line) for line in lines))


@main.command()
@click.option("--out", type=click.Path(dir_okay=False), help="write to a file instead of stdout")
def schema(out: str | None) -> None:
    """JSON Schema of the rule file (for '# yaml-language-server: $schema=...')."""
    text = json.dumps(json_schema(), indent=2)
    if out:
        try:
            write_text_atomically(out, text + "\n")
        except OSError as exc:
            click.echo(printable(f"--out: cannot write {out}: {exc.strerror}"), err=True)
            sys.exit(2)
    else:
        click.echo(text)


@main.command()
@click.argument("plan", type=click.Path(file_okay=False))
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="directory for the update files and the applied accounts file (replaced whole)",
)
@click.option(
    "--format",
    "crm",
    type=click.Choice(UPDATE_FORMATS),
    default="csv",
    show_default=True,
    help="update files for review (csv) or for a CRM's import (salesforce: Id,OwnerId for Data Loader)",
)
@QUIET
def apply(plan: str, out: str, crm: str, quiet: bool) -> None:
    """Write the saved plan in PLAN as update files (changed owners only) and the next run's accounts file.

    Refused (exit 1, nothing written) when an input file named in PLAN/plan.json changed since the plan was made.
    """
    with _running(out):
        result = apply_plan(plan, out, format=crm, progress=_progress(quiet))
        click.echo(printable(result.line()))


@main.command()
@click.option("--plan", "plan_dir", required=True, type=click.Path(file_okay=False), help="the saved plan to route against (assign --out)")
@click.option("--accounts", type=click.Path(dir_okay=False), default=None, help="new accounts (the accounts file's format)")
@click.option(
    "--leads", type=click.Path(dir_okay=False), default=None, help="leads: id, company, email, website and declared account fields"
)
@click.option(
    "--state",
    type=click.Path(dir_okay=False),
    default=None,
    help=(
        "SQLite file keeping turns, daily counts and added loads across runs and processes; this run's decisions are saved with its output"
    ),
)
@click.option("--today", type=click.DateTime(["%Y-%m-%d"]), default=None, help="the day for daily caps and away_until (default: today)")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="directory for accounts.csv, leads.csv, lead_accounts.csv (replaced whole)",
)
@QUIET
def route(plan_dir: str, accounts: str | None, leads: str | None, state: str | None, today, out: str, quiet: bool) -> None:
    """Give owners to new accounts and leads against a saved plan, without re-solving it."""
    if accounts is None and leads is None:
        raise click.UsageError("give --accounts, --leads or both")
    with _running(out):
        result = route_files(
            plan_dir, out, accounts=accounts, leads=leads, state=state, today=today and today.date(), progress=_progress(quiet)
        )
        click.echo(printable(result.line()))


@main.command()
@click.option("--out", type=click.Path(file_okay=False), default=None, help="where to write the plan (default: a temporary directory)")
@QUIET
@FORMAT
def demo(out: str | None, quiet: bool, fmt: str) -> None:
    """Run on the embedded example book and show loads before and after."""
    files = demo_files()
    target = out or tempfile.mkdtemp(prefix="assignment-engine-demo-")
    with _running(target):
        run = assign_files(
            files["rules"],
            files["accounts"],
            files["users"],
            target,
            opportunities=files["opportunities"],
            workers=os.cpu_count() or 1,
            progress=_progress(quiet),
        )
        _report(run.summary, fmt, target)


@main.command()
@click.argument("plan", type=click.Path(file_okay=False))
@click.argument("other", required=False, type=click.Path(file_okay=False))
@click.option(
    "--largest", type=click.IntRange(min=0), default=LARGEST, show_default=True, help="moved accounts to list, largest value first"
)
@FORMAT
def diff(plan: str, other: str | None, largest: int, fmt: str) -> None:
    """What the saved plan in PLAN changes: per user, per territory, from → to. With OTHER: two plans of the same book side by side."""
    with _running():
        result = diff_plan(plan, largest) if other is None else compare_plans(plan, other, largest)
    if fmt == "json":
        click.echo(json.dumps(result.to_json(), indent=2))
    elif isinstance(result, PlanDiff):
        _diff_text(result)
    else:
        _comparison_text(result)


_PAIRS_SHOWN = 30  # from → to pairs in text output; --format json lists all


def _diff_text(d: PlanDiff) -> None:
    measures = [b.measure for b in d.bands]
    tolerance = {b.measure: b.tolerance for b in d.bands}
    users = Table(title=f"Per user: gained and lost; load as a share of fair share, before → after ({_cell(d.value_measure)} is the value)")
    for column in ("user", "accounts", "gained / lost", "value gained / lost", *measures, "opportunities"):
        users.add_column(_cell(column), justify="left" if column == "user" else "right")
    changed = [u for u in d.users if u.changed]
    for u in changed:
        loads = [_load_change(u.loads[m], tolerance[m]) if m in u.loads else "" for m in measures]
        name = _cell(u.user_id) + ("" if u.is_user else " (not a user)") + ("" if u.active or not u.is_user else " (inactive)")
        users.add_row(
            name,
            f"{u.accounts_before:,} → {u.accounts_after:,}",
            f"+{u.gained:,} / -{u.lost:,}",
            f"+{compact(u.value_gained)} / -{compact(u.value_lost)}",
            *loads,
            f"+{u.deals_gained:,} / -{u.deals_lost:,}",
        )
    out.print(users)
    if len(changed) < len(d.users):
        out.print(f"({len(d.users) - len(changed)} users gain and lose nothing: not shown)")
    territories = Table(title="Per territory: accounts changing owner (a plan records territories after the run only)")
    for column in ("territory", "accounts", "value", "moved", "value moved", "owners before → after"):
        territories.add_column(column, justify="left" if column == "territory" else "right")
    for t in d.territories:
        if t.moved:
            territories.add_row(
                _cell(t.territory_id),
                f"{t.accounts:,}",
                compact(t.value),
                f"{t.moved:,}",
                compact(t.value_moved),
                f"{t.owners_before} → {t.owners_after}",
            )
    out.print(territories)
    _moves_text(d.moves, "Moves: from → to", "from", "to")
    _largest_text(d.largest, "Largest moved accounts")
    out.print(f"accounts: {d.accounts:,}  moved: {d.moved:,} ({compact(d.value_moved)} {printable(d.value_measure)})", markup=False)
    if d.deals is not None:
        out.print(f"opportunities: {d.deals:,}  moved: {d.deals_moved:,}")
    for reason, count in d.unassigned.items():
        out.print(printable(f"unassigned: {count:5}  {reason}"), markup=False)
    out.print(printable(f"plan {d.plan_id} in {d.directory}"), markup=False)


def _comparison_text(c: PlanComparison) -> None:
    a, b = c.a, c.b
    side = Table(title="Plans side by side")
    side.add_column("")
    side.add_column(f"A: {_cell(a.directory)}", justify="right")
    side.add_column(f"B: {_cell(b.directory)}", justify="right")
    side.add_row("plan id", a.plan_id, b.plan_id)
    side.add_row("rule file (sha256)", (a.rules_sha256 or "")[:12], (b.rules_sha256 or "")[:12])
    for key in sorted(set(a.settings) | set(b.settings)):
        if a.settings.get(key) != b.settings.get(key):
            side.add_row(_cell(key), _cell(str(a.settings.get(key))), _cell(str(b.settings.get(key))))
    for key in ("accounts", "moved", "value_moved", "unassigned", "conflicts", "opportunities_moved"):
        if key in a.headline or key in b.headline:
            side.add_row(key.replace("_", " "), *(compact(h[key]) if key in h else "" for h in (a.headline, b.headline)))
    bands = {x.measure: x for x in a.bands}
    for band_b in b.bands:
        band_a = bands.pop(band_b.measure, None)
        side.add_row(f"{_cell(band_b.measure)} deviation", _band(band_a), _band(band_b))
    for band_a in bands.values():
        side.add_row(f"{_cell(band_a.measure)} deviation", _band(band_a), "")
    side.add_row("accounts owned differently", "", f"{c.differing:,} ({compact(c.value_differing)})")
    out.print(side)
    measures = list(dict.fromkeys(m for u in c.users for m in (*u.a, *u.b)))
    loads = Table(title="Load after as a share of fair share: A | B (users whose loads differ)")
    loads.add_column("user")
    for m in measures:
        loads.add_column(_cell(m), justify="right")
    shown = 0
    for u in c.users:
        pairs = [(u.a.get(m), u.b.get(m)) for m in measures]
        if any(x is None or y is None or x.after != y.after for x, y in pairs):
            shown += 1
            loads.add_row(
                _cell(u.user_id), *(" | ".join("-" if x is None else _share(x.after, x.fair_share or 0) for x in pair) for pair in pairs)
            )
    out.print(loads)
    if shown < len(c.users):
        out.print(f"({len(c.users) - shown} users with the same loads in A and B: not shown)")
    _moves_text(c.moves, "Accounts owned differently: owner in A → owner in B", "owner in A", "owner in B")
    _largest_text(c.largest, "Largest accounts owned differently (territory and reason of B)")


def _moves_text(moves: list[Move], title: str, from_label: str, to_label: str) -> None:
    table = Table(title=title)
    for column in (from_label, to_label, "accounts", "value"):
        table.add_column(column, justify="right" if column in ("accounts", "value") else "left")
    for m in moves[:_PAIRS_SHOWN]:
        table.add_row(_cell(m.from_id), _cell(m.to_id), f"{m.accounts:,}", compact(m.value))
    out.print(table)
    if len(moves) > _PAIRS_SHOWN:
        out.print(f"(… {len(moves) - _PAIRS_SHOWN:,} more pairs with smaller moves; --format json lists all {len(moves):,})")


def _largest_text(largest: list[MovedAccount], title: str) -> None:
    if not largest:
        return
    table = Table(title=title)
    for column in ("account", "from", "to", "territory", "value", "reason"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for m in largest:
        table.add_row(_cell(m.account_id), _cell(m.from_id), _cell(m.to_id), _cell(m.territory_id), compact(m.value), _cell(m.reason))
    out.print(table)


def _load_change(load: Load, tolerance: float) -> str:
    """Before → after as shares of the fair share; after in red when outside the band."""
    fair = load.fair_share or 0
    after = _share(load.after, fair)
    if load.share_after is not None and outside_band(load.share_after - 1, tolerance):
        after = f"[red]{after}[/red]"
    return f"{_share(load.before, fair)} → {after}"


def _band(band: Band | None) -> str:
    return "" if band is None else f"{_pct(band.min_after)} / {_pct(band.max_after)} (±{band.tolerance:.0%})"


def _report(summary: dict[str, Any], fmt: str, target: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(summary, indent=2))
        return
    balance = [b["balance"] for b in summary["balance"]]
    table = Table(title="Load per user: share of fair share, before → after")
    table.add_column("user")
    table.add_column("accounts", justify="right")
    for label in balance:
        table.add_column(_cell(label), justify="right")
    idle = [u for u in summary["users"] if not any(e["before"] or e["after"] for e in u["loads"].values())]
    for user in summary["users"]:
        if user in idle:
            continue
        loads = user["loads"]
        count = loads.get("accounts") or {"before": 0, "after": 0}
        cells = [_cell(user["user_id"]) + ("" if user["active"] else " (inactive)"), f"{count['before']:.0f} → {count['after']:.0f}"]
        for label in balance:
            entry = loads[label]
            fair = entry.get("fair_share") or 0
            cells.append(_share(entry["before"], fair) + " → " + _share(entry["after"], fair, entry.get("deviation"), label, summary))
        table.add_row(*cells)
    out.print(table)
    if idle:
        out.print(f"({len(idle)} users own no accounts before or after, e.g. overlay specialists: not shown)")
    bands = Table(title="Balance: deviation from fair share (min / max)")
    for column in ("measure", "tolerance", "before", "after", "users outside"):
        bands.add_column(column, justify="right" if column != "measure" else "left")
    for b in summary["balance"]:
        bands.add_row(
            _cell(b["balance"]),
            f"±{b['tolerance']:.0%}",
            f"{_pct(b['min_deviation_before'])} / {_pct(b['max_deviation_before'])}",
            f"{_pct(b['min_deviation'])} / {_pct(b['max_deviation'])}",
            str(len(b["users_outside_tolerance"])),
        )
    out.print(bands)
    moved = summary["moved"]
    counts = summary["status_counts"]
    out.print(
        f"accounts: {summary['accounts']:,}  moved: {moved['accounts']:,} ({moved['value']:,.0f} {moved['value_measure']})  "
        f"locked: {counts['locked']}  excluded: {counts['excluded']}  following a pinned parent: {counts['pinned']}  "
        f"unassigned: {counts['unassigned']}"
    )
    for name, levels in summary.get("segments", {}).items():
        out.print(printable(f"segment {name}: " + ", ".join(f"{level} {count:,}" for level, count in levels.items())), markup=False)
    for warning in summary.get("warnings", [])[:10]:
        out.print(printable(f"warning: {warning}"), markup=False)
    if len(summary.get("warnings", [])) > 10:
        out.print(f"… and {len(summary['warnings']) - 10} more warnings in summary.json", markup=False)
    for conflict in summary["conflicts"][:10]:
        out.print(printable(f"conflict: {conflict}"), markup=False)
    if summary["unassigned"]:
        reasons = Counter(u["reason"] for u in summary["unassigned"])
        out.print("unassigned accounts by reason:")
        for reason, count in reasons.most_common(10):
            out.print(printable(f"  {count:5}  {reason}"), markup=False)
    solver = summary["solver"]
    out.print(
        f"solver: {solver['components']} components {solver['status']}; accounts moved {solver['moves']} "
        f"(proven lower bound {solver['moves_lower_bound']}), {solver['seconds']:.1f}s"
    )
    if solver.get("stopped_on_time"):
        out.print(
            f"  {len(solver['stopped_on_time'])} components stopped on the time limit: "
            "another run may give another plan (--effort alone reproduces one)",
            markup=False,
        )
    deals = summary.get("opportunities")
    if deals:
        moved = deals["moved"]
        out.print(
            f"opportunities: {deals['opportunities']:,}  {deals['status_counts']}  "
            f"moved: {moved['opportunities']:,} ({moved['amount']:,.0f})",
            markup=False,
        )
        for b in deals["overlay_balance"]:
            out.print(
                f"  overlay {b['balance']}: deviation {_pct(b['min_deviation'])} / {_pct(b['max_deviation'])} "
                f"(±{b['tolerance']:.0%}), {len(b['users_outside_tolerance'])} outside",
                markup=False,
            )
    out.print(f"plan written to {target}", markup=False)
    if (Path(target) / "report.html").is_file():
        out.print(f"review it: {Path(target) / 'report.html'}  (or: assignment-engine diff {target})", markup=False)


def _cell(text: str) -> str:
    """Data shown in a rich table: no markup, no control characters."""
    return escape(printable(text))


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.1%}"


def _share(load: float, fair: float, deviation: float | None = None, label: str = "", summary: dict[str, Any] | None = None) -> str:
    if fair <= 0:
        return f"{load:,.0f}"
    text = f"{load / fair:.0%}"
    if summary is not None and deviation is not None:
        tolerance = next(b["tolerance"] for b in summary["balance"] if b["balance"] == label)
        if outside_band(deviation, tolerance):
            return f"[red]{text}[/red]"
    return text
