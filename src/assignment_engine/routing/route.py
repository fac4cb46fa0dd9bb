"""``route``: new accounts and leads given owners against a saved plan, written as one directory.

The plan is read, never re-solved: the router takes the rule file, the users
file and the loads of ``summary.json`` (see :meth:`Router.from_directory`), so
routing ten thousand records into a million-account plan reads neither the book
nor the plan's rows. Leads are matched to the plan's accounts first (which
does read them, once); a lead that matches no account is routed like a new
account and written in the accounts file's format, ready to be created.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Callable, Sequence
from contextlib import ExitStack, closing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError, Finding, Location
from ..files.manifest import Manifest
from ..files.output import (
    PLAN_ACCOUNT_COLUMNS,
    check_output,
    durable_open,
    exact_cell,
    formula_like,
    formula_note,
    output_directory,
    write_json,
)
from ..files.readers import read_accounts, read_columns
from ..matching.rank import measure_values
from ..matching.records import typed
from ..tables.cells import as_text
from ..tables.table import AccountTable
from .router import Routed, Router
from .state import SqliteState

ROUTE_MANIFEST = "route.json"
ROUTE_FILES = frozenset({ROUTE_MANIFEST, "accounts.csv", "leads.csv", "lead_accounts.csv"})
LEAD_COLUMNS = ["lead_id", "account_id", "owner_id", "territory_id", "reason"]


@dataclass(frozen=True)
class RouteResult:
    plan_id: str
    out: str
    accounts: int
    leads: int
    leads_matched: int
    unassigned: int
    formula_like_cells: int = 0  # cells a spreadsheet would run as a formula (written exactly: ids must match the CRM's)

    def line(self) -> str:
        leads = f", {self.leads:,} leads ({self.leads_matched:,} matched an account)" if self.leads else ""
        text = (
            f"routed {self.accounts:,} accounts{leads} against plan {self.plan_id}; "
            f"{self.unassigned:,} left unassigned; written to {self.out}"
        )
        return text + formula_note(self.formula_like_cells)


def route_files(
    plan_dir: str | Path,
    out: str | Path,
    *,
    accounts: str | Path | None = None,
    leads: str | Path | None = None,
    state: str | Path | None = None,
    today: dt.date | None = None,
    progress: Callable[[str], None] | None = None,
) -> RouteResult:
    """Route the records of ``accounts`` and ``leads`` against the saved plan in ``plan_dir``; write ``out`` whole.

    The whole run is one transaction of the routing state, committed right after ``out`` is swapped in: a run
    that fails, or is stopped or killed, leaves the state as it was (see :mod:`routing.state`)."""
    say = progress or (lambda _m: None)
    manifest = Manifest.verified(plan_dir, inputs=("rules", "users"))
    inputs = [accounts, leads, state, *(f.path for f in manifest.inputs)]
    check_output(out, inputs, "--out", ROUTE_FILES, ROUTE_MANIFEST)  # before the state file is opened (or made)
    with ExitStack() as run:
        store = run.enter_context(closing(SqliteState(state, manifest.plan_id, durable=True))) if state is not None else None
        router = Router.from_directory(plan_dir, store, manifest)
        # everything read before the state is taken: other processes wait only while this run decides
        table = _accounts_table(router, accounts) if accounts is not None else None
        lead_table = _lead_table(router, leads) if leads is not None else None
        if store is not None:  # a memory state dies with the run: nothing to commit, nothing to journal
            run.enter_context(store.transaction())  # closed (committed) by the output's swap, else rolled back
        counts = _Counts()
        with output_directory(out, inputs, owned=ROUTE_FILES, marker=ROUTE_MANIFEST, then=run.close) as staging:
            if table is not None:
                say(f"routing the accounts of {accounts}")
                _route_accounts(router, table, staging, today, counts)
            if lead_table is not None:
                say(f"matching the leads of {leads} to the plan's accounts")
                _route_leads(router, lead_table, staging, today, counts)
            write_json(staging / ROUTE_MANIFEST, {"plan_dir": str(Path(plan_dir).resolve()), "plan_id": manifest.plan_id, **asdict(counts)})
    return RouteResult(
        manifest.plan_id, str(out), counts.accounts, counts.leads, counts.leads_matched, counts.unassigned, counts.formula_like_cells
    )


@dataclass
class _Counts:
    accounts: int = 0
    leads: int = 0
    leads_matched: int = 0
    unassigned: int = 0
    formula_like_cells: int = 0

    def written(self, writer: Any, cells: list[Any]) -> None:
        """One row written exactly (ids must match the CRM's), its formula-like cells counted."""
        self.formula_like_cells += formula_like(cells)
        writer.writerow([exact_cell(c) for c in cells])


def _accounts_table(router: Router, path: str | Path) -> AccountTable:
    table = read_accounts(path, router.rules.field_types, router.rules.inputs["accounts"])
    measure_values(router.rules, table)  # refused at their cells, as assign refuses them
    return table


def _route_accounts(router: Router, table: AccountTable, staging: Path, today: dt.date | None, counts: _Counts) -> None:
    with durable_open(staging / "accounts.csv") as handle:
        writer = csv.writer(handle)
        writer.writerow(PLAN_ACCOUNT_COLUMNS)  # the plan's own columns
        for i, account_id in enumerate(table.ids):
            routed = router.route_values(
                account_id, typed(table.record(i), router.rules.field_types), today=today, notes=table.notes.get(i, ())
            )
            counts.unassigned += routed.owner_id is None
            counts.written(writer, _account_row(router, routed, table.owner_ids[i]))
    counts.accounts = len(table)


def _account_row(router: Router, routed: Routed, previous: str | None) -> list[Any]:
    rule = router.rules.territories[routed.territory_id].rule_label if routed.territory_id else ""
    return [
        routed.account_id,
        routed.owner_id or "",
        routed.territory_id or "",
        previous or "",
        (routed.owner_id or None) != previous,
        routed.status,
        rule,
        routed.reason,
    ]


@dataclass(frozen=True)
class _Leads:
    path: str
    cells: dict[str, list[Any]]  # id, company, email, website and the declared fields, one value a lead
    rows: Sequence[int]


def _lead_table(router: Router, path: str | Path) -> _Leads:
    """The leads file read, and the plan's accounts indexed for matching them (both before the state is taken)."""
    columns, rows = read_columns(path)
    if "id" not in columns:
        raise DataError([Finding(Location(str(path), 1), "missing required column 'id'")])
    n = len(columns["id"])
    router.lead_index()
    return _Leads(
        str(path), {name: columns.get(name, [None] * n) for name in ["id", "company", "email", "website", *router.rules.field_types]}, rows
    )


def _route_leads(router: Router, leads: _Leads, staging: Path, today: dt.date | None, counts: _Counts) -> None:
    """Leads to their matching account's owner, else routed as new accounts."""
    rules = router.rules
    with durable_open(staging / "leads.csv") as lead_handle, durable_open(staging / "lead_accounts.csv") as new_handle:
        lead_out, new_out = csv.writer(lead_handle), csv.writer(new_handle)
        lead_out.writerow(LEAD_COLUMNS)
        new_out.writerow(["id", "name", "owner_id", *rules.field_types])
        for i, row in enumerate(leads.rows):
            lead = {name: values[i] for name, values in leads.cells.items()}
            try:
                routed = router.route_lead(lead, today=today)
            except DataError as exc:
                raise DataError([Finding(Location(leads.path, row, column=f.location.column), f.message) for f in exc.findings]) from None
            counts.written(
                lead_out, [routed.lead_id, routed.account_id or "", routed.owner_id or "", routed.territory_id or "", routed.reason]
            )
            if routed.account_id is not None:
                counts.leads_matched += 1
                continue
            counts.unassigned += routed.owner_id is None
            counts.written(
                new_out, [routed.lead_id, as_text(lead["company"] or ""), routed.owner_id or "", *(lead[f] for f in rules.field_types)]
            )
    counts.leads = len(leads.rows)
