"""Turn a reviewed, saved plan into update files for the CRM and the next run's accounts file.

``apply_plan(plan_dir, out)`` writes, as one unit (see :func:`files.output.output_directory`):

- ``account_updates.csv``: the accounts whose owner changes (and, in the ``csv``
  format, whose territory differs from a ``territory_id`` column of the input),
  ``account_id, owner_id, territory_id, previous_owner_id``; ``--format
  salesforce`` writes ``Id,OwnerId`` for Data Loader instead.
- ``opportunity_updates.csv`` likewise, when the plan has opportunities.
- ``accounts.csv`` (``accounts.jsonl`` for a JSON Lines input): the input accounts
  file with each changed ``owner_id`` replaced, everything else byte for byte as
  it was; likewise ``opportunities.csv`` / ``.jsonl``. They are what the CRM holds
  once the update files are loaded, ready to be the next run's inputs.
- ``unassigned.csv``: accounts the plan leaves without an owner (unassigned, or
  following an ultimate parent that has none). They are not
  updates (a CRM record keeps its owner; Salesforce and Dynamics cannot clear
  one), so they keep their owner in the copy as in the CRM.
- ``apply.json``: the plan id and the counts.

Nothing is written unless every input file named in ``plan.json`` is byte for
byte (sha256) what the plan was made from: otherwise the reviewed plan is no
longer the one that would be applied. The inputs are hashed again as they are
copied, so a file changing during the run is caught too. Nor is it written
unless every row's owner is one its status allows, given the (verified) users
file and rule file (:class:`files.rows.OwnerCheck`): a plan edited to hand an
account to anyone else is refused at that row.

The input files and the plan's rows are read in lockstep (the plan lists the
accounts in input order), one row at a time: memory does not grow with the book
(beyond the owners of locked and excluded accounts, which pinned ones follow).
Values in the update files and copies are exact (no spreadsheet formula
neutralisation): they are ids a CRM and the next run must match.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from ..errors import DataError, Finding, Location, OptionError
from ..files.manifest import MANIFEST, ROLES, InputFile, Manifest, open_regular
from ..files.output import check_output, durable_open, formula_like, formula_note, output_directory, write_json
from ..files.readers import SPREADSHEETS, read_users, value_at
from ..files.rows import OwnerCheck, Shape, plan_rows
from ..rules.inputs import ColumnMap
from ..tables.cells import as_text

FORMATS: tuple[str, ...] = ("csv", "salesforce")
APPLY_MANIFEST = "apply.json"
UPDATE_FILES = frozenset(
    {
        "account_updates.csv",
        "opportunity_updates.csv",
        "accounts.csv",
        "accounts.jsonl",
        "opportunities.csv",
        "opportunities.jsonl",
        "unassigned.csv",
        APPLY_MANIFEST,
    }
)
_NO_CHANGE = frozenset({"locked", "excluded", "closed", "kept", "unassigned"})  # statuses that never move a record
Rewrite = Callable[[str | None], None]  # given the new owner (None: unchanged), writes the record to the copy


@dataclass(frozen=True)
class _Table:
    """How one record type is named in the plan, the input and each update format."""

    role: str  # the plan's table and the manifest's input role: accounts, opportunities
    updates: str  # the update file's name
    id_column: str  # in the plan's rows
    extra: tuple[str, ...]  # plan columns the csv format carries between the id and owner_id
    headers: dict[str, tuple[str, str]]  # CRM format → (id column, owner column)
    shape: Shape  # what is read of the plan's rows: the columns written, and what the owner check reads


_ACCOUNTS = _Table(
    "accounts", "account_updates.csv", "account_id", (), {"salesforce": ("Id", "OwnerId")}, Shape((*OwnerCheck.ACCOUNT_KEYS, "reason"))
)
_DEALS = _Table(
    "opportunities",
    "opportunity_updates.csv",
    "opportunity_id",
    ("account_id",),
    {"salesforce": ("Id", "OwnerId")},
    Shape((*OwnerCheck.DEAL_KEYS, "account_id", "territory_id")),
)


@dataclass(frozen=True)
class ApplyResult:
    """What ``apply_plan`` wrote: counts per record type, and the files."""

    plan_id: str
    format: str
    out: str
    accounts: int
    account_updates: int
    owner_changes: int  # account updates that change the owner (the rest: territory only)
    unassigned: int  # accounts the plan leaves without an owner, not locked or excluded (listed in unassigned.csv, not updated)
    unassigned_keeping_owner: int  # of those, accounts that have an owner in the CRM and keep it
    opportunities: int = 0
    opportunity_updates: int = 0
    formula_like_cells: int = 0  # cells of the update files a spreadsheet would run as a formula (written exactly)
    files: list[str] = field(default_factory=list)

    def line(self) -> str:
        """The one-line summary the command prints."""
        text = (
            f"plan {self.plan_id} applied to {self.out} ({self.format}): "
            f"{_count(self.account_updates, 'account update')} of {_count(self.accounts, 'account')}"
        )
        if self.account_updates != self.owner_changes:
            text += f" ({self.account_updates - self.owner_changes:,} territory only)"
        if "opportunity_updates.csv" in self.files:
            text += f", {_count(self.opportunity_updates, 'opportunity update')} of {self.opportunities:,}"
        if self.unassigned:
            text += (
                f"; not updated: {_count(self.unassigned, 'account')} without an owner in the plan, "
                f"{self.unassigned_keeping_owner:,} keeping a current one (unassigned.csv)"
            )
        text += formula_note(self.formula_like_cells)
        return text


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


@dataclass
class _Counts:
    rows: int = 0
    updates: int = 0
    owner_changes: int = 0
    unassigned: int = 0
    unassigned_keeping_owner: int = 0
    formula_like: int = 0


def apply_plan(plan_dir: str | Path, out: str | Path, *, format: str = "csv", progress: Callable[[str], None] | None = None) -> ApplyResult:
    """Write the update files of the saved plan in ``plan_dir`` to ``out`` (replaced whole, as one unit).

    Raises :class:`DataError` (nothing written) when ``plan_dir`` holds no plan,
    or when an input file named in its ``plan.json`` changed since the plan was
    made (one finding per file); :class:`OptionError` for an unknown ``format``
    or an unusable ``out`` (see :func:`files.output.check_output`).
    """
    say = progress or (lambda _m: None)
    if format not in FORMATS:
        raise OptionError([Finding(Location("--format"), f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")])
    plan_dir = Path(plan_dir)
    consequence = "; nothing was written: re-run assign and review the new plan"
    manifest = Manifest.verified(plan_dir, inputs=("rules", "accounts", "users"), optional=ROLES, consequence=consequence)
    where = str(plan_dir / MANIFEST)
    plan_files = [plan_dir / MANIFEST, plan_dir / "accounts.jsonl", plan_dir / "opportunities.jsonl"]
    inputs: list[str | Path] = [*(f.path for f in manifest.inputs), *plan_files]
    check_output(out, inputs, "--out", UPDATE_FILES, APPLY_MANIFEST)  # before any work; output_directory checks again
    say(f"plan {manifest.plan_id}: its files and the {len(manifest.inputs)} input files are as they were ({where})")
    accounts_input = manifest.input("accounts")
    assert accounts_input is not None  # verified above
    deals_input = manifest.input("opportunities")
    for source in (accounts_input, deals_input):
        if source is not None and Path(source.path).suffix.lower() in (*SPREADSHEETS, ".parquet"):
            raise DataError(
                [
                    Finding(
                        Location(source.path), "apply rewrites CSV and JSON Lines inputs only; export this file as CSV, plan it, then apply"
                    )
                ]
            )
    rules = manifest.rules(plan_dir)
    owners = OwnerCheck(rules, read_users(manifest.path("users"), list(rules.measures), rules.inputs["users"]), manifest.path("users"))
    files: list[str] = []
    with output_directory(out, inputs, option="--out", owned=UPDATE_FILES, marker=APPLY_MANIFEST) as staging:
        say(f"writing account_updates.csv and the applied accounts file from {accounts_input.path}")
        accounts = _apply_table(_ACCOUNTS, plan_dir, accounts_input, staging, format, files, rules.inputs["accounts"], owners.account)
        owners.done()
        deals = _Counts()
        if deals_input is not None:
            say(f"writing opportunity_updates.csv and the applied opportunities file from {deals_input.path}")
            deals = _apply_table(_DEALS, plan_dir, deals_input, staging, format, files, rules.inputs["opportunities"], owners.deal)
        result = ApplyResult(
            plan_id=manifest.plan_id,
            format=format,
            out=str(out),
            accounts=accounts.rows,
            account_updates=accounts.updates,
            owner_changes=accounts.owner_changes,
            unassigned=accounts.unassigned,
            unassigned_keeping_owner=accounts.unassigned_keeping_owner,
            opportunities=deals.rows,
            opportunity_updates=deals.updates,
            formula_like_cells=accounts.formula_like + deals.formula_like,
            files=sorted([*files, APPLY_MANIFEST]),
        )
        write_json(staging / APPLY_MANIFEST, {"plan_dir": str(plan_dir.resolve()), **asdict(result)})
    return result


def _apply_table(
    kind: _Table,
    plan_dir: Path,
    source: InputFile,
    staging: Path,
    format: str,
    files: list[str],
    columns: ColumnMap,
    check: Callable[[Location, dict[str, Any]], None],
) -> _Counts:
    """One pass over the input file and the plan's rows: the update file, the applied copy (and unassigned.csv).
    Each row's owner is ``check``ed (see :class:`files.rows.OwnerCheck`) before anything is written of it."""
    counts = _Counts()
    jsonl = Path(source.path).suffix.lower() in (".jsonl", ".ndjson")
    copy_name = f"{kind.role}.{'jsonl' if jsonl else 'csv'}"
    updates_name = kind.updates
    plan = plan_rows(plan_dir, kind.role, shape=kind.shape)
    plan_file = str(plan_dir / f"{kind.role}.jsonl")
    with ExitStack() as stack:
        hashing = _Hashing(stack.enter_context(open_regular(source.path)))
        text = stack.enter_context(io.TextIOWrapper(io.BufferedReader(hashing, 1 << 20), encoding="utf-8", newline=""))
        copy = stack.enter_context(durable_open(staging / copy_name, "x"))
        updates = csv.writer(stack.enter_context(durable_open(staging / updates_name, "x")))
        if format == "csv":
            updates.writerow([kind.id_column, *kind.extra, "owner_id", "territory_id", "previous_owner_id"])
        else:
            updates.writerow(kind.headers[format])
        unassigned = None
        if kind is _ACCOUNTS:
            unassigned = csv.writer(stack.enter_context(durable_open(staging / "unassigned.csv", "x")))
            unassigned.writerow(["account_id", "previous_owner_id", "status", "reason"])
        records = _jsonl_records(text, copy, source.path, columns) if jsonl else _csv_records(text, copy, source.path, columns)
        for number, record_id, territory, rewrite in records:
            row = next(plan, None)
            if row is None or row[kind.id_column] != record_id.strip():  # the plan holds ids as the engine reads them, stripped
                found = "no more rows" if row is None else f"{kind.id_column} {row[kind.id_column]!r}"
                raise DataError(
                    [
                        Finding(
                            Location(source.path, number),
                            f"the plan's {kind.role}.jsonl has {found} where this file has {record_id!r}: "
                            f"the plan in {plan_dir} was not made from this file",
                        )
                    ]
                )
            counts.rows += 1
            check(Location(plan_file, counts.rows), row)
            owner, previous, status = row["owner_id"], row["previous_owner_id"], row["status"]
            moves = owner != previous and bool(owner) and status not in _NO_CHANGE
            if (
                not owner and status not in ("locked", "excluded") and unassigned is not None
            ):  # unassigned, or pinned to an owner-less parent
                counts.unassigned += 1
                counts.unassigned_keeping_owner += bool(previous)
                unassigned.writerow([record_id, previous, status, row["reason"]])
            rewrite(owner if moves else None)
            territory_differs = format == "csv" and territory is not None and territory != row["territory_id"] and status not in _NO_CHANGE
            if not (moves or territory_differs):
                continue
            counts.updates += 1
            counts.owner_changes += moves
            if format == "csv":
                cells = [record_id, *(row[c] for c in kind.extra), owner, row["territory_id"], previous]
            else:
                cells = [record_id, owner]
            counts.formula_like += formula_like(cells)
            updates.writerow(cells)
        if next(plan, None) is not None:
            raise DataError(
                [
                    Finding(
                        Location(source.path),
                        f"the plan's {kind.role}.jsonl has more rows than this file: the plan in {plan_dir} was not made from this file",
                    )
                ]
            )
        while text.read(1 << 20):  # hash to the end (trailing blank lines)
            pass
        if hashing.hexdigest() != source.sha256:
            raise DataError(
                [
                    Finding(
                        Location(source.path),
                        "changed while the plan was being applied; nothing was written: re-run assign and review the new plan",
                    )
                ]
            )
    if source.rows is not None and counts.rows != source.rows:
        raise DataError([Finding(Location(source.path), f"{counts.rows} rows read, the plan's manifest says {source.rows}")])
    files += [updates_name, copy_name, *(["unassigned.csv"] if kind is _ACCOUNTS else [])]
    return counts


