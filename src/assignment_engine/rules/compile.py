"""Rule file → compiled rules: validate everything at once, then build the territory tree.

Loading reports every problem in one pass (YAML syntax, unknown keys, unknown
fields and operators, duplicate ids, bad types) as ``file:line:col: message``.
The result, :class:`CompiledRules`, is immutable and holds no file handles, so
a CRM integration loads it once and calls it for every account save.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import Finding, Location, RuleFileError, suggest
from ..tables import places
from . import ruleset as rs
from .conditions import RELATIVE, Condition, ConditionError, compares, parse_condition
from .inputs import ENGINE_COLUMNS, ROLES, ColumnMap, presets
from .yamlfile import LoadedYaml, load_yaml, read_text, shown

OWNER_ROLE = "owner"


@dataclass(frozen=True)
class CompiledRule:
    territory: str  # where it is written
    number: int  # 1-based position in that territory's rules
    name: str | None
    inherit: bool
    condition: Condition

    @property
    def label(self) -> str:
        return self.name or f"rule {self.number}"


@dataclass(frozen=True)
class MemberRef:
    user: str
    role: str
    location: Location


@dataclass
class TerritoryNode:
    id: str
    name: str
    type: str
    priority: int
    overlay: bool
    order: int  # position in file (pre-order), the deterministic tie-break
    parent: str | None
    depth: int
    children: list[str] = field(default_factory=list)
    rules: list[CompiledRule] = field(default_factory=list)  # local rules
    applicable: list[CompiledRule] = field(default_factory=list)  # inherited from ancestors + local
    members: list[MemberRef] = field(default_factory=list)

    @property
    def rule_label(self) -> str:
        """The rules that place an account here, as ``territory:rule`` joined by ' & ' (plan rows, routed rows)."""
        return " & ".join(f"{r.territory}:{r.label}" for r in self.applicable)

    @property
    def owners(self) -> list[str]:
        """Users who may own this territory's accounts, in file order, without repeats."""
        return list(dict.fromkeys(m.user for m in self.members if m.role == OWNER_ROLE))


@dataclass(frozen=True)
class BalanceSpec:
    """One balance requirement, resolved: a measure, optionally restricted to a tier or a segment level."""

    measure: str
    tier: str | None
    tolerance: float
    segment: tuple[str, str] | None = None  # (segment, level)

    @property
    def label(self) -> str:
        if self.segment:
            return f"{self.measure}[{self.segment[0]}={self.segment[1]}]"
        return f"{self.measure}[{self.tier}]" if self.tier else self.measure


@dataclass(frozen=True)
class Segment:
    """A derived account field: the first level whose condition holds (None: every account left)."""

    name: str
    levels: list[tuple[str, Condition | None]]


@dataclass
class CompiledRules:
    """A validated, compiled territory plan."""

    source: str
    model: rs.RuleFile
    territories: dict[str, TerritoryNode]  # pre-order, file order
    balance: list[BalanceSpec]
    deal_field_types: dict[str, Any] = field(default_factory=dict)  # opportunity fields, built-ins included
    keep_owner: Condition | None = None  # open deals matching it keep their owner
    overlay_balance: list[BalanceSpec] = field(default_factory=list)
    lines: list[str] = field(default_factory=list, repr=False)
    segments: list[Segment] = field(default_factory=list)
    inputs: dict[str, ColumnMap] = field(default_factory=dict)  # per input role
    deprecations: list[Finding] = field(default_factory=list)  # keys read at a place they moved from, located there

    @property
    def field_types(self) -> dict[str, Any]:
        """The account fields read from the accounts file (segments are derived, not read)."""
        return dict(self.model.fields)

    @property
    def uses_run_date(self) -> bool:
        """Does any outcome depend on the run date (relative conditions, closing-soon protection)?"""
        conditions = [r.condition for t in self.territories.values() for r in t.rules]
        conditions += [c for s in self.segments for _, c in s.levels if c is not None]
        conditions += [self.keep_owner] if self.keep_owner is not None else []
        keep = self.model.opportunities.keep_owner
        return (keep is not None and keep.closing_within_days is not None) or any(c.op in RELATIVE for c in conditions for c in compares(c))

    def run_date(self, as_of: dt.date | None = None) -> dt.date:
        """The date relative conditions and closing-soon protection count from: ``as_of``, else the rule file's, else today."""
        policy = self.model.assignment
        return as_of or (dt.date.fromisoformat(policy.as_of) if policy.as_of else dt.date.today())

    @property
    def measures(self) -> dict[str, rs.Measure]:
        return dict(self.model.measures)

    @property
    def policy(self) -> rs.Assignment:
        return self.model.assignment

    def post_order(self) -> list[TerritoryNode]:
        return sorted(self.territories.values(), key=lambda t: (-t.depth, t.order))


