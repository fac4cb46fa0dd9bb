"""A saved plan's manifest, ``plan.json``: what the plan was made from, so it can be reviewed and applied.

It names the engine version, every input file with its sha256 and row count,
the run's effective settings, the headline figures and the sha256 of every
plan file written (``outputs``). The plan id is a hash of the version, the
inputs' contents, the settings that shape the plan (not paths, not
``workers``: the plan is the same for any number of workers) and, from format
2 on, the plan's rows (``accounts.jsonl``, ``opportunities.jsonl``), so the
same book planned the same way has the same id wherever it runs, and a plan
whose rows were edited has another. ``apply`` refuses a plan whose inputs
changed since it was made: what was reviewed would no longer be what is applied.

Everything a saved plan names is distrusted until checked: ``outputs`` are
plain file names in the plan directory, every file read is a regular file
(a pipe or a device would block or never end), rows and the summary are
checked for the keys and types their readers use, and each row's owner for
what its status allows (:mod:`files.rows`).
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import os
import re
import stat
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from ..errors import DataError, Finding, Location, RuleFileError
from ..rules.compile import load_rules
from ..tables.cells import shown

if TYPE_CHECKING:
    from ..rules.compile import CompiledRules

MANIFEST = "plan.json"
FORMAT = 2  # 2: the plan id covers the rows; format 1 plans are read with their own ids
ROLES = ("rules", "accounts", "users", "opportunities", "pairs")
ROW_FILES = ("accounts.jsonl", "opportunities.jsonl")  # the plan's rows, covered by the id from format 2
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


def open_regular(path: str | Path) -> IO[bytes]:
    """``path`` opened for reading, once it is known to be a regular file: a pipe, a device or a directory is an
    :class:`OSError` raised before any read (a FIFO named by a plan, or standing in for one of its files, would
    block forever; ``/dev/zero`` would never end). Opened without blocking and checked on the open file, so
    nothing can be swapped in between."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file (a directory, pipe or device)")
        if hasattr(os, "O_NONBLOCK"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_text(path: str | Path) -> str:
    """A regular file's UTF-8 text (see :func:`open_regular`)."""
    with open_regular(path) as handle:
        return handle.read().decode("utf-8")


def fingerprint(path: str | Path) -> str:
    """sha256 of a regular file's bytes, read in 1 MiB blocks; anything else is an :class:`OSError` (see :func:`open_regular`)."""
    digest = hashlib.sha256()
    with open_regular(path) as handle:
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
        return (
            None
            if now == self.sha256
            else f"{self.role} file {self.path} changed since the plan was made (sha256 {now[:12]}…, was {self.sha256[:12]}…)"
        )


def _absolute(path: str) -> str:
    if not os.path.isabs(path):
        raise ValueError("must be an absolute path (as assign records it)")
    return path


def _iso_date(text: str) -> str:
    dt.date.fromisoformat(text)  # a ValueError names what is wrong
    return text


def _plain_name(name: str) -> str:
    if not _PLAIN_NAME.fullmatch(name):
        raise ValueError(f"{shown(name)} is not the name of a file in the plan directory (no path, no '..')")
    return name


_SHA256 = Field(pattern=r"^[0-9a-f]{64}$")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # as write_plan names its files: no separator, no '..', no absolute path


class _InputFileJson(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    role: Literal["rules", "accounts", "users", "opportunities", "pairs"]
    path: Annotated[str, AfterValidator(_absolute)]
    sha256: Annotated[str, _SHA256]
    rows: int | None = Field(None, ge=0)


class _SettingsJson(BaseModel):
    """The settings readers use (extra keys are kept, unread); each checked for its type, so a plan's run date
    or seed is never a traceback later."""

    model_config = ConfigDict(extra="allow", strict=True)
    seed: int | None = Field(None, ge=0)
    time_limit: float | None = Field(None, gt=0, allow_inf_nan=False)
    effort: float | None = Field(None, gt=0, allow_inf_nan=False)
    as_of: Annotated[str, AfterValidator(_iso_date)] | None = None
    hierarchy_errors: Literal["raise", "independent"] | None = None
    workers: int | None = Field(None, ge=1)
    executor: str | None = None
    from_plan: str | None = None


class _HeadlineJson(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    accounts: int = 0
    moved: int = 0
    value_moved: float = 0.0
    unassigned: int = 0
    conflicts: int = 0
    replanned: int = 0
    opportunities: int = 0
    opportunities_moved: int = 0
    balance: dict[str, Annotated[list[float | None], Field(min_length=2, max_length=2)]] = {}


class _ManifestJson(BaseModel):
    """plan.json as written; read strictly, so a hand-edited or damaged file is a located error, not a crash."""

    model_config = ConfigDict(extra="forbid", strict=True)
    format: Literal[1, 2]
    plan_id: str
    engine_version: str
    inputs: list[_InputFileJson]
    settings: _SettingsJson
    headline: _HeadlineJson
    outputs: dict[Annotated[str, AfterValidator(_plain_name)], Annotated[str, _SHA256]]


@dataclass(frozen=True)
class Manifest:
    engine_version: str
    inputs: list[InputFile]
    settings: dict[
        str, Any
    ]  # seed, time_limit (wall clock), effort, workers, as_of, hierarchy_errors (effective values); from_plan (a plan id) when incremental
    headline: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)  # plan file → sha256, as written
    format: int = FORMAT  # as read; a manifest written now is of FORMAT

    @property
    def plan_id(self) -> str:
        """A hash of what shapes the plan and, from format 2, of its rows (known once written: ``outputs``)."""
        settings = {k: self.settings.get(k) for k in _PLAN_SHAPING}
        if "effort" in self.settings:  # plans made before effort existed recorded it as time_limit, and keep their ids
            settings["effort"] = self.settings["effort"]
        shaping: dict[str, Any] = {
            "engine_version": self.engine_version,
            "inputs": [(f.role, f.sha256, f.rows) for f in self.inputs],
            "settings": settings,
        }
        if self.settings.get("from_plan"):  # an incremental plan: made from that plan too (absent otherwise, so older ids hold)
            shaping["from_plan"] = self.settings["from_plan"]
        if self.format >= 2:  # the rows reviewed and applied (summary.json is not: it records the solver's wall-clock seconds)
            shaping["rows"] = {name: self.outputs[name] for name in ROW_FILES if name in self.outputs}
        return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def current_settings(self) -> dict[str, Any]:
        """The settings in today's terms: a plan made before ``effort`` existed recorded its effort as ``time_limit``
        (deterministic seconds per component) and had no wall-clock limit."""
        if "effort" in self.settings:
            return self.settings
        return {**self.settings, "time_limit": None, "effort": self.settings.get("time_limit")}

    @property
    def as_of(self) -> dt.date | None:
        """The run date the plan was made for, when it used one (checked as a date when read)."""
        as_of = self.settings.get("as_of")
        return dt.date.fromisoformat(as_of) if as_of else None

    def input(self, role: str) -> InputFile | None:
        return next((f for f in self.inputs if f.role == role), None)

    def path(self, role: str) -> str:
        """The path of a required input (see :meth:`verified`, which makes sure it is recorded)."""
        found = self.input(role)
        assert found is not None, role
        return found.path

    def unchanged(self, directory: str | Path, role: str, consequence: str = "") -> str:
        """The path of input ``role``, once it is recorded and byte for byte what the plan was made from, checked
        now (for an input read later than the others, such as the router's accounts file); else a :class:`DataError`."""
        found = self.input(role)
        why = f"the plan records no {role} file" if found is None else found.changed()
        if why is not None:
            raise DataError([Finding(Location(str(Path(directory) / MANIFEST)), f"{why}{consequence}")])
        assert found is not None
        return found.path

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
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
            data = json.loads(read_text(path))
        except FileNotFoundError:
            raise DataError(
                [
                    Finding(
                        Location(str(directory)),
                        f"not a saved plan: no {MANIFEST} (plans are written by 'assignment-engine assign --out DIR')",
                    )
                ]
            ) from None
        except OSError as exc:
            raise DataError([Finding(where, f"cannot read the plan manifest: {exc.strerror}")]) from None
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: bad JSON, or an integer past Python's 4,300 digits
            raise DataError([Finding(where, f"cannot read the plan manifest: {exc}")]) from None
        if isinstance(data, dict) and "outputs" not in data:
            raise DataError(
                [
                    Finding(
                        where,
                        "damaged plan manifest: it records no sha256 of the plan's own "
                        "files (outputs), so its rows cannot be checked; re-run assign",
                    )
                ]
            )
        try:
            parsed = _ManifestJson.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            key = ".".join(str(p) for p in first["loc"])
            raise DataError([Finding(where, f"damaged plan manifest: {key}: {first['msg']}")]) from None
        manifest = cls(
            parsed.engine_version,
            [InputFile(f.role, f.path, f.sha256, f.rows) for f in parsed.inputs],
            data["settings"],
            data["headline"],
            parsed.outputs,
            parsed.format,
        )
        if problem := manifest._inconsistency():
            raise DataError([Finding(where, f"damaged plan manifest: {problem}")])
        if manifest.plan_id != parsed.plan_id:
            raise DataError([Finding(where, "damaged plan manifest: its plan_id does not match its content")])
        return manifest

    def _inconsistency(self) -> str | None:
        """What makes a manifest that parses unusable: a role twice (readers would disagree on which file it is),
        a plan file its readers open without a recorded sha256, a plan made from files without its settings."""
        roles = [f.role for f in self.inputs]
        twice = next((r for r in roles if roles.count(r) > 1), None)
        if twice is not None:
            return f"inputs: {twice} is recorded {roles.count(twice)} times"
        deals = "opportunities" in roles or "opportunities.csv" in self.outputs
        unrecorded = [
            name for name in ("accounts.jsonl", "summary.json", *(["opportunities.jsonl"] if deals else [])) if name not in self.outputs
        ]
        if unrecorded:
            return f"outputs: no sha256 of {', '.join(unrecorded)}"
        missing = [k for k in _PLAN_SHAPING if k not in self.settings] if self.inputs else []
        return f"settings: no {', '.join(missing)}" if missing else None

    @classmethod
    def verified(
        cls, directory: str | Path, *, inputs: tuple[str, ...] = (), optional: Collection[str] = (), consequence: str = ""
    ) -> Manifest:
        """The manifest, once the plan's own files are as written, the ``inputs`` roles (rules, accounts, …) are
        recorded and byte for byte what the plan was made from, and so are the ``optional`` roles that are
        recorded; else a :class:`DataError` per problem. Other inputs are not read: a caller names every role it reads.

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
        problems += [why for f in manifest.inputs if (f.role in inputs or f.role in optional) and (why := f.changed()) is not None]
        if problems:
            raise DataError([Finding(where, f"{why}{consequence}") for why in problems])
        return manifest

    def rules(self, directory: str | Path) -> CompiledRules:
        """The plan's rule file (verified), compiled. The path comes from ``plan.json``, which may name any file, so
        a file that does not compile is named, never quoted: its findings are for ``validate``."""
        path = self.path("rules")
        try:
            return load_rules(path)
        except RuleFileError as exc:
            message = (
                f"the plan's rule file {path} does not compile ({len(exc.findings)} problem(s)); "
                "check it with 'assignment-engine validate --rules FILE'"
            )
            raise RuleFileError([Finding(Location(str(Path(directory) / MANIFEST)), message)]) from None
