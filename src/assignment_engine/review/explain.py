"""Explain one account or deal from a saved plan, without re-running anything.

The plan directory holds each record's owner, territory, status and reason and
every user's loads; the rule trace is re-evaluated on the one input record
(matching depends on that record alone), so the lines are those
:meth:`Plan.explain` gives for the run that made the plan.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, Finding, Location
from ..files.manifest import ROLES, Manifest, open_regular
from ..files.readers import find_record
from ..files.rows import Shape, read_summary
from ..matching.match import match_accounts
from ..matching.segments import derive as derive_segments
from ..plan.deals import NO_ACCOUNT, DealTable, explain_deal, joined
from ..plan.result import explain_account
from ..rules.compile import CompiledRules
from ..rules.inputs import ACCOUNT_INPUT_COLUMNS, DEAL_INPUT_COLUMNS
from ..tables.cells import shown
from ..tables.table import AccountTable

_ACCOUNT = Shape(
    ("account_id", "owner_id", "territory_id", "previous_owner_id", "status", "reason", "ultimate_parent_id"), ("family_size",), ("moved",)
)
_DEAL = Shape(
    ("opportunity_id", "account_id", "owner_id", "territory_id", "previous_owner_id", "status", "reason"),
    (),
    ("moved",),
    ("overlay_owner_ids",),
)


def explain_saved(directory: str | Path, record_id: str) -> tuple[dict[str, Any], list[str]]:
    """The plan row of account or opportunity ``record_id`` and its explanation lines."""
    manifest = Manifest.verified(directory, inputs=("rules", "accounts"), optional=ROLES)
    rules = manifest.rules(directory)
    run_date = manifest.as_of
    found = _find(directory, "accounts", "account_id", record_id, _ACCOUNT)
    if found is not None:
        where, row = found
        record = derive_segments(rules, _record(manifest.path("accounts"), record_id, rules, "accounts"), run_date)
        territories = match_accounts(rules, record)
        names = [territories.territory_ids[t] for t in territories.territories_of(0)]
        return row, explain_account(rules, record, row, names, _loads(directory, rules, where, row))
    deals = manifest.input("opportunities")
    found = _find(directory, "opportunities", "opportunity_id", record_id, _DEAL) if deals else None
    if deals is None or found is None:
        raise DataError([Finding(Location(str(directory)), f"'{record_id}' is neither an account nor an opportunity of this plan")])
    deal_row = found[1]
    deal = _record(deals.path, record_id, rules, "opportunities")
    if deal_row["account_id"]:
        account = derive_segments(rules, _record(manifest.path("accounts"), deal_row["account_id"], rules, "accounts"), run_date)
        one = joined(DealTable(deal, np.zeros(1, dtype=np.int64), []), account)
    else:  # a deal without an account: the account's fields are missing
        empty = derive_segments(rules, AccountTable.from_records([], rules.field_types), run_date)
        one = joined(DealTable(deal, np.full(1, NO_ACCOUNT, dtype=np.int64), []), empty)
    return deal_row, explain_deal(rules, one, deal_row)


def _loads(directory: str | Path, rules: CompiledRules, where: Location, row: dict[str, Any]) -> dict[str, dict[str, tuple[float, float]]]:
    """Each user's (load, fair share) per balance label after the plan, from its summary; the owners of the
    territory of ``row`` (read at ``where``) must have every one: an explanation lists them."""
    loads = {
        user["user_id"]: {label: (entry["after"], entry.get("fair_share") or 0.0) for label, entry in user["loads"].items()}
        for user in read_summary(directory)["users"]
    }
    territory = row["territory_id"]
    if territory and territory not in rules.territories:
        raise DataError(
            [Finding(where, f"account {shown(row['account_id'])} has territory {shown(territory)}, which is not in the rule file")]
        )
    owners = rules.territories[territory].owners if territory else ()
    missing = next(((u, spec.label) for u in owners for spec in rules.balance if spec.label not in loads.get(u, {})), None)
    if missing is not None:
        raise DataError(
            [
                Finding(
                    Location(str(Path(directory) / "summary.json")),
                    f"damaged plan summary: no {missing[1]} load for user {shown(missing[0])}",
                )
            ]
        )
    return loads


def _find(directory: str | Path, table: str, key: str, value: str, shape: Shape) -> tuple[Location, dict[str, Any]] | None:
    """Where the plan row whose ``key`` is ``value`` is, and the row, of ``shape``: lines are tested as text first,
    so only the match is parsed."""
    prefix = f'{{"{key}": {json.dumps(value, ensure_ascii=False)},'
    path = Path(directory) / f"{table}.jsonl"
    try:
        handle = io.TextIOWrapper(open_regular(path), encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DataError([Finding(Location(str(path)), f"cannot read the plan's {table}: {exc.strerror}")]) from None
    with handle:
        try:
            for number, line in enumerate(handle, start=1):
                if line.startswith(prefix):
                    row, where = json.loads(line), Location(str(path), number)
                    if (why := shape.problem(row)) is not None:
                        raise DataError([Finding(where, why)])
                    return where, dict(row)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise DataError([Finding(Location(str(path)), f"damaged plan file: {exc}")]) from None
    return None


def _record(path: str, value: str, rules: CompiledRules, role: str) -> AccountTable:
    """One input record as a one-row typed table (the file's own row number kept for messages)."""
    if role == "accounts":
        found = find_record(path, value, rules.field_types, rules.inputs[role], {*ACCOUNT_INPUT_COLUMNS, *rules.field_types})
    else:
        found = find_record(path, value, rules.deal_field_types, rules.inputs[role], {*DEAL_INPUT_COLUMNS, *rules.deal_field_types})
    if found is None:
        raise DataError([Finding(Location(path), f"'{value}' is in the plan but no longer in its input file")])
    return found
