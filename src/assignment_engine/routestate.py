"""What routing remembers between records: round-robin turns, records per user per day, loads added.

:class:`MemoryState` lives as long as one :class:`Router`; :class:`SqliteState`
keeps the same in a SQLite file shared by every process routing against the
same plan. Each decision reads and writes the state inside one ``BEGIN
IMMEDIATE`` transaction, which SQLite serialises across processes, so two
processes routing at once never hand out the same turn twice nor overshoot a
daily cap. Everything is keyed by the plan id: a new plan starts afresh.
"""

from __future__ import annotations

import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from .errors import Finding, Location, OptionError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS turns (plan TEXT, territory TEXT, user TEXT, n INTEGER, PRIMARY KEY (plan, territory, user));
CREATE TABLE IF NOT EXISTS daily (plan TEXT, day TEXT, user TEXT, n INTEGER, PRIMARY KEY (plan, day, user));
CREATE TABLE IF NOT EXISTS added (plan TEXT, user TEXT, load TEXT, amount REAL, PRIMARY KEY (plan, user, load));
"""


class MemoryState:
    """Routing state of one process (the default)."""

    def __init__(self) -> None:
        self._turns: dict[tuple[str, str], int] = defaultdict(int)
        self._daily: dict[tuple[str, str], int] = defaultdict(int)
        self._added: dict[str, dict[str, float]] = {}  # user → load → amount: read per candidate, never scanned

    @contextmanager
    def transaction(self) -> Iterator[None]:
        yield

    def turns(self, territory: str, users: Iterable[str]) -> dict[str, int]:
        return {u: self._turns.get((territory, u), 0) for u in users}

    def daily(self, day: str, users: Iterable[str]) -> dict[str, int]:
        return {u: self._daily.get((day, u), 0) for u in users}

    def added(self, users: Iterable[str]) -> dict[str, dict[str, float]]:
        return {u: self._added[u] for u in users if u in self._added}

    def record(self, territory: str, user: str, day: str, loads: Mapping[str, float]) -> None:
        self._turns[territory, user] += 1
        self._daily[day, user] += 1
        mine = self._added.setdefault(user, {})
        for load, amount in loads.items():
            mine[load] = mine.get(load, 0.0) + amount


OPEN_SECONDS = 60  # how long opening a state file waits for another process's lock


def _set_up(db: sqlite3.Connection) -> None:
    """WAL journal and the tables, retried while another process holds the file: switching a new file to
    WAL can fail at once with "database is locked" when two processes open it together (SQLite returns
    busy there without calling its busy handler, so the connection's timeout does not help)."""
    deadline = time.monotonic() + OPEN_SECONDS
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class SqliteState:
    """Routing state in a SQLite file, shared by processes (standard library ``sqlite3``, WAL journal)."""

    def __init__(self, path: str | Path, plan_id: str):
        self.plan = plan_id
        try:
            self.db = sqlite3.connect(str(path), timeout=OPEN_SECONDS, isolation_level=None)
            _set_up(self.db)
        except sqlite3.DatabaseError as exc:
            raise OptionError([Finding(Location("--state"), f"{path}: not a usable routing state file: {exc}")]) from None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def turns(self, territory: str, users: Iterable[str]) -> dict[str, int]:
        users = list(users)
        rows = self.db.execute(f"SELECT user, n FROM turns WHERE plan=? AND territory=? AND user IN ({_marks(users)})", (self.plan, territory, *users))
        found = dict(rows.fetchall())
        return {u: found.get(u, 0) for u in users}

    def daily(self, day: str, users: Iterable[str]) -> dict[str, int]:
        users = list(users)
        rows = self.db.execute(f"SELECT user, n FROM daily WHERE plan=? AND day=? AND user IN ({_marks(users)})", (self.plan, day, *users))
        found = dict(rows.fetchall())
        return {u: found.get(u, 0) for u in users}

    def added(self, users: Iterable[str]) -> dict[str, dict[str, float]]:
        users = list(users)
        out: dict[str, dict[str, float]] = {}
        for user, load, amount in self.db.execute(f"SELECT user, load, amount FROM added WHERE plan=? AND user IN ({_marks(users)})", (self.plan, *users)):
            out.setdefault(user, {})[load] = amount
        return out

    def record(self, territory: str, user: str, day: str, loads: Mapping[str, float]) -> None:
        db, plan = self.db, self.plan
        db.execute("INSERT INTO turns VALUES (?, ?, ?, 1) ON CONFLICT DO UPDATE SET n = n + 1", (plan, territory, user))
        db.execute("INSERT INTO daily VALUES (?, ?, ?, 1) ON CONFLICT DO UPDATE SET n = n + 1", (plan, day, user))
        db.executemany(
            "INSERT INTO added VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET amount = amount + excluded.amount", [(plan, user, load, amount) for load, amount in loads.items()]
        )

    def close(self) -> None:
        self.db.close()


def _marks(items: list[str]) -> str:
    return ",".join("?" * len(items)) or "NULL"