def load_rules(path: str | Path) -> CompiledRules:
    """Read, validate and compile a rule file; raises :class:`RuleFileError` with every finding."""
    path = Path(path)
    return compile_rules(read_text(path), str(path))


def compile_rules(text: str, source: str = "<rules>") -> CompiledRules:
    """Validate and compile rule-file text (``source`` names it in messages); moved keys are read, listed in ``deprecations``."""
    loaded = load_yaml(text, source)
    moved, deprecations, findings = _read_moved(loaded)
    try:
        model = rs.RuleFile.model_validate(loaded.data)
    except ValidationError as exc:
        findings += _pydantic_findings(exc, loaded, moved)
        # unknown keys are the common typo: without them the rest may still be checked, so that
        # every problem is reported in one pass
        try:
            model = rs.RuleFile.model_validate(_without_unknown_keys(loaded.data, exc))
        except ValidationError:
            raise RuleFileError(sorted(findings, key=_order), loaded.lines) from None
    compiled = _Compiler(model, loaded, findings).run()
    if findings:
        raise RuleFileError(sorted(findings, key=_order), loaded.lines)
    compiled.deprecations = deprecations
    return compiled


def _read_moved(loaded: LoadedYaml) -> tuple[list[rs.MovedKey], list[Finding], list[Finding]]:
    """Keys given at a place they moved from, put at their new place: the moves made, a warning each, an error where both are given."""
    moved: list[rs.MovedKey] = []
    warnings: list[Finding] = []
    errors: list[Finding] = []
    for move in rs.MOVED_KEYS:
        source = _mapping(loaded.data, move.old[:-1])
        target = _mapping(loaded.data, move.new[:-1], create=True) if source and move.old[-1] in source else None
        if source is None or target is None:
            continue  # not given, or its new place is not a mapping: the models report that
        value = source.pop(move.old[-1])
        where = loaded.location(move.old, key=True)
        if move.new[-1] in target:
            there = loaded.location(move.new, key=True)
            errors.append(Finding(where, f"'{move.old_name}' moved to '{move.new_name}', which is given too (line {there.line}): keep one"))
            errors.append(Finding(there, f"'{move.new_name}' is given too as '{move.old_name}' (line {where.line}): keep one"))
            continue
        target[move.new[-1]] = value
        moved.append(move)
        warnings.append(Finding(where, f"'{move.old_name}' moved to '{move.new_name}'; read from here for now"))
    return moved, warnings, errors


def _mapping(data: Any, path: tuple[str, ...], *, create: bool = False) -> dict[str, Any] | None:
    """The mapping at ``path`` (missing ones made with ``create``), or None where a step is not a mapping."""
    for step in path:
        if not isinstance(data, dict):
            return None
        if create and step not in data:
            data[step] = {}
        data = data.get(step)
    return data if isinstance(data, dict) else None


def _without_unknown_keys(data: Any, exc: ValidationError) -> Any:
    data = copy.deepcopy(data)
    for err in exc.errors():
        if err["type"] != "extra_forbidden":
            continue
        *path, key = err["loc"]
        node = data
        for step in path:
            node = node[step]
        node.pop(key, None)
    return data


