"""The rule file format, version 1, as pydantic models.

These models are the single definition of the format: loading validates
against them, and ``assignment-engine schema`` prints their JSON Schema for
editors. Conditions (``when``) are a small language of their own, parsed by
:mod:`assignment_engine.conditions`; here they are an open mapping.

A key that moves within version 1 is listed in :data:`MOVED_KEYS`: files that
still have it at its old place are read as if it were at the new one, with a
warning (docs/rules.md, Compatibility).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from .yamlfile import shown

FieldTypeName = Literal["string", "integer", "number", "boolean", "date", "country", "state"]
Objective = Literal["balance", "continuity", "affinity"]
Name = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$", min_length=1, max_length=100)
MAX_CONSTANT = 1e15  # far above any real workload of one account or deal; whole numbers up to it are exact in a float
MAX_PRIORITY = 1_000_000
MAX_SEED = 2**31 - 1  # CP-SAT takes a 32-bit seed
DEFAULT_EFFORT = 1.5  # deterministic seconds per phase budget of a component (optimize/clock.py)
MAX_SECONDS = 86_400  # the largest effort or time limit (a day)


def _integer_one(value: Any) -> Any:
    """Even strict, ``Literal[1]`` takes ``true`` and ``1.0``: they equal 1."""
    if type(value) is not int:
        raise ValueError(f"must be the integer 1, not {shown(value)}")
    return value


def _calendar_date(value: Any) -> Any:
    """A real day as YYYY-MM-DD: ``2026-13-45`` fails here, not in the middle of a run."""
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        raise ValueError(f"use a date YYYY-MM-DD, not {shown(value)}")
    try:
        dt.date.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"{shown(value)} is not a date: {exc}") from None
    return value


class _Strict(BaseModel):
    """Strict: ``version: true``, ``seed: 1.0`` or ``"1_000"`` as a number are errors, not quietly converted; no inf or nan."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class Measure(_Strict):
    """How much workload one account carries: a field's value, a constant, or a per-pair workload."""

    field: str | None = Field(None, description="numeric account field summed per user, e.g. annual_revenue")
    constant: float | None = Field(None, ge=0, le=MAX_CONSTANT, description="the same value for every account, e.g. 1 to count accounts")
    pair: Literal["workload"] | None = Field(
        None,
        description=(
            "take the value from the pairs file (depends on the user); field or constant then give the value of unlisted pairs (default 0)"
        ),
    )
    deals: str | None = Field(
        None, description="sum of this numeric opportunity field over the account's open deals, e.g. amount (pipeline)"
    )

    @model_validator(mode="after")
    def _one_source(self) -> Measure:
        sources = (self.field is not None) + (self.constant is not None) + (self.deals is not None)
        if sources > 1 or (sources == 0 and self.pair is None) or (self.deals is not None and self.pair is not None):
            raise ValueError("a measure takes one of 'field', 'constant' or 'deals' ('pair' may add to field or constant)")
        return self


class TierLevel(_Strict):
    name: str = Name
    top: float | None = Field(None, gt=0, le=1, description="cumulative share of accounts from the top, e.g. 0.05; omit on the last level")


class Tiers(_Strict):
    """Value ranking: accounts sorted by a measure, cut into named levels."""

    by: str = Field(description="the measure to rank by")
    levels: list[TierLevel] = Field(min_length=1)


class TerritoryType(_Strict):
    name: str = Name
    priority: int = Field(ge=1, le=MAX_PRIORITY, description="1 is the highest; unique per type")
    overlay: bool = Field(False, description="overlay territories add specialists; they never own accounts")


WHEN_SCHEMA: dict[str, Any] = {
    "description": (
        "Condition: mapping of field to {operator: value} (several keys = AND), "
        "or all/any: [conditions], not: condition; shorthand field: value (eq), field: [a, b] (in). "
        "Operators: eq ne in not_in lt lte gt gte between starts_with ends_with contains matches exists is_null."
    ),
    "type": "object",
    "minProperties": 1,
}


class Rule(_Strict):
    name: str | None = Field(None, description="shown in explanations; defaults to 'rule N'")
    inherit: bool = Field(False, description="also applies to every descendant territory")
    when: dict[str, Any] = Field(json_schema_extra=WHEN_SCHEMA)


class Member(_Strict):
    user: str = Field(min_length=1)
    role: str = Field("owner", description="'owner' members can own accounts; other roles (e.g. overlay) are listed only")


