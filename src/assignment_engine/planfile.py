"""A saved plan's manifest, ``plan.json``: what the plan was made from, so it can be reviewed and applied.

It names the engine version, every input file with its sha256 and row count,
the run's effective settings and the headline figures. The plan id is a hash
of the version, the inputs' contents and the settings that shape the plan
(not paths, not ``workers``: the plan is the same for any number of workers),
so the same book planned the same way has the same id wherever it runs.
``apply`` refuses a plan whose inputs changed since it was made: what was
reviewed would no longer be what is applied.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from .errors import DataError, Finding, Location

MANIFEST = "plan.json"
FORMAT = 1
_PLAN_SHAPING = ("seed", "time_limit", "as_of", "hierarchy_errors")


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    """The figures a reviewer reads first, from a plan's summary."""
    counts = summary["status_counts"]
    out: dict[str, Any] = {
        "accounts": summary["accounts"],
        "moved": summary["moved"]["accounts"],
        "value_moved": summary["moved"]["value"],
        "unassigned": counts["unassigned"],
        "conflicts": len(summary["conflicts"]),
        "balance": {b["balance"]: [b["min_deviation"], b["max_deviation"]] for b in summary["balance"]},
    }
    deals = summary.get("opportunities")
    if deals:
        out["opportunities"] = deals["opportunities"]
        out["opportunities_moved"] = deals["moved"]["opportunities"]
    return out


def engine_version() -> str:
    try:
        return metadata.version("assignment-engine")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def fingerprint(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class InputFile:
    """One file a plan was made from; ``rows`` is None for the rule file."""

    role: str  # rules, accounts, users, opportunities, pairs
    path: str  # absolute
    sha256: str
    rows: int | None = None

    @classmethod
    def of(cls, role: str, path: str | Path, rows: int | None = None) -> InputFile:
        return cls(role, str(Path(path).resolve()), fingerprint(path), rows)

    def changed(self) -> str | None:
        """Why the file is no longer the one the plan was made from, or None."""
        try:
            now = fingerprint(self.path)
        except OSError as exc:
            return f"{self.role} file {self.path} cannot be read: {exc.strerror}"
        return None if now == self.sha256 else f"{self.role} file {self.path} changed since the plan was made (sha256 {now[:12]}…, was {self.sha256[:12]}…)"


@dataclass(frozen=True)
class Manifest:
    engine_version: str
    inputs: list[InputFile]
    settings: dict[str, Any]  # seed, time_limit, workers, as_of, hierarchy_errors (effective values)
    headline: dict[str, Any] = field(default_factory=dict)

    @property
    def plan_id(self) -> str:
        shaping = {
            "engine_version": self.engine_version,
            "inputs": [(f.role, f.sha256, f.rows) for f in self.inputs],
            "settings": {k: self.settings.get(k) for k in _PLAN_SHAPING},
        }
        return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]

    def input(self, role: str) -> InputFile | None:
        return next((f for f in self.inputs if f.role == role), None)

    def changed_inputs(self) -> list[str]:
        """One line per input file that is not byte for byte what the plan was made from."""
        return [why for f in self.inputs if (why := f.changed()) is not None]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "plan_id": self.plan_id,
            "engine_version": self.engine_version,
            "inputs": [asdict(f) for f in self.inputs],
            "settings": self.settings,
            "headline": self.headline,
        }

    @classmethod
    def read(cls, directory: str | Path) -> Manifest:
        """The manifest of a saved plan; a missing or damaged one is a :class:`DataError`."""
        path = Path(directory) / MANIFEST
        where = Location(str(path))
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError([Finding(Location(str(directory)), f"not a saved plan: no {MANIFEST} (plans are written by 'assignment-engine assign --out DIR')")]) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError([Finding(where, f"cannot read the plan manifest: {exc}")]) from None
        try:
            if data["format"] != FORMAT:
                raise DataError([Finding(where, f"plan format {data['format']!r} is not {FORMAT}; re-run assign with this engine version")])
            manifest = cls(data["engine_version"], [InputFile(**f) for f in data["inputs"]], dict(data["settings"]), dict(data["headline"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError([Finding(where, f"damaged plan manifest ({exc!r})")]) from None
        if manifest.plan_id != data.get("plan_id"):
            raise DataError([Finding(where, "damaged plan manifest: its plan_id does not match its content")])
        return manifest


def plan_rows(directory: str | Path, table: str = "accounts") -> Iterator[dict[str, Any]]:
    """The rows of a saved plan's ``accounts`` or ``opportunities`` table, as written (raw values, from JSON Lines)."""
    path = Path(directory) / f"{table}.jsonl"
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise DataError([Finding(Location(str(path)), f"cannot read the plan's {table}: {exc.strerror}")]) from None
    with handle:
        for number, line in enumerate(handle, start=1):
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError([Finding(Location(str(path), number, exc.colno), f"damaged plan file: {exc.msg}")]) from None


def read_summary(directory: str | Path) -> dict[str, Any]:
    """A saved plan's ``summary.json``."""
    path = Path(directory) / "summary.json"
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError([Finding(Location(str(path)), f"cannot read the plan summary: {exc}")]) from None
