"""Column mapping: each input file read in its own column names.

A rule file's ``inputs:`` says, per input, which file column holds each
engine name (``parent_id: subsidiary_of``), optionally on top of a CRM preset
(``preset: salesforce``) whose candidates cover API names and report labels.
Mapping happens once, on the columns as read, so every later stage sees engine
names; :attr:`ColumnMap.headers` turns them back into the file's names for
messages, which must name what the user sees in the file.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from ..errors import DataError, Finding, Location, suggest

Columns = dict[str, list[Any]]
ROLES = ("accounts", "users", "opportunities", "pairs")
ACCOUNT_INPUT_COLUMNS = ("id", "name", "parent_id", "owner_id", "locked", "excluded")
DEAL_INPUT_COLUMNS = ("id", "name", "account_id", "owner_id", "locked", "excluded", "overlay_owner_ids")
# the engine names each input knows besides declared fields (users: plus max_<measure>)
ENGINE_COLUMNS = {
    "accounts": ACCOUNT_INPUT_COLUMNS,
    "users": ("id", "user_id", "name", "weight", "active", "max_new_per_day", "available", "away_until"),
    "opportunities": DEAL_INPUT_COLUMNS,
    "pairs": ("account_id", "user_id", "cost", "workload"),
}
REQUIRED = {"accounts": ("id",), "users": (), "opportunities": ("id", "account_id"), "pairs": ("account_id", "user_id")}


def nfc(name: str) -> str:
    """A column name in Unicode NFC: 'Länd' typed on a Mac (a + combining diaeresis) is the 'Länd' of a Windows export.
    Headers and mapped names only, never cells; ASCII (nearly every name) is returned as it is at once."""
    return name if name.isascii() else unicodedata.normalize("NFC", name)


@cache
def presets() -> dict[str, dict[str, dict[str, tuple[str, ...]]]]:
    """Preset → input → engine name → candidate file columns (package data, kept as data)."""
    raw = json.loads(resources.files("assignment_engine").joinpath("data/presets.json").read_text(encoding="utf-8"))
    return {
        name: {role: {k: tuple(v) for k, v in cols.items()} for role, cols in roles.items()}
        for name, roles in raw.items()
        if not name.startswith("_")
    }


@dataclass(frozen=True)
class ColumnMap:
    """Where one input's engine names come from.

    ``explicit`` holds the rule file's ``columns:`` (each at its rule-file
    location, for messages); ``preset`` the candidates of a CRM preset.
    Explicit names must exist in the file; preset candidates are tried in
    order and fall back to the engine name itself.
    """

    role: str
    explicit: Mapping[str, str] = field(default_factory=dict)
    preset: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    preset_name: str | None = None
    declared_at: Mapping[str, Location] = field(default_factory=dict)
    sheet: str | None = None
    address: str | None = None

    def candidates(self, name: str) -> tuple[str, ...]:
        if name in self.explicit:
            return (nfc(self.explicit[name]),)
        return (*self.preset.get(name, ()), nfc(name))

    def shared(self, names: Iterable[str]) -> list[tuple[str, str, str]]:
        """(file column, engine name, other engine name) for each column two of ``names`` (or the address) may be read
        from: read as ``id`` and as ``owner_id``, ``apply`` would write new owners into the ids. Explicit names first.

        Only a pair the rule file's own ``columns:`` or ``address`` is part of: two names sharing nothing but a
        preset's candidates (``revenue`` and ``annual_revenue`` both offer ``AnnualRevenue``) were always read the
        first way the file allows, and rule files doing so keep validating."""
        taken: dict[str, str] = {}
        out = []
        for name in sorted(names, key=lambda n: (n not in self.explicit, n)):
            for column in dict.fromkeys(self.candidates(name)):
                first = taken.setdefault(column, name)
                if first != name and first in self.explicit:
                    out.append((column, first, name))
        if self.address and nfc(self.address) in taken:
            out.append((nfc(self.address), taken[nfc(self.address)], "address"))
        return out

    def source(self, name: str) -> str:
        """Where an engine name's file column comes from, as a message says it."""
        if name == "address":
            return f"inputs.{self.role}.address"
        if name in self.explicit:
            return f"inputs.{self.role}.columns.{name}"
        if name in self.preset:
            return f"a candidate of the {self.preset_name} preset"
        return "its own name"

    def wanted(self, names: set[str] | None) -> set[str] | None:
        """The file columns to read for these engine names (None: all)."""
        if names is None:
            return None
        out = {c for n in names for c in self.candidates(n)}
        if self.address:
            out.add(self.address)
        return out

    def rename(
        self, columns: Columns, source: str, names: set[str] | None = None, header: Callable[[], list[str]] | None = None
    ) -> tuple[Columns, dict[str, str]]:
        """Columns under engine names, and the file column each engine name came from.

        A column consumed by a mapping is no longer there under its own name
        (``Name`` read as ``name`` is not also a field ``Name``), and a file
        column named like an engine name that is mapped elsewhere is dropped.
        ``header`` gives every column of the file, for suggestions (an error path).
        """
        mapped = set(self.explicit) | set(self.preset)
        if names is not None:
            mapped &= names | set(self.explicit)
            mapped |= {n for n in names if nfc(n) != n}  # a declared field typed decomposed, read from its composed header
        findings = []
        explicit = {name: nfc(column) for name, column in self.explicit.items()}
        everything = header() if header and not set(explicit.values()) <= columns.keys() else list(columns)
        for name, column in explicit.items():
            if column not in columns:
                where = self.declared_at.get(name)
                origin = f" (inputs.{self.role}.columns.{name} at {where})" if where else f" (inputs.{self.role}.columns.{name})"
                findings.append(Finding(Location(source, 1), f"no column {column!r}{origin}{suggest(column, everything)}"))
        if findings:
            raise DataError(findings)
        headers: dict[str, str] = {}
        for name in sorted(mapped):
            found = next((c for c in self.candidates(name) if c in columns), None)
            if found is not None:
                headers[name] = found
        out: Columns = {}
        taken = set(headers.values())
        for column, values in columns.items():
            if column not in taken and column not in headers:
                out[column] = values
        for name, column in headers.items():
            out[name] = columns[column]
        for name in REQUIRED[self.role]:
            if name not in out and (names is None or name in names):
                tried = self.candidates(name)
                everything = header() if header else list(columns)
                raise DataError(
                    [
                        Finding(
                            Location(source, 1), f"missing required column {' or '.join(map(repr, tried))}{suggest(tried[0], everything)}"
                        )
                    ]
                )
        return out, headers

    def located(self, findings: Sequence[Finding], headers: Mapping[str, str]) -> list[Finding]:
        """Findings whose table column is an engine name, renamed to the file's column."""
        return [
            Finding(Location(f.location.file, f.location.line, f.location.col, headers[f.location.column]), f.message)
            if f.location.column is not None and f.location.column in headers
            else f
            for f in findings
        ]
