"""The rule file format, version 1, as pydantic models.

These models are the single definition of the format: loading validates
against them, and ``assignment-engine schema`` prints their JSON Schema for
editors. Conditions (``when``) are a small language of their own, parsed by
:mod:`assignment_engine.conditions`; here they are an open mapping.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FieldTypeName = Literal["string", "integer", "number", "boolean", "date"]
Name = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$", min_length=1, max_length=100)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Measure(_Strict):
    """How much workload one account carries: a field's value, a constant, or a per-pair workload."""

    field: str | None = Field(None, description="numeric account field summed per user, e.g. annual_revenue")
    constant: float | None = Field(None, ge=0, description="the same value for every account, e.g. 1 to count accounts")
    pair: Literal["workload"] | None = Field(
        None, description="take the value from the pairs file (depends on the user); field or constant then give the value of unlisted pairs (default 0)"
    )

    @model_validator(mode="after")
    def _one_source(self) -> Measure:
        sources = (self.field is not None) + (self.constant is not None)
        if sources > 1 or (sources == 0 and self.pair is None):
            raise ValueError("a measure takes one of 'field' or 'constant' (optionally with 'pair')")
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
    priority: int = Field(ge=1, description="1 is the highest; unique per type")
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
    tolerance: float = Field(0.10, ge=0, le=10, description="allowed relative deviation from the fair share, e.g. 0.10 = ±10 %")


class Assignment(_Strict):
    hierarchy: Literal["follow_ultimate_parent", "independent"] = "follow_ultimate_parent"
    balance: list[BalanceEntry] | None = Field(None, description="default: every measure within ±10 %")
    objectives: list[Literal["balance", "continuity", "affinity"]] = Field(
        default_factory=lambda: ["balance", "continuity", "affinity"],
        description="objective order after the hard constraints; leave one out to ignore it",
    )
    pair_eligibility: Literal["any", "listed"] = Field("any", description="'listed': only account–user pairs in the pairs file are eligible")
    time_limit: float = Field(10.0, gt=0, description="solver effort per component, in deterministic seconds")
    seed: int = Field(0, ge=0)


class RuleFile(_Strict):
    """A territory plan: fields, measures, tiers, types, the territory tree and the policy."""

    version: Literal[1]
    fields: dict[str, FieldTypeName] = Field(default_factory=dict, description="account fields rules may use, with their types")
    measures: dict[str, Measure] = Field(default_factory=lambda: {"accounts": Measure(constant=1)})
    tiers: Tiers | None = None
    territory_types: list[TerritoryType] = Field(min_length=1)
    territories: list[Territory] = Field(min_length=1)
    assignment: Assignment = Field(default_factory=Assignment)


def json_schema() -> dict[str, Any]:
    """JSON Schema of the rule file, for editors (``# yaml-language-server: $schema=``)."""
    schema = RuleFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "assignment-engine rule file, version 1"
    return schema
