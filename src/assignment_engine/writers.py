"""Write a plan to a directory: every file atomically, so a crash never leaves half a file.

Each file is written to a temporary name in the target directory, flushed to
disk, then renamed over the final name (an atomic step on POSIX and Windows).
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

from .opportunities import DEAL_COLUMNS, DealPlan
from .plan import Plan

ACCOUNT_COLUMNS = ["account_id", "owner_id", "territory_id", "previous_owner_id", "moved", "status", "rule", "reason"]


@contextmanager
def atomic_open(path: Path) -> Iterator[IO[str]]:
    """A text handle whose content replaces ``path`` only when the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a plan is an ordinary shared file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_table(base: Path, columns: list[str], rows: Iterable[dict[str, Any]]) -> None:
    """``base.csv`` and ``base.jsonl`` in one pass over ``rows`` (rows may be costly to build)."""
    with ExitStack() as stack:
        csv_handle = stack.enter_context(atomic_open(base.with_suffix(".csv")))
        jsonl_handle = stack.enter_context(atomic_open(base.with_suffix(".jsonl")))
        writer = csv.writer(csv_handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row[c]) for c in columns])
            jsonl_handle.write(json.dumps(row, ensure_ascii=False))
            jsonl_handle.write("\n")


def _cell(v: Any) -> Any:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return ";".join(v)
    return v


def write_json(path: Path, data: Any) -> None:
    with atomic_open(path) as handle:
        json.dump(data, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


def write_plan(plan: Plan, out: str | Path, progress: Callable[[str], None] | None = None, *, deals: DealPlan | None = None) -> dict[str, Any]:
    """``accounts.csv``, ``accounts.jsonl`` (and ``opportunities.*`` with deals) and ``summary.json``; returns the summary."""
    out = Path(out)
    say = progress or (lambda _m: None)
    say(f"writing {out / 'accounts.csv'} and accounts.jsonl")
    write_table(out / "accounts", ACCOUNT_COLUMNS, plan.rows())
    summary = plan.summary()
    if deals is not None:
        say(f"writing {out / 'opportunities.csv'} and opportunities.jsonl")
        write_table(out / "opportunities", DEAL_COLUMNS, deals.rows())
        summary["opportunities"] = deals.summary()
    write_json(out / "summary.json", summary)
    return summary
