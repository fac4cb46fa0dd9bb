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
import itertools
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import DataError, Finding, Location

MANIFEST = "plan.json"
FORMAT = 1
_PLAN_SHAPING = ("seed", "time_limit", "as_of", "hierarchy_errors")  # and effort, when recorded (see Manifest.plan_id)


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
    if "incremental" in summary:
        out["replanned"] = summary["incremental"]["replanned"]
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

    def changed(self) -> str | None:
        """Why the file is no longer the one the plan was made from, or None."""
        try:
            now = fingerprint(self.path)
        except OSError as exc:
            return f"{self.role} file {self.path} cannot be read: {exc.strerror}"
        return None if now == self.sha256 else f"{self.role} file {self.path} changed since the plan was made (sha256 {now[:12]}…, was {self.sha256[:12]}…)"


class _InputFileJson(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    role: str
    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    rows: int | None = Field(None, ge=0)


class _ManifestJson(BaseModel):
    """plan.json as written; read strictly, so a hand-edited or damaged file is a located error, not a crash."""

    model_config = ConfigDict(extra="forbid", strict=True)
    format: Literal[1]
    plan_id: str
    engine_version: str
    inputs: list[_InputFileJson]
    settings: dict[str, Any]
    headline: dict[str, Any]
    outputs: dict[str, str] = Field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    engine_version: str
    inputs: list[InputFile]
    settings: dict[str, Any]  # seed, time_limit (wall clock), effort, workers, as_of, hierarchy_errors (effective values); from_plan (a plan id) when incremental
    headline: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)  # plan file → sha256, as written

    @property
    def plan_id(self) -> str:
        settings = {k: self.settings.get(k) for k in _PLAN_SHAPING}
        if "effort" in self.settings:  # plans made before effort existed recorded it as time_limit, and keep their ids
            settings["effort"] = self.settings["effort"]
        shaping = {
            "engine_version": self.engine_version,
            "inputs": [(f.role, f.sha256, f.rows) for f in self.inputs],
            "settings": settings,
        }
        if self.settings.get("from_plan"):  # an incremental plan: made from that plan too (absent otherwise, so older ids hold)
            shaping["from_plan"] = self.settings["from_plan"]
        return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def current_settings(self) -> dict[str, Any]:
        """The settings in today's terms: a plan made before ``effort`` existed recorded its effort as ``time_limit``
        (deterministic seconds per component) and had no wall-clock limit."""
        if "effort" in self.settings:
            return self.settings
        return {**self.settings, "time_limit": None, "effort": self.settings.get("time_limit")}

    def input(self, role: str) -> InputFile | None:
        return next((f for f in self.inputs if f.role == role), None)

    def path(self, role: str) -> str:
        """The path of a required input (see :meth:`verified`, which makes sure it is recorded)."""
        found = self.input(role)
        assert found is not None, role
        return found.path

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "plan_id": self.plan_id,
            "engine_version": self.engine_version,
            "inputs": [asdict(f) for f in self.inputs],
            "settings": self.settings,
            "headline": self.headline,
            "outputs": self.outputs,
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
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise DataError([Finding(where, f"cannot read the plan manifest: {exc}")]) from None
        try:
            parsed = _ManifestJson.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            key = ".".join(str(p) for p in first["loc"])
            raise DataError([Finding(where, f"damaged plan manifest: {key}: {first['msg']}")]) from None
        manifest = cls(
            parsed.engine_version,
            [InputFile(f.role, f.path, f.sha256, f.rows) for f in parsed.inputs],
            parsed.settings,
            parsed.headline,
            parsed.outputs,
        )
        if manifest.plan_id != parsed.plan_id:
            raise DataError([Finding(where, "damaged plan manifest: its plan_id does not match its content")])
        return manifest

    @classmethod
    def verified(cls, directory: str | Path, *, inputs: tuple[str, ...] = (), consequence: str = "") -> Manifest:
        """The manifest, once the plan's own files are as written and the ``inputs`` roles (rules, accounts, …)
        are recorded and byte for byte what the plan was made from; else a :class:`DataError` per problem.

        What is reviewed, explained or applied is then the plan that was made;
        ``consequence`` ends each problem's message (what the caller did about it).
        """
        manifest = cls.read(directory)
        where = Location(str(Path(directory) / MANIFEST))
        problems = []
        for name, sha256 in manifest.outputs.items():
            try:
                if fingerprint(Path(directory) / name) != sha256:
                    problems.append(f"plan file {name} changed since the plan was written")
            except OSError as exc:
                problems.append(f"plan file {name} cannot be read: {exc.strerror}")
        missing = [role for role in inputs if manifest.input(role) is None]
        problems += [f"the plan records no {role} file (a plan written from memory by the library has none)" for role in missing]
        if inputs:
            problems += [why for f in manifest.inputs if (why := f.changed()) is not None]
        if problems:
            raise DataError([Finding(where, f"{why}{consequence}") for why in problems])
        return manifest


def plan_rows(directory: str | Path, table: str = "accounts") -> Iterator[dict[str, Any]]:
    """The rows of a saved plan's ``accounts`` or ``opportunities`` table, as written (raw values, from JSON Lines).

    Lines are parsed a few thousand at a time as one JSON array (one call into the C decoder instead of one
    a line: two to three times faster); a block that does not parse as one value a line is parsed line by
    line, so a damaged line is reported at its own number."""
    path = Path(directory) / f"{table}.jsonl"
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise DataError([Finding(Location(str(path)), f"cannot read the plan's {table}: {exc.strerror}")]) from None
    with handle:
        number = 0
        while lines := list(itertools.islice(handle, _BLOCK)):
            try:
                block = json.loads("[" + ",".join(lines) + "]")
            except json.JSONDecodeError:
                block = None
            if block is None or len(block) != len(lines):
                block = []
                for k, line in enumerate(lines, start=number + 1):
                    try:
                        block.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise DataError([Finding(Location(str(path), k, exc.colno), f"damaged plan file: {exc.msg}")]) from None
            number += len(lines)
            yield from block


_BLOCK = 4096  # lines parsed at once by plan_rows


def read_summary(directory: str | Path) -> dict[str, Any]:
    """A saved plan's ``summary.json``."""
    path = Path(directory) / "summary.json"
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError([Finding(Location(str(path)), f"cannot read the plan summary: {exc}")]) from None
