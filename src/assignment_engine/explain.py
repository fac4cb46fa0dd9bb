"""Explain one account or deal from a saved plan, without re-running anything.

The plan directory holds each record's owner, territory, status and reason and
every user's loads; the rule trace is re-evaluated on the one input record
(matching depends on that record alone), so the lines are those
:meth:`Plan.explain` gives for the run that made the plan.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np

from .columns import ACCOUNT_COLUMNS, DEAL_INPUT_COLUMNS
from .compile import CompiledRules, load_rules
from .errors import DataError, Finding, Location
from .match import match_accounts
from .opportunities import NO_ACCOUNT, DealTable, explain_deal, joined
from .plan import explain_account
from .planfile import Manifest, read_summary
from .readers import find_record
from .segments import derive as derive_segments
from .table import AccountTable


def explain_saved(directory: str | Path, record_id: str) -> tuple[dict[str, Any], list[str]]:
    """The plan row of account or opportunity ``record_id`` and its explanation lines."""
    manifest = Manifest.verified(directory, inputs=("rules", "accounts"))
    rules = load_rules(manifest.path("rules"))
    as_of = manifest.settings.get("as_of")
    run_date = dt.date.fromisoformat(as_of) if as_of else None
    row = _find(directory, "accounts", "account_id", record_id)
    if row is not None:
        record = derive_segments(rules, _record(manifest.path("accounts"), record_id, rules, "accounts"), run_date)
        territories = match_accounts(rules, record)
        names = [territories.territory_ids[t] for t in territories.territories_of(0)]
        loads = {
            user["user_id"]: {label: (entry["after"], entry.get("fair_share") or 0.0) for label, entry in user["loads"].items()}
            for user in read_summary(directory)["users"]
        }
        return row, explain_account(rules, record, row, names, loads)
    deals = manifest.input("opportunities")
    deal_row = _find(directory, "opportunities", "opportunity_id", record_id) if deals else None
    if deals is None or deal_row is None:
        raise DataError([Finding(Location(str(directory)), f"'{record_id}' is neither an account nor an opportunity of this plan")])
    deal = _record(deals.path, record_id, rules, "opportunities")
    if deal_row["account_id"]:
        account = derive_segments(rules, _record(manifest.path("accounts"), deal_row["account_id"], rules, "accounts"), run_date)
        one = joined(DealTable(deal, np.zeros(1, dtype=np.int64), []), account)
    else:  # a deal without an account: the account's fields are missing
        empty = derive_segments(rules, AccountTable.from_records([], rules.field_types), run_date)
        one = joined(DealTable(deal, np.full(1, NO_ACCOUNT, dtype=np.int64), []), empty)
    return deal_row, explain_deal(rules, one, deal_row)


def _find(directory: str | Path, table: str, key: str, value: str) -> dict[str, Any] | None:
    """The plan row whose ``key`` is ``value``: lines are tested as text first, so only the match is parsed."""
    prefix = f'{{"{key}": {json.dumps(value, ensure_ascii=False)},'
    path = Path(directory) / f"{table}.jsonl"
    if not path.exists():
        return None
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.startswith(prefix):
                return dict(json.loads(line))
    return None


def _record(path: str, value: str, rules: CompiledRules, role: str) -> AccountTable:
    """One input record as a one-row typed table (the file's own row number kept for messages)."""
    if role == "accounts":
        found = find_record(path, value, rules.field_types, rules.inputs[role], {*ACCOUNT_COLUMNS, *rules.field_types})
    else:
        found = find_record(path, value, rules.deal_field_types, rules.inputs[role], {*DEAL_INPUT_COLUMNS, *rules.deal_field_types})
    if found is None:
        raise DataError([Finding(Location(path), f"'{value}' is in the plan but no longer in its input file")])
    return found
