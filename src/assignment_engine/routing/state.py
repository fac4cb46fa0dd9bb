"""What routing remembers between records: round-robin turns, records per user per day, loads added.

:class:`MemoryState` lives as long as one :class:`Router`; :class:`SqliteState`
keeps the same in a SQLite file shared by every process routing against the
same plan. Each decision reads and writes the state inside one transaction
(``BEGIN IMMEDIATE`` in SQLite, which serialises it across processes; a lock
held for the transaction across threads), so no two decisions hand out the
same turn nor overshoot a daily cap. Transactions nest: inside an open one, a
decision is a savepoint, so ``route`` holds one transaction for the whole run
and commits it with its output (a run that writes nothing leaves no
decision). Everything is keyed by the plan id: a new plan starts afresh.

A state file is marked as this engine's (``PRAGMA application_id``, its layout
in ``user_version``); any other SQLite database is refused untouched.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from ..errors import Finding, Location, OptionError

APPLICATION_ID = int.from_bytes(b"AErs", "big")  # PRAGMA application_id of a routing state file
FORMAT = 1  # PRAGMA user_version: the layout of its tables
LOCK_SECONDS = 10.0  # how long a state file held by another process (a route run, a decision) is waited for
_TABLES = {
    "turns": "CREATE TABLE IF NOT EXISTS turns (plan TEXT, territory TEXT, user TEXT, n INTEGER, PRIMARY KEY (plan, territory, user))",
    "daily": "CREATE TABLE IF NOT EXISTS daily (plan TEXT, day TEXT, user TEXT, n INTEGER, PRIMARY KEY (plan, day, user))",
    "added": "CREATE TABLE IF NOT EXISTS added (plan TEXT, user TEXT, load TEXT, amount REAL, PRIMARY KEY (plan, user, load))",
}
_SQLITE_HEADER = b"SQLite format 3\x00"
_Key = Any
_T = TypeVar("_T")
_V = TypeVar("_V")


class MemoryState:
    """Routing state of one process (the default); safe to share between threads (a lock held per transaction).

    A transaction that fails (or a savepoint inside one) undoes its records: each change is journalled
    with the value it replaced until the outermost transaction ends."""

    def __init__(self) -> None:
        self._turns: dict[tuple[str, str], int] = {}
        self._daily: dict[tuple[str, str], int] = {}
        self._added: dict[str, dict[str, float]] = {}  # user → load → amount: read per candidate, never scanned
        self._lock = threading.RLock()
        self._depth = 0
        self._journal: list[tuple[dict[Any, Any], _Key, Any]] = []  # (table, key, value before or None) while a transaction is open

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            mark = len(self._journal)
            self._depth += 1
            try:
                yield
            except BaseException:
                for table, key, before in reversed(self._journal[mark:]):
                    if before is None:
                        del table[key]
                    else:
                        table[key] = before
                del self._journal[mark:]
                raise
            finally:
                self._depth -= 1
                if not self._depth:
                    self._journal.clear()

    def turns(self, territory: str, users: Iterable[str]) -> dict[str, int]:
        with self._lock:
            return {u: self._turns.get((territory, u), 0) for u in users}

    def daily(self, day: str, users: Iterable[str]) -> dict[str, int]:
        with self._lock:
            return {u: self._daily.get((day, u), 0) for u in users}

    def added(self, users: Iterable[str]) -> dict[str, dict[str, float]]:
        with self._lock:
            return {u: self._added[u] for u in users if u in self._added}

    def record(self, territory: str, user: str, day: str, loads: Mapping[str, float]) -> None:
        with self._lock:
            self._set(self._turns, (territory, user), self._turns.get((territory, user), 0) + 1)
            self._set(self._daily, (day, user), self._daily.get((day, user), 0) + 1)
            mine = self._added[user] if user in self._added else self._set(self._added, user, {})
            for load, amount in loads.items():
                self._set(mine, load, mine.get(load, 0.0) + amount)

    def _set(self, table: dict[Any, _V], key: _Key, value: _V) -> _V:
        if self._depth:
            self._journal.append((table, key, table.get(key)))
        table[key] = value
        return value


def _located(method: Callable[..., _T]) -> Callable[..., _T]:
    """A :class:`SqliteState` method run under the state's lock, a database error raised as an :class:`OptionError` at ``--state``."""

    @functools.wraps(method)
    def run(self: SqliteState, *args: Any, **kwargs: Any) -> _T:
        try:
            with self._lock:
                return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            raise self.error(exc) from None

    return run