def _csv_records(text: IO[str], copy: IO[str], path: str, columns: ColumnMap) -> Iterator[tuple[int, str, str | None, Rewrite]]:
    """``(line, id, territory_id or None, rewrite)`` per record of a CSV file, copying what is not a record verbatim.

    Records are read as the engine's reader reads them (Python's csv module,
    header names stripped, columns named through the rule file's ``inputs:``);
    each record's raw text is kept, so an unchanged record is copied byte for
    byte and a changed one differs only in its owner cell. The id is the
    cell's exact text (the CRM matches it), unlike the engine's, stripped.
    """
    lines = _Taken(text)
    reader = csv.reader(lines)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise DataError([Finding(Location(path, 1), f"CSV error: {exc}")]) from None
    if header is None:
        raise DataError([Finding(Location(path, 1), "the file is empty (expected a header row)")])
    names = [h.strip() for h in header]
    names[0] = names[0].removeprefix("\ufeff").strip()
    id_at, owner_at, territory_at = (_column(names, columns, name) for name in ("id", "owner_id", "territory_id"))
    if id_at is None:
        raise DataError([Finding(Location(path, 1), f"missing required column {columns.candidates('id')[0]!r}")])
    raw = lines.take()
    if owner_at is None:  # a last owner column (named as the next run reads it), empty where the owner does not change
        body, end = _split_end(raw)
        copy.write(body + "," + _quoted(columns.candidates("owner_id")[0]) + end)
    else:
        copy.write(raw)
    start = reader.line_num + 1
    try:
        for record in reader:
            raw = lines.take()
            if not record:  # a blank line: skipped by the reader, kept in the copy
                copy.write(raw)
                start = reader.line_num + 1
                continue
            if len(record) != len(names):
                raise DataError([Finding(Location(path, start), f"expected {len(names)} columns as in the header, found {len(record)}")])

            def rewrite(owner: str | None, raw: str = raw, record: list[str] = record) -> None:
                if owner_at is None:
                    body, end = _split_end(raw)
                    copy.write(body + "," + (_quoted(owner) if owner is not None else "") + end)
                elif owner is None:
                    copy.write(raw)
                else:
                    copy.write(_replace_cell(raw, record, owner_at, owner))

            yield start, record[id_at], None if territory_at is None else record[territory_at].strip(), rewrite
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DataError([Finding(Location(path, reader.line_num), f"CSV error: {exc}")]) from None
    copy.write(lines.take())