class Territory(_Strict):
    id: str = Name
    name: str | None = None
    type: str | None = Field(None, description="territory type; a child without one takes its parent's")
    rules: list[Rule] = Field(default_factory=list, description="all must match (AND); no rules = manual assignments only")
    members: list[Member] = Field(default_factory=list)
    children: list[Territory] = Field(default_factory=list)


class BalanceEntry(_Strict):
    measure: str
    tier: str | None = Field(None, description="balance only accounts of this value tier")
    segment: dict[str, str] | None = Field(
        None, min_length=1, max_length=1, description="balance only accounts of this segment level, e.g. {lifecycle: dormant}"
    )
    tolerance: float = Field(0.10, ge=0, le=10, description="allowed relative deviation from the fair share, e.g. 0.10 = ±10 %")


class Assignment(_Strict):
    hierarchy: Literal["follow_ultimate_parent", "independent"] = "follow_ultimate_parent"
    balance: list[BalanceEntry] | None = Field(None, description="default: every measure within ±10 %")
    objectives: list[Objective] = Field(
        default_factory=lambda: list(get_args(Objective)),
        description="objective order after the hard constraints; leave one out to ignore it",
    )
    pair_eligibility: Literal["any", "listed"] = Field(
        "any", description="'listed': only account–user pairs in the pairs file are eligible"
    )
    time_limit: float | None = Field(
        None,
        gt=0,
        le=MAX_SECONDS,
        description=(
            "wall-clock seconds for the whole run: the plan is the best found by then; "
            "a plan a component of which stopped on it is not reproducible (the summary names them)"
        ),
    )
    effort: float | None = Field(
        None,
        gt=0,
        le=MAX_SECONDS,
        description=(
            "solver work per component, in deterministic seconds (about a wall-clock second each): "
            f"the same plan on any machine; default {DEFAULT_EFFORT:g}, or none when time_limit is set"
        ),
    )
    seed: int = Field(0, ge=0, le=MAX_SEED)
    as_of: Annotated[str, BeforeValidator(_calendar_date)] | None = Field(
        None,
        json_schema_extra={"format": "date"},
        description="the run date (YYYY-MM-DD) that within_days, older_than_days and closing_within_days count from; default: today",
    )


class DealMeasure(_Strict):
    """Workload of one opportunity for overlay balancing: a deal field or a constant."""

    field: str | None = None
    constant: float | None = Field(None, ge=0, le=MAX_CONSTANT)

    @model_validator(mode="after")
    def _one_source(self) -> DealMeasure:
        if (self.field is None) == (self.constant is None):
            raise ValueError("a deal measure takes exactly one of 'field' or 'constant'")
        return self


class KeepOwner(_Strict):
    """Open deals that stay with their current owner whatever happens to the account."""

    when: dict[str, Any] | None = Field(
        None, json_schema_extra=WHEN_SCHEMA, description="a condition on deal (and account) fields, e.g. {stage: {in: [negotiation]}}"
    )
    closing_within_days: int | None = Field(None, ge=0, le=36_500, description="deals closing within this many days of the run date")


class Opportunities(_Strict):
    """How open deals follow accounts, which stay, and how overlay specialists are balanced."""

    fields: dict[str, FieldTypeName] = Field(
        default_factory=dict, description="opportunity fields rules may use (amount, stage, close_date, product_line, …)"
    )
    stage_field: str = "stage"
    close_date_field: str = "close_date"
    closed_stages: list[str] = Field(
        default_factory=lambda: ["closed_won", "closed_lost"], description="deals in these stages are never reassigned"
    )
    keep_owner: KeepOwner | None = None
    territory_tie: Literal["balance", "prefer_current", "first_in_file"] = Field(
        "balance",
        description=(
            "among equal-priority territories of the account: the account's balanced choice, "
            "the one of the deal's current owner, or file order"
        ),
    )
    measures: dict[str, DealMeasure] = Field(
        default_factory=lambda: {"deals": DealMeasure(constant=1)}, description="overlay workload per deal"
    )
    balance: list[BalanceEntry] | None = Field(None, description="overlay specialists' balance; default: every deal measure within ±15 %")


class SegmentLevel(_Strict):
    name: str = Name
    when: dict[str, Any] | None = Field(None, json_schema_extra=WHEN_SCHEMA, description="omit on the last level: every account left")


ColumnName = Field(min_length=1, max_length=200)


