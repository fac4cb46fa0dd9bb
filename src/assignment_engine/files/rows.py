"""A saved plan's rows and summary, read as they were written and distrusted until checked.

:func:`plan_rows` streams ``accounts.jsonl`` or ``opportunities.jsonl`` a block
at a time, each row checked for the keys and types its reader uses
(:class:`Shape`); :func:`read_summary` checks ``summary.json`` against the parts
readers use; :class:`OwnerCheck` holds every row's owner to what its status
allows, against the users file and the rule file. The files are opened as
regular files only (:func:`files.manifest.open_regular`).
"""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Collection, Iterator, Mapping
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import DataError, Finding, Location
from ..tables.cells import shown

if TYPE_CHECKING:
    from ..rules.compile import CompiledRules
    from ..tables.table import User

from .manifest import open_regular, read_text


class Shape:
    """The keys a reader uses of each plan row, by JSON type, checked as rows are read: a row that is not an
    object, lacks a key or holds another type is a located :class:`DataError`, not a traceback later.

    A block of rows is checked in a few C-level passes per type (``itemgetter``, ``map(type)``), so a million
    rows cost a fraction of what parsing them does; a block that fails is searched row by row for the message.
    """

    _TYPES = (
        (frozenset({str}), "text"),
        (frozenset({int, float}), "a number"),
        (frozenset({bool}), "true or false"),
        (frozenset({list}), "a list of text"),
    )

    def __init__(
        self,
        text: tuple[str, ...] = (),
        numbers: tuple[str, ...] = (),
        flags: tuple[str, ...] = (),
        lists: tuple[str, ...] = (),
        *,
        hints: Mapping[str, str] | None = None,
    ):
        self.keys = text + numbers + flags + lists
        self._groups = [(keys, types, what) for keys, (types, what) in zip((text, numbers, flags, lists), self._TYPES, strict=True) if keys]
        self._lists = lists
        self._hints = dict(hints or {})

    def fits(self, rows: list[Any]) -> bool:
        """Whether every row has the keys, of their types (bool is not a number: types are compared exactly)."""
        if not {dict}.issuperset(map(type, rows)):
            return False
        try:
            for keys, types, _ in self._groups:
                if not types.issuperset(map(type, _values(keys, rows))):
                    return False
            return {str}.issuperset(map(type, itertools.chain.from_iterable(_values(self._lists, rows))))
        except KeyError:
            return False

    def problem(self, row: Any) -> str | None:
        """What is wrong with one row, or None."""
        if not isinstance(row, dict):
            return f"a plan row must be a JSON object, got {shown(row)}"
        for keys, types, what in self._groups:
            for key in keys:
                if key not in row:
                    return f"plan row lacks {key}{self._hints.get(key, '')}"
                if type(row[key]) not in types or (key in self._lists and not all(type(v) is str for v in row[key])):
                    return f"plan row's {key} must be {what}, got {shown(row[key])}"
        return None


def _values(keys: tuple[str, ...], rows: list[dict[str, Any]]) -> Iterator[Any]:
    """The values of ``keys`` in every row (a KeyError when one lacks a key)."""
    if not keys:
        return iter(())
    get = itemgetter(*keys)
    return map(get, rows) if len(keys) == 1 else itertools.chain.from_iterable(map(get, rows))


def plan_rows(directory: str | Path, table: str = "accounts", *, shape: Shape) -> Iterator[dict[str, Any]]:
    """The rows of a saved plan's ``accounts`` or ``opportunities`` table, as written (raw values, from JSON Lines),
    each with the keys and types of ``shape`` (else a :class:`DataError` at its line).

    Lines are parsed a few thousand at a time as one JSON array (one call into the C decoder instead of one
    a line: two to three times faster); a block that does not parse as one value a line is parsed line by
    line, so a damaged line is reported at its own number."""
    path = Path(directory) / f"{table}.jsonl"
    try:
        raw = open_regular(path)
    except OSError as exc:
        raise DataError([Finding(Location(str(path)), f"cannot read the plan's {table}: {exc.strerror}")]) from None
    with io.TextIOWrapper(raw, encoding="utf-8") as handle:
        number = 0
        try:
            while lines := list(itertools.islice(handle, _BLOCK)):
                block = _block(lines, path, number)
                if not shape.fits(block):
                    for k, row in enumerate(block, start=number + 1):
                        if (why := shape.problem(row)) is not None:
                            raise DataError([Finding(Location(str(path), k), why)])
                number += len(lines)
                yield from block
        except UnicodeDecodeError as exc:
            raise DataError(
                [Finding(Location(str(path), _undecodable_line(path)), f"damaged plan file: not UTF-8 text ({exc.reason})")]
            ) from None