def _order(f: Finding) -> tuple[int, int]:
    return (f.location.line or 0, f.location.col or 0)


_MODELS: tuple[type[BaseModel], ...] = (
    rs.RuleFile,
    rs.Measure,
    rs.TierLevel,
    rs.Tiers,
    rs.TerritoryType,
    rs.Rule,
    rs.Member,
    rs.Territory,
    rs.BalanceEntry,
    rs.Assignment,
    rs.SegmentLevel,
    rs.Input,
    rs.Inputs,
    rs.Opportunities,
    rs.KeepOwner,
    rs.DealMeasure,
    rs.Routing,
    rs.TerritoryRouting,
)
_KNOWN_KEYS = sorted({key for model in _MODELS for key in model.model_fields})


_ECHOED = re.compile(r"_type$|^literal_error$|^finite_number$")


def _pydantic_findings(exc: ValidationError, loaded: LoadedYaml, moved: list[rs.MovedKey]) -> list[Finding]:
    findings = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        for move in moved:  # named and located as written
            if loc[: len(move.new)] == move.new:
                loc = (*move.old, *loc[len(move.new) :])
        if err["type"] == "extra_forbidden":
            key = str(loc[-1])
            elsewhere = f"; '{key}' does not belong here (see the schema)" if key in _KNOWN_KEYS else suggest(key, _KNOWN_KEYS)
            findings.append(Finding(loaded.location(loc, key=True), f"unknown key '{key}'{elsewhere}"))
            continue
        if err["type"] == "missing":
            findings.append(Finding(loaded.location(loc[:-1]), f"missing required key '{loc[-1]}'"))
            continue
        where = ".".join(str(p) for p in loc if not str(p).startswith(("function-", "literal")))
        message = err["msg"].removeprefix("Value error, ")
        if _ECHOED.search(err["type"]) and isinstance(err["input"], (str, int, float, bool)):
            message += f", not {shown(err['input'])}"  # strict types: '1_000' is text, true is not 1
        findings.append(Finding(loaded.location(loc), f"{where}: {message}" if where else message))
    return sorted(findings, key=_order)