class Input(_Strict):
    """How one input file names its columns: engine name → the file's column (a dotted path reaches into a JSON object)."""

    columns: dict[str, Annotated[str, ColumnName]] = Field(default_factory=dict, description="e.g. {id: account, parent_id: subsidiary_of}")
    sheet: str | None = Field(None, min_length=1, description="spreadsheet sheet to read (default: the first)")
    address: str | None = Field(
        None,
        min_length=1,
        description=(
            "a column holding a whole address, split into street, city, state, postal_code and country where those are declared fields"
        ),
    )


class Inputs(_Strict):
    """Read CRM exports as they are: a preset of a CRM's column names, and per-file overrides."""

    preset: Literal["salesforce", "hubspot", "dynamics"] | None = Field(
        None, description="the column names of a CRM's exports (API names and report labels)"
    )
    accounts: Input = Field(default_factory=Input)
    users: Input = Field(default_factory=Input)
    opportunities: Input = Field(default_factory=Input)
    pairs: Input = Field(default_factory=Input)


RoutingPolicy = Literal["least_loaded", "round_robin"]


class TerritoryRouting(_Strict):
    policy: RoutingPolicy | None = Field(None, description="this territory's owner choice (default: the top-level policy)")
    fallback: str | None = Field(None, min_length=1, description="user who takes a record no member can (default: the top-level fallback)")


class Routing(_Strict):
    """How one record routed between batch runs gets its owner (Router, ``route``)."""

    policy: RoutingPolicy = Field(
        "least_loaded",
        description=(
            "least_loaded: the member lowest against fair share after the addition; round_robin: turns weighted by the users' weight"
        ),
    )
    fallback: str | None = Field(
        None, min_length=1, description="user who takes a record no member can take; none: it stays unassigned with the reason"
    )
    territories: dict[str, TerritoryRouting] = Field(default_factory=dict, description="per-territory overrides, by territory id")
    website_field: str | None = Field(None, description="the account field holding its website, for matching leads by domain")


class RuleFile(_Strict):
    """A territory plan: fields, measures, tiers, types, the territory tree and the policy."""

    version: Annotated[Literal[1], BeforeValidator(_integer_one)]
    fields: dict[str, FieldTypeName] = Field(default_factory=dict, description="account fields rules may use, with their types")
    measures: dict[str, Measure] = Field(default_factory=lambda: {"accounts": Measure(constant=1)})
    tiers: Tiers | None = None
    segments: dict[str, list[SegmentLevel]] = Field(
        default_factory=dict, description="derived account fields: per segment, levels tried in order, the first whose 'when' holds wins"
    )
    inputs: Inputs = Field(default_factory=Inputs)
    territory_types: list[TerritoryType] = Field(min_length=1)
    territories: list[Territory] = Field(min_length=1)
    assignment: Assignment = Field(default_factory=Assignment)
    opportunities: Opportunities = Field(default_factory=Opportunities)
    routing: Routing = Field(default_factory=Routing)


@dataclass(frozen=True)
class MovedKey:
    """A version-1 key that moved: still read at its old place, with a warning naming the new one."""

    old: tuple[str, ...]
    new: tuple[str, ...]
    since: str  # the commit that moved it

    @property
    def old_name(self) -> str:
        return ".".join(self.old)

    @property
    def new_name(self) -> str:
        return ".".join(self.new)


# every move within version 1, read until a version 2 drops them (docs/rules.md, Compatibility)
MOVED_KEYS: tuple[MovedKey, ...] = (MovedKey(("opportunities", "as_of"), ("assignment", "as_of"), "5a43c11"),)


def json_schema() -> dict[str, Any]:
    """JSON Schema of the rule file, for editors (``# yaml-language-server: $schema=``); moved keys are admitted as deprecated."""
    schema = RuleFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "assignment-engine rule file, version 1"
    for moved in MOVED_KEYS:
        new = _schema_object(schema, moved.new[:-1])["properties"][moved.new[-1]]
        old = {**new, "deprecated": True, "description": f"moved to '{moved.new_name}', read from here with a warning"}
        _schema_object(schema, moved.old[:-1])["properties"][moved.old[-1]] = old
    return schema


def _schema_object(schema: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    """The schema of the mapping at ``path``, following the models' ``$ref`` to their definitions."""
    node = schema
    for key in path:
        node = node["properties"][key]
        if "$ref" in node:
            node = schema["$defs"][node["$ref"].removeprefix("#/$defs/")]
    return node