class SqliteState:
    """Routing state in a SQLite file, shared by processes (standard library ``sqlite3``, WAL journal) and by threads
    (one connection behind a lock held per transaction).

    ``wait``: seconds to wait for the file while another process holds it (default :data:`LOCK_SECONDS`), then
    :class:`OptionError` saying so. A ``route`` run holds it from its first decision until its output is written.
    ``durable``: each commit reaches the disk before it returns (``synchronous=FULL``), as a ``route`` run's single
    commit must, its output being on disk already; otherwise a power loss may undo the last commits (``NORMAL``,
    an fsync saved per decision)."""

    def __init__(self, path: str | Path, plan_id: str, *, wait: float | None = None, durable: bool = False):
        self.plan, self.path = plan_id, Path(path)
        self.wait = LOCK_SECONDS if wait is None else wait
        self.durable = durable
        self._lock = threading.RLock()
        self._depth = 0
        _check_path(self.path)
        try:
            self.db = sqlite3.connect(str(path), timeout=self.wait, isolation_level=None, check_same_thread=False)
        except sqlite3.DatabaseError as exc:
            raise self.error(exc) from None
        try:
            self._open()
        except BaseException:
            self.db.close()
            raise

    @_located
    def _open(self) -> None:
        """Recognise the file (this engine's, a state file from before the marker, or new) before writing to it."""
        self.db.execute("BEGIN")  # one read of the marker and the tables (another process may be making them)
        try:
            kind = self._kind()
        finally:
            if self.db.in_transaction:
                self.db.execute("COMMIT")
        if kind != "ours":
            _retried(lambda: self.db.execute("PRAGMA journal_mode=WAL"), self.wait)
            self.db.execute("BEGIN IMMEDIATE")
            try:
                if self._kind() != "ours":  # else another process made it meanwhile
                    for create in _TABLES.values():
                        self.db.execute(create)
                    self.db.execute(f"PRAGMA application_id={APPLICATION_ID}")
                    self.db.execute(f"PRAGMA user_version={FORMAT}")
                self.db.execute("COMMIT")
            except BaseException:
                self._roll_back(0)
                raise
        self.db.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")

    def _kind(self) -> str:
        """``ours``, ``new`` (no tables) or ``legacy`` (the tables, unmarked); any other database is refused untouched."""
        db = self.db
        app, version = db.execute("PRAGMA application_id").fetchone()[0], db.execute("PRAGMA user_version").fetchone()[0]
        if app == APPLICATION_ID:
            if version > FORMAT:
                raise self.refusal(
                    f"made by a newer version of the engine (state format {version}, this one reads {FORMAT}); upgrade, or name a new file"
                )
            return "ours"
        objects = db.execute("SELECT name, sql FROM sqlite_master WHERE name NOT GLOB 'sqlite_*' ORDER BY name").fetchall()
        if app == 0 and version == 0:
            if not objects:
                return "new"
            if objects == sorted((name, create.replace(" IF NOT EXISTS", "")) for name, create in _TABLES.items()):  # as SQLite keeps them
                return "legacy"
        shown = ", ".join(name for name, _ in objects[:5]) + (", …" if len(objects) > 5 else "")
        raise self.refusal(
            f"a SQLite database this engine did not make (application_id {app}; "
            f"{shown or 'no tables'}); it was left as it is. Name a new file for the routing state"
        )

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction (``BEGIN IMMEDIATE`` … ``COMMIT``); inside an open one, a savepoint. Rolled back on any exception."""
        with self._lock:
            depth = self._depth
            self._depth = depth + 1
            try:  # BEGIN inside: a stop signal landing right after it still rolls the transaction back
                self._execute("BEGIN IMMEDIATE" if depth == 0 else f"SAVEPOINT s{depth}")
                yield
                self._execute("COMMIT" if depth == 0 else f"RELEASE s{depth}")
            except BaseException:
                self._roll_back(depth)
                raise
            finally:
                self._depth = depth

    def _roll_back(self, depth: int) -> None:
        if not self.db.in_transaction:  # SQLite rolled back already (a failed COMMIT)
            return
        with suppress(sqlite3.Error):  # the error that stopped the transaction is the one to report
            self.db.execute("ROLLBACK" if depth == 0 else f"ROLLBACK TO s{depth}")
            if depth:
                self.db.execute(f"RELEASE s{depth}")

    @_located
    def _execute(self, sql: str) -> None:
        self.db.execute(sql)

    @_located
    def turns(self, territory: str, users: Iterable[str]) -> dict[str, int]:
        users = list(users)
        rows = self.db.execute(
            f"SELECT user, n FROM turns WHERE plan=? AND territory=? AND user IN ({_marks(users)})", (self.plan, territory, *users)
        )
        found = dict(rows.fetchall())
        return {u: found.get(u, 0) for u in users}

    @_located
    def daily(self, day: str, users: Iterable[str]) -> dict[str, int]:
        users = list(users)
        rows = self.db.execute(f"SELECT user, n FROM daily WHERE plan=? AND day=? AND user IN ({_marks(users)})", (self.plan, day, *users))
        found = dict(rows.fetchall())
        return {u: found.get(u, 0) for u in users}

    @_located
    def added(self, users: Iterable[str]) -> dict[str, dict[str, float]]:
        users = list(users)
        out: dict[str, dict[str, float]] = {}
        for user, load, amount in self.db.execute(
            f"SELECT user, load, amount FROM added WHERE plan=? AND user IN ({_marks(users)})", (self.plan, *users)
        ):
            out.setdefault(user, {})[load] = amount
        return out

    @_located
    def record(self, territory: str, user: str, day: str, loads: Mapping[str, float]) -> None:
        db, plan = self.db, self.plan
        db.execute("INSERT INTO turns VALUES (?, ?, ?, 1) ON CONFLICT DO UPDATE SET n = n + 1", (plan, territory, user))
        db.execute("INSERT INTO daily VALUES (?, ?, ?, 1) ON CONFLICT DO UPDATE SET n = n + 1", (plan, day, user))
        db.executemany(
            "INSERT INTO added VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET amount = amount + excluded.amount",
            [(plan, user, load, amount) for load, amount in loads.items()],
        )

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def refusal(self, message: str) -> OptionError:
        return _refusal(self.path, message)

    def error(self, exc: sqlite3.Error) -> OptionError:
        """What a database error means to the user, by SQLite's primary result code."""
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return self.refusal(
                f"another process holds the state file (waited {self.wait:g} s: "
                "a route run holds it until its output is written); try again when it is done"
            )
        if code == sqlite3.SQLITE_READONLY:
            return self.refusal("is read-only; routing records its decisions there")
        if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            return self.refusal(f"is damaged or not a SQLite database ({exc}); restore it from a copy, or name a new file to start afresh")
        return self.refusal(f"not a usable routing state file: {exc}")


def _check_path(path: Path) -> None:
    """Refusals made before SQLite opens the file, so that a file it could not use is never touched."""
    refuse = functools.partial(_refusal, path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise refuse(f"cannot be created: the directory {path.parent} does not exist or is read-only") from None
        return
    except OSError as exc:
        raise refuse(f"cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise refuse("is not a regular file")
    if not os.access(path, os.R_OK | os.W_OK):
        raise refuse("is read-only; routing records its decisions there")
    with path.open("rb") as handle:
        head = handle.read(len(_SQLITE_HEADER))
    if head and head != _SQLITE_HEADER[: len(head)]:
        raise refuse("is not a SQLite database, so not a routing state file; it was left as it is. Name a new file")


def _refusal(path: Path, message: str) -> OptionError:
    return OptionError([Finding(Location("--state"), f"{path}: {message}")])


def _retried(step: Callable[[], Any], wait: float) -> None:
    """``step`` retried while another process holds the file, for up to ``wait`` seconds: switching a new file to WAL
    can fail at once with "database is locked" when two processes open it together (SQLite returns busy there without
    calling its busy handler, so the connection's timeout does not help)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            step()
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _marks(items: list[str]) -> str:
    return ",".join("?" * len(items)) or "NULL"