def _column(names: list[str], columns: ColumnMap, name: str) -> int | None:
    """Where the file holds the engine's ``name``: the first of its candidate columns present."""
    return next((names.index(c) for c in columns.candidates(name) if c in names), None)


def _jsonl_records(text: IO[str], copy: IO[str], path: str, columns: ColumnMap) -> Iterator[tuple[int, str, str | None, Rewrite]]:
    """``(line, id, territory_id or None, rewrite)`` per record of a JSON Lines file, as the engine's reader reads it.

    An unchanged line is copied byte for byte; a changed one is the same object
    re-serialised (same keys in the same order, same values) with ``owner_id``
    set where the reader found it (a dotted path: in the nested object). The
    id is exact, as in :func:`_csv_records`.
    """
    for number, line in enumerate(text, start=1):
        bom = "\ufeff" if number == 1 and line.startswith("\ufeff") else ""
        body, end = _split_end(line[len(bom) :])
        if not body.strip():
            copy.write(line)
            continue
        try:
            record = json.loads(body)
        except (json.JSONDecodeError, RecursionError, ValueError) as exc:
            raise DataError([Finding(Location(path, number), f"invalid JSON: {exc}")]) from None
        if not isinstance(record, dict):
            raise DataError([Finding(Location(path, number, 1), "each line must be a JSON object")])
        key_of = {
            name: next((c for c in columns.candidates(name) if _has(record, c)), columns.candidates(name)[0])
            for name in ("id", "owner_id", "territory_id")
        }
        raw_id, territory = _value(record, key_of["id"]), _value(record, key_of["territory_id"])

        def rewrite(
            owner: str | None,
            line: str = line,
            record: dict[str, Any] = record,
            bom: str = bom,
            end: str = end,
            number: int = number,
            key: str = key_of["owner_id"],
        ) -> None:
            if owner is None:
                copy.write(line)
            else:
                _set_value(record, key, owner, Location(path, number))
                copy.write(bom + json.dumps(record, ensure_ascii=False) + end)

        yield number, "" if raw_id is None else as_text(raw_id), None if territory is None else as_text(territory).strip(), rewrite


