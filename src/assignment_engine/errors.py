"""User-facing errors, each carrying where the problem is.

Every error a user can cause (a rule file typo, a bad CSV cell, a cyclic account
hierarchy, an infeasible plan) is an :class:`AssignmentEngineError`. Library
callers catch that one class; the CLI prints ``str(error)``, which already holds
every finding as ``file:line:col: message``.

    AssignmentEngineError
    ├── RuleFileError        the rule file is not valid (YAML or semantics)
    ├── DataError            an accounts / users / pairs / opportunities file is bad
    ├── HierarchyError       parent_id links do not form a forest
    ├── InfeasibleError      hard constraints cannot all hold
    └── OptionError          a run option or the output directory is unusable (CLI exit 2)

Messages quote values from the user's files; :func:`printable` escapes control
and bidi characters in them, so a hostile cell cannot rewrite a terminal.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Location:
    """Where a finding is: ``file:line:col`` for YAML, ``file:row:column`` for tables.

    ``line`` and ``col`` are 1-based; ``column`` names a table column.
    """

    file: str
    line: int | None = None
    col: int | None = None
    column: str | None = None

    def __str__(self) -> str:
        parts = [self.file]
        if self.line is not None:
            parts.append(str(self.line))
            if self.col is not None:
                parts.append(str(self.col))
            elif self.column is not None:
                parts.append(self.column)
        return ":".join(parts)


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem at one place."""

    location: Location
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"

    def render(self, source_lines: list[str] | None = None) -> str:
        """``file:line:col: message``, plus the offending line and a caret when known."""
        text = printable(f"{self.location}: {self.message}")
        loc = self.location
        if source_lines is not None and loc.line is not None and 0 < loc.line <= len(source_lines):
            line = printable(source_lines[loc.line - 1].rstrip("\n"))
            text += f"\n    {line}"
            if loc.col is not None:
                text += "\n    " + " " * (loc.col - 1) + "^"
        return text


class AssignmentEngineError(Exception):
    """Base of every error a user of the engine can cause; carries its findings."""

    def __init__(self, findings: list[Finding], source_lines: list[str] | None = None):
        self.findings = list(findings)
        self.source_lines = source_lines
        super().__init__(self._render())

    def _render(self) -> str:
        return "\n".join(f.render(self.source_lines) for f in self.findings)

    @classmethod
    def at(cls, file: str | Path, message: str, **where: object) -> AssignmentEngineError:
        """One finding at ``Location(file, **where)``."""
        return cls([Finding(Location(str(file), **where), message)])  # type: ignore[arg-type]


class RuleFileError(AssignmentEngineError):
    """The rule file cannot be parsed or does not make sense."""


class DataError(AssignmentEngineError):
    """A data file (accounts, users, pairs, opportunities) has a bad row or column."""


class HierarchyError(AssignmentEngineError):
    """``parent_id`` links contain a cycle, a self-parent or a missing parent."""


class InfeasibleError(AssignmentEngineError):
    """Hard constraints (locks, capacity, eligibility) cannot all hold."""


class OptionError(AssignmentEngineError):
    """A run option (seed, time limit, workers) or the output directory cannot be used.

    Its location names the option, e.g. ``--out``; the CLI exits with 2 (usage).
    """


_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with control, line-separator and bidi-override characters escaped (``\\x1b``, ``\\u202e``).

    Tab and newline stay: messages use them for layout. Escaping keeps a value's
    identity visible while making sure it cannot move the cursor or recolour
    the terminal of whoever reads the message.
    """
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def suggest(name: str, choices: list[str]) -> str:
    """`` (did you mean 'x'?)`` when a close match exists, else ``''``."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