class _Compiler:
    def __init__(self, model: rs.RuleFile, loaded: LoadedYaml, findings: list[Finding]):
        self.model, self.loaded, self.findings = model, loaded, findings
        self.types = {t.name: t for t in model.territory_types}
        self.nodes: dict[str, TerritoryNode] = {}

    def error(self, path: tuple[Any, ...], message: str, *, key: bool = False) -> None:
        self.findings.append(Finding(self.loaded.location(path, key=key), message))

    def run(self) -> CompiledRules:
        self.check_types()
        self.check_places()
        self.deal_fields = self.check_opportunities()
        self.check_measures()
        segments = self.segments()
        self.rule_fields = {**self.model.fields, **{s.name: "string" for s in segments}}  # what rules may test
        inputs = self.inputs()
        for i, t in enumerate(self.model.territories):
            self.territory(t, ("territories", i), None, None, [])
        balance = self.balance(self.model.assignment.balance, ("assignment", "balance"), self.model.measures, 0.10, tiers=True)
        deals = self.model.opportunities
        overlay_balance = self.balance(deals.balance, ("opportunities", "balance"), deals.measures, 0.15, tiers=False)
        self.check_routing()
        keep_owner = None
        if deals.keep_owner is not None and deals.keep_owner.when is not None:
            keep_owner = self.condition(
                deals.keep_owner.when, ("opportunities", "keep_owner", "when"), {**self.rule_fields, **self.deal_fields}
            )
        return CompiledRules(
            self.loaded.file,
            self.model,
            self.nodes,
            balance,
            self.deal_fields,
            keep_owner,
            overlay_balance,
            self.loaded.lines,
            segments,
            inputs,
        )

    def check_routing(self) -> None:
        """Routing overrides name owning territories; the website field is a declared text field."""
        routing = self.model.routing
        for tid in routing.territories:
            if tid not in self.nodes:
                self.error(("routing", "territories", tid), f"unknown territory '{tid}'{suggest(tid, list(self.nodes))}", key=True)
            elif self.nodes[tid].overlay:
                self.error(("routing", "territories", tid), f"territory '{tid}' is an overlay: routing gives accounts owners", key=True)
        field = routing.website_field
        if field is not None and self.model.fields.get(field) != "string":
            self.error(("routing", "website_field"), f"'{field}' must be a declared string field{suggest(field, list(self.model.fields))}")

    def check_places(self) -> None:
        if places.available():
            return
        for name, kind in self.model.fields.items():
            if kind in ("country", "state"):
                self.error(("fields", name), f"field '{name}': {places.MISSING_EXTRA}")

    def segments(self) -> list[Segment]:
        """Each segment's levels: unique names, a condition on account fields on every level but the last."""
        out = []
        for name, levels in self.model.segments.items():
            path = ("segments", name)
            if name in self.model.fields:
                self.error(path, f"segment '{name}' has the name of an account field; rename one", key=True)
            if not levels:
                self.error(path, f"segment '{name}' needs at least one level")
            seen: set[str] = set()
            parsed: list[tuple[str, Condition | None]] = []
            for i, level in enumerate(levels):
                if level.name in seen:
                    self.error((*path, i, "name"), f"duplicate level '{level.name}' in segment '{name}'")
                seen.add(level.name)
                if level.when is None and i < len(levels) - 1:
                    self.error((*path, i), f"level '{level.name}' needs 'when' (only the last level may omit it)")
                condition = None if level.when is None else self.condition(level.when, (*path, i, "when"), self.model.fields)
                parsed.append((level.name, condition))
            out.append(Segment(name, parsed))
        return out

    def check_levels(self, condition: Condition, path: tuple[Any, ...]) -> None:
        """A rule comparing a segment with a level it does not have would match nothing, silently."""
        levels = {name: [lv.name for lv in lvs] for name, lvs in self.model.segments.items()}
        for compare in compares(condition):
            if compare.field in levels and compare.op in ("eq", "ne", "in", "not_in"):
                known = {lv.casefold(): lv for lv in levels[compare.field]}
                for value in compare.shown:
                    if value.casefold() not in known:
                        self.error(
                            (*path, compare.field),
                            f"segment '{compare.field}' has no level '{value}'{suggest(value, levels[compare.field])}",
                        )

    def inputs(self) -> dict[str, ColumnMap]:
        """Per input, the preset's candidates and the rule file's own columns; an engine name nobody knows is an error."""
        spec = self.model.inputs
        preset = presets()[spec.preset] if spec.preset else {}
        known = {
            "accounts": [*ENGINE_COLUMNS["accounts"], *self.model.fields],
            "users": [*ENGINE_COLUMNS["users"], "max_accounts", *(f"max_{m}" for m in self.model.measures)],
            "opportunities": [*ENGINE_COLUMNS["opportunities"], *self.deal_fields],
            "pairs": list(ENGINE_COLUMNS["pairs"]),
        }
        out = {}
        for role in ROLES:
            given: rs.Input = getattr(spec, role)
            for name in given.columns:
                if name not in known[role]:
                    self.error(
                        ("inputs", role, "columns", name),
                        f"unknown {role} column '{name}'{suggest(name, known[role])}; map engine names (or declared fields) to the file's",
                        key=True,
                    )
            where = {name: self.loaded.location(("inputs", role, "columns", name)) for name in given.columns}
            if given.address is not None and role != "accounts":
                self.error(("inputs", role, "address"), "'address' applies to accounts only")
            out[role] = ColumnMap(role, dict(given.columns), preset.get(role, {}), spec.preset, where, given.sheet, given.address)
            self.check_shared(out[role], given, known[role])
        return out

    def check_shared(self, columns: ColumnMap, given: rs.Input, names: list[str]) -> None:
        """One file column read by one engine name only: ``owner_id: Id`` beside the preset's ``id`` made ``apply``
        write owners into the ids."""
        for column, first, second in columns.shared(names):
            mapped = next((n for n in (first, second) if n in given.columns), None)
            path = (
                ("inputs", columns.role, "columns", mapped)
                if mapped
                else ("inputs", columns.role, "address")
                if second == "address"
                else ("inputs", "preset")
            )
            self.error(
                path,
                f"column {column!r} would be read as both {first} ({columns.source(first)}) and {second} ({columns.source(second)}): "
                f"a column is read by one engine name only: map one of them to another column",
            )

    def condition(self, raw: Any, path: tuple[Any, ...], fields: dict[str, Any]) -> Condition:
        errors: list[ConditionError] = []
        parsed = parse_condition(raw, path, fields, errors)
        for e in errors:
            self.error(e.path, str(e), key=e.key)
        return parsed

    def check_opportunities(self) -> dict[str, Any]:
        """Opportunity fields with the built-in stage and close date; no name may shadow an account field."""
        deals = self.model.opportunities
        fields = {deals.stage_field: "string", deals.close_date_field: "date", **deals.fields}
        for name in deals.fields:
            if name in self.model.fields:
                self.error(
                    ("opportunities", "fields", name), f"opportunity field '{name}' has the name of an account field; rename one", key=True
                )
        for name, deal_measure in deals.measures.items():
            if deal_measure.field is not None and fields.get(deal_measure.field) not in ("integer", "number"):
                self.error(
                    ("opportunities", "measures", name, "field"),
                    f"deal measure '{name}' needs a numeric opportunity field{suggest(deal_measure.field, list(deals.fields))}",
                )
        for name, measure in self.model.measures.items():
            if measure.deals is not None and fields.get(measure.deals) not in ("integer", "number"):
                self.error(
                    ("measures", name, "deals"),
                    f"measure '{name}' needs a numeric opportunity field{suggest(measure.deals, list(deals.fields))}; "
                    "declare it under opportunities.fields",
                )
        return fields

    def check_types(self) -> None:
        names: set[str] = set()
        priorities: dict[int, str] = {}
        for i, t in enumerate(self.model.territory_types):
            if t.name in names:
                self.error(("territory_types", i, "name"), f"duplicate territory type '{t.name}'")
            if t.priority in priorities:
                self.error(
                    ("territory_types", i, "priority"),
                    f"priority {t.priority} is already used by type '{priorities[t.priority]}'; priorities must be unique",
                )
            names.add(t.name)
            priorities.setdefault(t.priority, t.name)

    def check_measures(self) -> None:
        fields = self.model.fields
        for name, m in self.model.measures.items():
            if m.field is None:
                continue
            if m.field not in fields:
                self.error(
                    ("measures", name, "field"), f"unknown field '{m.field}'{suggest(m.field, list(fields))}; declare it under 'fields'"
                )
            elif fields[m.field] not in ("integer", "number"):
                self.error(("measures", name, "field"), f"measure '{name}' needs a numeric field; '{m.field}' is {fields[m.field]}")
        tiers = self.model.tiers
        if tiers is None:
            return
        if tiers.by not in self.model.measures:
            self.error(("tiers", "by"), f"unknown measure '{tiers.by}'{suggest(tiers.by, list(self.model.measures))}")
        previous, names = 0.0, set()
        for i, level in enumerate(tiers.levels):
            last = i == len(tiers.levels) - 1
            if level.name in names:
                self.error(("tiers", "levels", i, "name"), f"duplicate tier '{level.name}'")
            names.add(level.name)
            if level.top is None and not last:
                self.error(("tiers", "levels", i), f"tier '{level.name}' needs 'top' (only the last level may omit it)")
            elif level.top is not None and level.top <= previous:
                self.error(("tiers", "levels", i, "top"), f"'top' must grow from level to level ({level.top} ≤ {previous})")
            previous = level.top or previous

    def territory(
        self,
        t: rs.Territory,
        path: tuple[Any, ...],
        parent: TerritoryNode | None,
        inherited_type: str | None,
        inherited: list[CompiledRule],
    ) -> None:
        if t.id in self.nodes:
            self.error((*path, "id"), f"duplicate territory id '{t.id}'")
            return
        type_name = t.type or inherited_type
        ttype = self.types.get(type_name) if type_name else None
        if type_name is None:
            self.error(path, f"territory '{t.id}' has no type and no parent to take one from")
        elif ttype is None:
            self.error((*path, "type"), f"unknown territory type '{type_name}'{suggest(type_name, list(self.types))}")
        node = TerritoryNode(
            id=t.id,
            name=t.name or t.id,
            type=type_name or "",
            priority=ttype.priority if ttype else 0,
            overlay=ttype.overlay if ttype else False,
            order=len(self.nodes),
            parent=parent.id if parent else None,
            depth=parent.depth + 1 if parent else 0,
        )
        self.nodes[t.id] = node
        if parent:
            parent.children.append(t.id)
        # overlay territories are matched per opportunity, so their rules may also use deal fields
        fields = {**self.rule_fields, **self.deal_fields} if node.overlay else self.rule_fields
        for j, rule in enumerate(t.rules):
            condition = self.condition(rule.when, (*path, "rules", j, "when"), fields)
            node.rules.append(CompiledRule(t.id, j + 1, rule.name, rule.inherit, condition))
        for j, compiled in enumerate(node.rules):
            self.check_levels(compiled.condition, (*path, "rules", j, "when"))
        node.applicable = inherited + node.rules
        seen: set[str] = set()
        for j, m in enumerate(t.members):
            if m.user in seen:
                self.error((*path, "members", j, "user"), f"user '{m.user}' is listed twice in territory '{t.id}'")
            seen.add(m.user)
            node.members.append(MemberRef(m.user, m.role, self.loaded.location((*path, "members", j, "user"))))
        passed_on = inherited + [r for r in node.rules if r.inherit]
        for k, child in enumerate(t.children):
            self.territory(child, (*path, "children", k), node, type_name, passed_on)

    def balance(
        self, entries: list[rs.BalanceEntry] | None, path: tuple[Any, ...], measures: dict[str, Any], default: float, *, tiers: bool
    ) -> list[BalanceSpec]:
        if entries is None:
            return [BalanceSpec(name, None, default) for name in measures]
        tier_names = {lv.name for lv in self.model.tiers.levels} if tiers and self.model.tiers else set()
        segments = {name: [lv.name for lv in levels] for name, levels in self.model.segments.items()} if tiers else {}
        out = []
        for i, b in enumerate(entries):
            if b.measure not in measures:
                self.error((*path, i, "measure"), f"unknown measure '{b.measure}'{suggest(b.measure, list(measures))}")
            if b.tier is not None and b.tier not in tier_names:
                hint = (
                    suggest(b.tier, sorted(tier_names))
                    if tier_names
                    else ("; declare 'tiers' first" if tiers else "; tiers apply to account balance only")
                )
                self.error((*path, i, "tier"), f"unknown tier '{b.tier}'{hint}")
            segment = None
            if b.segment is not None:
                ((name, level),) = b.segment.items()
                segment = (name, level)
                if b.tier is not None:
                    self.error((*path, i, "segment"), "a balance entry takes a tier or a segment, not both")
                elif name not in segments:
                    hint = (
                        suggest(name, sorted(segments))
                        if segments
                        else ("; declare 'segments' first" if tiers else "; segments apply to account balance only")
                    )
                    self.error((*path, i, "segment", name), f"unknown segment '{name}'{hint}", key=True)
                elif level not in segments[name]:
                    self.error((*path, i, "segment", name), f"unknown level '{level}' of segment '{name}'{suggest(level, segments[name])}")
            out.append(BalanceSpec(b.measure, b.tier, b.tolerance, segment))
        return out