def _has(record: dict[str, Any], key: str) -> bool:
    """Whether the engine's reader finds ``key`` in a record: the key itself, else a value at a dotted path into nested objects."""
    return key in record or value_at(record, key) is not None


def _value(record: dict[str, Any], key: str) -> Any:
    """The value the engine's reader takes for ``key`` (see :func:`_has`); None when absent."""
    return record[key] if key in record else value_at(record, key)


def _set_value(record: dict[str, Any], key: str, value: str, where: Location) -> None:
    """Set the value :func:`_value` reads, in place: a dotted path's nested value (objects created where absent), not a new flat key."""
    if key in record or "." not in key:
        record[key] = value
        return
    *steps, last = key.split(".")
    node = record
    for depth, step in enumerate(steps, start=1):
        if node.get(step) is None:
            node[step] = {}
        node = node[step]
        if not isinstance(node, dict):
            raise DataError([Finding(where, f"{'.'.join(steps[:depth])} is not a JSON object, so {key} cannot be set to the new owner")])
    node[last] = value


def _replace_cell(raw: str, record: list[str], at: int, value: str) -> str:
    """The raw CSV record with only cell ``at`` replaced; other cells keep their exact text (quoting included)."""
    body, end = _split_end(raw)
    spans = _cell_spans(body)
    if spans is not None and len(spans) == len(record):
        spans[at] = _quoted(value)
        candidate = ",".join(spans) + end
        if next(csv.reader(io.StringIO(candidate, newline="")), None) == [*record[:at], value, *record[at + 1 :]]:
            return candidate
    # a record the simple splitter does not read as the csv module does (stray quotes): re-written whole
    return _csv_line([*record[:at], value, *record[at + 1 :]]) + end