def _block(lines: list[str], path: Path, number: int) -> list[Any]:
    """The values of ``lines`` (the ones after line ``number``), one a line."""
    try:
        block = json.loads("[" + ",".join(lines) + "]")
    except (ValueError, RecursionError):
        block = None
    if block is not None and len(block) == len(lines):
        return list(block)
    values = []
    for k, line in enumerate(lines, start=number + 1):
        try:
            values.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError([Finding(Location(str(path), k, exc.colno), f"damaged plan file: {exc.msg}")]) from None
        except (ValueError, RecursionError) as exc:  # an integer past Python's 4,300 digits; nesting past the recursion limit
            raise DataError([Finding(Location(str(path), k), f"damaged plan file: {exc}")]) from None
    return values


_BLOCK = 4096  # lines parsed at once by plan_rows


def _undecodable_line(path: Path) -> int:
    """The number of the first line of ``path`` that is not UTF-8 (a damaged file's rare path: read again)."""
    with open_regular(path) as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 1


class _LoadJson(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    before: float
    after: float
    fair_share: float | None = None


class _UserJson(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    user_id: str
    active: bool
    loads: dict[str, _LoadJson]


class _BandJson(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    balance: str
    tolerance: float
    min_deviation: float | None
    max_deviation: float | None
    min_deviation_before: float | None
    max_deviation_before: float | None
    users_outside_tolerance: list[str]


class _MovedJson(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    accounts: int
    value: float
    value_measure: str


class _UnassignedJson(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    account_id: str
    reason: str


class _ObjectiveJson(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    status: str
    value: float
    bound: float
    greedy_start: float


class _ComponentJson(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    users: list[str]
    units: int
    pairs: int
    status: str
    moves: int
    moves_lower_bound: int
    objectives: dict[str, _ObjectiveJson]
    seconds: float
    stopped_on: Literal["optimal", "effort", "time_limit", "size"] = "optimal"


class _SolverJson(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    per_component: list[_ComponentJson]


class _IncrementalJson(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    removed: int = Field(ge=0)


class _SummaryJson(BaseModel):
    """The parts of summary.json that readers of a saved plan use (review, explain, the router, Plan.load), typed."""

    model_config = ConfigDict(extra="allow", strict=True)
    accounts: int
    moved: _MovedJson
    balance: list[_BandJson]
    users: list[_UserJson]
    unassigned: list[_UnassignedJson]
    solver: _SolverJson
    incremental: _IncrementalJson | None = None
    opportunities: dict[str, Any] | None = None


def read_summary(directory: str | Path) -> dict[str, Any]:
    """A saved plan's ``summary.json``, checked for the keys and types its readers use."""
    path = Path(directory) / "summary.json"
    try:
        summary = json.loads(read_text(path))
    except OSError as exc:
        raise DataError([Finding(Location(str(path)), f"cannot read the plan summary: {exc.strerror}")]) from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DataError([Finding(Location(str(path)), f"cannot read the plan summary: {exc}")]) from None
    try:
        _SummaryJson.model_validate(summary)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise DataError([Finding(Location(str(path)), f"damaged plan summary: {key}: {first['msg']}")]) from None
    return dict(summary)


class OwnerCheck:
    """What each plan row's owner must be, given its status, checked against the (verified) rule file and users file.

    - ``assigned`` and ``unchanged`` accounts: an active owner member of the row's territory (the optimizer, and an
      incremental run's kept accounts, choose among those only);
    - ``locked`` and ``excluded`` accounts and deals, and deals ``closed``, ``kept`` or with ``no_account``: the owner
      they had (``previous_owner_id``), who may be anyone the CRM names;
    - ``pinned`` accounts: the owner of their locked or excluded ultimate parent (checked by :meth:`done`,
      once the parents' rows are read);
    - ``unassigned`` accounts: no owner;
    - deals that ``follows_account``: an owner some account of the plan has (accounts are read first).

    An owner the plan invents, such as ``=HYPERLINK("x")``, is a :class:`DataError` at its row.
    """

    ACCOUNT_KEYS = (
        "account_id",
        "owner_id",
        "previous_owner_id",
        "territory_id",
        "status",
        "ultimate_parent_id",
    )  # text, as checked (Shape)
    DEAL_KEYS = ("opportunity_id", "owner_id", "previous_owner_id", "status")
    _KEEPS = frozenset({"locked", "excluded", "closed", "kept", "no_account"})

    def __init__(self, rules: CompiledRules, users: Collection[User], users_file: str):
        active = {u.id for u in users if u.active}
        self._members = {tid: frozenset(u for u in node.owners if u in active) for tid, node in rules.territories.items()}
        self._users = {u.id for u in users}
        self._users_file = users_file
        self._fixed: dict[str, str] = {}  # locked or excluded account → its owner: what pinned accounts follow
        self._pinned: list[tuple[Location, str, str, str]] = []  # (where, account, ultimate parent, owner)
        self._account_owners: set[str] = set()

    def account(self, where: Location, row: dict[str, Any]) -> None:
        """Check one account row (its :attr:`ACCOUNT_KEYS` checked as text)."""
        owner, status = row["owner_id"], row["status"]
        self._account_owners.add(owner)
        if status in ("assigned", "unchanged"):
            why = self._member(owner, row["territory_id"])
        elif status in ("locked", "excluded"):
            self._fixed[row["account_id"]] = owner
            why = self._kept(row)
        elif status == "pinned":
            self._pinned.append((where, row["account_id"], row["ultimate_parent_id"], owner))
            why = None
        elif status == "unassigned":
            why = None if owner == "" else f"is unassigned but has owner {shown(owner)}"
        else:
            why = f"has an unknown status {shown(status)}"
        if why is not None:
            raise DataError([Finding(where, f"account {shown(row['account_id'])} {why}")])

    def deal(self, where: Location, row: dict[str, Any]) -> None:
        """Check one opportunity row (its :attr:`DEAL_KEYS` checked as text), once every account row was."""
        owner, status = row["owner_id"], row["status"]
        if status == "follows_account":
            why = (
                None
                if owner and owner in self._account_owners
                else f"follows its account to {shown(owner)}, who owns no account of the plan"
            )
        elif status in self._KEEPS:
            why = self._kept(row)
        else:
            why = f"has an unknown status {shown(status)}"
        if why is not None:
            raise DataError([Finding(where, f"opportunity {shown(row['opportunity_id'])} {why}")])

    def done(self) -> None:
        """Check the pinned accounts against their ultimate parents' owners."""
        for where, account, parent, owner in self._pinned:
            if parent not in self._fixed:
                raise DataError(
                    [
                        Finding(
                            where,
                            f"account {shown(account)} is pinned to {shown(parent)}, which is no locked or excluded account of the plan",
                        )
                    ]
                )
            if self._fixed[parent] != owner:
                raise DataError(
                    [
                        Finding(
                            where,
                            f"account {shown(account)} is pinned to {shown(parent)} but has "
                            f"owner {shown(owner)}, not its parent's {shown(self._fixed[parent])}",
                        )
                    ]
                )

    def _member(self, owner: str, territory: str) -> str | None:
        if owner not in self._users:
            return f"has owner {shown(owner)}, who is not in the users file {self._users_file}"
        if territory not in self._members:
            return f"has territory {shown(territory)}, which is not in the rule file"
        return (
            None
            if owner in self._members[territory]
            else f"has owner {shown(owner)}, who is not an active owner member of its territory {territory}"
        )

    @staticmethod
    def _kept(row: dict[str, Any]) -> str | None:
        owner, previous = row["owner_id"], row["previous_owner_id"]
        return None if owner == previous else f"is {row['status']} but its owner changes from {shown(previous)} to {shown(owner)}"