def _cell_spans(body: str) -> list[str] | None:
    """The raw text of each cell of one CSV record (RFC 4180 quoting), or None when it is not that simple."""
    spans: list[str] = []
    i, n = 0, len(body)
    while True:
        start = i
        if i < n and body[i] == '"':
            i += 1
            while True:
                j = body.find('"', i)
                if j < 0:
                    return None
                if body.startswith('""', j):
                    i = j + 2
                    continue
                i = j + 1
                break
        else:
            j = body.find(",", i)
            i = n if j < 0 else j
        spans.append(body[start:i])
        if i == n:
            return spans
        if body[i] != ",":
            return None
        i += 1


def _quoted(value: str) -> str:
    """One cell as CSV text (see :func:`_csv_line`)."""
    return _csv_line([value])


def _csv_line(cells: list[str]) -> str:
    """One CSV record without its line ending, quoted as Python's csv quotes it, line breaks included.

    The writer quotes a cell holding a separator, a quote or a character of
    its line terminator: written with ``\\r\\n``, a cell with either ``\\r`` or
    ``\\n`` is quoted whatever ending the record then gets (with no terminator,
    or ``\\n``, an owner id holding a line break would be written bare and
    split the record in two).
    """
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(cells)
    return buffer.getvalue()[:-2]


def _split_end(raw: str) -> tuple[str, str]:
    """A record's text and its line ending (``\\r\\n``, ``\\n``, ``\\r`` or none at the end of a file)."""
    for end in ("\r\n", "\n", "\r"):
        if raw.endswith(end):
            return raw[: -len(end)], end
    return raw, ""


class _Taken:
    """The lines of a text file, remembering those handed out since the last :meth:`take` (one CSV record's raw text)."""

    def __init__(self, handle: IO[str]):
        self._handle = handle
        self._taken: list[str] = []

    def __iter__(self) -> _Taken:
        return self

    def __next__(self) -> str:
        line = self._handle.readline()
        if not line:
            raise StopIteration
        self._taken.append(line)
        return line

    def take(self) -> str:
        raw = "".join(self._taken)
        self._taken.clear()
        return raw


class _Hashing(io.RawIOBase):
    """A binary file that hashes (sha256) every byte read through it."""

    def __init__(self, raw: IO[bytes]):
        self._raw = raw
        self._digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        if n:
            self._digest.update(memoryview(buffer)[:n])
        return n or 0

    def hexdigest(self) -> str:
        return self._digest.hexdigest()
