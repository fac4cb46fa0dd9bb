"""Match one record to territories in microseconds: the tree walked, the rules read on plain values.

:func:`match.match_accounts` evaluates every rule over a whole table with
numpy, which costs about a millisecond of fixed overhead per call. A record
routed on save needs a different shape of work: walk the territory tree,
evaluate each rule once on the record's values, and skip a subtree as soon as
a rule it inherits fails (20 regions × 50 postal ranges cost about 70 rule
evaluations, not 1,000). Sibling leaves are indexed on what their own rules
require (a dict on an ``eq``/``in`` field, bisection on non-overlapping
``between`` ranges), so a region of 300 leaves keyed by country and postal range
costs one lookup, not 300 rule evaluations. The semantics are those of
:mod:`match` (deepest on a branch wins, highest-priority type owns, equal
priorities tie); a property test holds the two to the same answer.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import DataError, Finding, Location
from ..rules.compile import CompiledRule, CompiledRules, TerritoryNode
from ..rules.conditions import RELATIVE, AllOf, AnyOf, Compare, Condition, Not, required_comparisons
from ..tables.cells import EPOCH, TEXT_KINDS, CellError, as_text, parse_cell

Values = dict[str, Any]  # field → str (text kinds) or float (NaN: missing; dates as days since 1970)


def typed(record: Mapping[str, Any], field_types: Mapping[str, Any], source: str = "<record>") -> Values:
    """A record's declared fields as the plain values rules are read on, converted as a file cell is
    (text stripped, empty text missing; numbers, booleans and dates parsed); a value that cannot be read as
    its field's type is a :class:`DataError` at ``source:1:field``."""
    out: Values = {}
    for name, kind in field_types.items():
        v = record.get(name)
        if kind in TEXT_KINDS:
            text = v if v is None or isinstance(v, str) else as_text(v)
            out[name] = (text.strip() or None) if text is not None else None
            continue
        try:
            out[name] = parse_cell(v, kind)
        except CellError as exc:
            raise DataError([Finding(Location(source, 1, column=name), str(exc))]) from None
    return out


def holds(condition: Condition, values: Values, as_of: dt.date) -> bool:
    """The condition on one record's values, with :class:`Compare`'s semantics (missing values, case, RE2)."""
    if isinstance(condition, AllOf):
        return all(holds(p, values, as_of) for p in condition.parts)
    if isinstance(condition, AnyOf):
        return any(holds(p, values, as_of) for p in condition.parts)
    if isinstance(condition, Not):
        return not holds(condition.part, values, as_of)
    assert isinstance(condition, Compare)
    return _compare(condition, values.get(condition.field), as_of)


def _compare(c: Compare, x: Any, as_of: dt.date) -> bool:
    op, v = c.op, c.value
    missing = x is None or (isinstance(x, float) and math.isnan(x))
    if op == "exists":
        return (not missing) == v
    if op == "is_null":
        return missing == v
    if missing:
        return op in ("ne", "not_in")
    if isinstance(x, str):
        if op in ("eq", "ne"):
            return (x.casefold() == v) == (op == "eq")
        if op in ("in", "not_in"):
            return (x.casefold() in v) == (op == "in")
        if op == "matches":
            return v.search(x) is not None
        if op == "between":
            return v[0] <= x <= v[1]
        if op in _ORDER:
            return bool(_ORDER[op](x, v))
        folded = x.casefold()
        method = {"starts_with": str.startswith, "ends_with": str.endswith, "contains": str.__contains__}[op]
        return any(method(folded, item) for item in v)
    if op in RELATIVE:
        today = float((as_of - EPOCH).days)
        return x < today - v if op == "older_than_days" else today - v <= x <= today + v
    if op == "eq":
        return bool(x == v)
    if op == "ne":
        return bool(x != v)
    if op == "in":
        return x in v
    if op == "not_in":
        return x not in v
    if op == "between":
        return bool(v[0] <= x <= v[1])
    return bool(_ORDER[op](x, v))


_ORDER = {"lt": lambda a, b: a < b, "lte": lambda a, b: a <= b, "gt": lambda a, b: a > b, "gte": lambda a, b: a >= b}


@dataclass(frozen=True)
class RecordMatch:
    territories: list[str]  # every territory the record is in (deepest per branch), file order
    owning: list[str]  # the owning territory, or the tied ones


class RecordMatcher:
    """The owning territories of compiled rules, prepared once for per-record matching."""

    def __init__(self, rules: CompiledRules):
        self.rules = rules
        nodes = rules.territories
        self.roots = [n for n in nodes.values() if n.parent is None]
        self.order = {tid: i for i, tid in enumerate(nodes)}
        self.inner: dict[str, list[TerritoryNode]] = {}  # children with children: always visited
        self.leaves: dict[str, _Candidates] = {}  # leaf children, indexed
        for node in nodes.values():
            children = [nodes[c] for c in node.children]
            self.inner[node.id] = [c for c in children if c.children]
            # a leaf that is an overlay or has no rules never owns: it is left out of the index
            leaves = [c for c in children if not c.children and c.applicable and not c.overlay]
            self.leaves[node.id] = _index([(leaf, _required(leaf)) for leaf in leaves])

    def segments(self, values: Values, as_of: dt.date) -> None:
        """Add the record's segment levels to ``values`` (first level whose condition holds)."""
        for segment in self.rules.segments:
            values[segment.name] = next((name for name, c in segment.levels if c is None or holds(c, values, as_of)), None)

    def match(self, values: Values, as_of: dt.date) -> RecordMatch:
        memo: dict[int, bool] = {}

        def rule_holds(rule: CompiledRule) -> bool:
            key = id(rule)
            if key not in memo:
                memo[key] = holds(rule.condition, values, as_of)
            return memo[key]

        found: list[TerritoryNode] = []

        def visit(node: TerritoryNode) -> bool:
            """Is the record in ``node`` or below it? Collects the deepest matches of each branch."""
            if any(r.inherit and not rule_holds(r) for r in node.rules):
                return False  # every descendant inherits the failed rule
            below = False
            for child in self.inner[node.id]:
                below |= visit(child)
            for leaf in self.leaves[node.id].candidates(values):
                if all(rule_holds(r) for r in leaf.applicable):
                    found.append(leaf)
                    below = True
            if below:
                return True
            if node.applicable and not node.overlay and all(rule_holds(r) for r in node.applicable):
                found.append(node)
                return True
            return False

        for root in self.roots:
            visit(root)
        found.sort(key=lambda n: self.order[n.id])
        if not found:
            return RecordMatch([], [])
        best = min(n.priority for n in found)
        return RecordMatch([n.id for n in found], [n.id for n in found if n.priority == best])


Required = dict[str, Compare]  # field → one comparison a leaf's own rules require of it


def _required(leaf: TerritoryNode) -> Required:
    """Comparisons the leaf's own rules require that an index can look up, the most selective per field."""
    out: Required = {}
    rank = {"eq": 0, "in": 1, "between": 2}
    for c in (c for rule in leaf.rules for c in required_comparisons(rule.condition)):
        held = out.get(c.field)
        if c.op in rank and c.kind not in ("date", "datetime") and (held is None or rank[c.op] < rank[held.op]):
            out[c.field] = c
    return out


class _Candidates:
    """Leaves that may hold for a record, a superset of those that do; each is then checked in full."""

    def candidates(self, values: Values) -> Iterable[TerritoryNode]:
        raise NotImplementedError


@dataclass(frozen=True)
class _Scan(_Candidates):
    leaves: list[TerritoryNode]

    def candidates(self, values: Values) -> Iterable[TerritoryNode]:
        return self.leaves


@dataclass(frozen=True)
class _ByValue(_Candidates):
    """Leaves keyed on the value an ``eq``/``in`` comparison requires; ``rest`` require none on the field."""

    field: str
    text: bool
    table: dict[Any, _Candidates]
    rest: _Candidates

    def candidates(self, values: Values) -> Iterable[TerritoryNode]:
        x = values.get(self.field)
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return self.rest.candidates(values)  # a missing value fails eq and in
        hit = self.table.get(x.casefold() if self.text else x)
        if hit is None:
            return self.rest.candidates(values)
        return [*hit.candidates(values), *self.rest.candidates(values)]


@dataclass(frozen=True)
class _ByRange(_Candidates):
    """Leaves whose ``between`` ranges on one field do not overlap, sorted: one bisection finds the only fit."""

    field: str
    lows: list[Any]
    highs: list[Any]
    leaves: list[TerritoryNode]
    rest: _Candidates

    def candidates(self, values: Values) -> Iterable[TerritoryNode]:
        x = values.get(self.field)
        i = -1 if x is None or (isinstance(x, float) and math.isnan(x)) else bisect.bisect_right(self.lows, x) - 1
        if i < 0 or not x <= self.highs[i]:
            return self.rest.candidates(values)
        return [self.leaves[i], *self.rest.candidates(values)]


_SMALL = 4  # below this many leaves a scan is as cheap as a lookup


def _index(entries: list[tuple[TerritoryNode, Required]]) -> _Candidates:
    """The cheapest lookup for these leaves: by value on the field most of them key on, else by range."""
    if len(entries) <= _SMALL:
        return _Scan([leaf for leaf, _ in entries])
    keyed: dict[str, int] = {}
    ranged: dict[str, int] = {}
    for _, required in entries:
        for name, c in required.items():
            counts = ranged if c.op == "between" else keyed
            counts[name] = counts.get(name, 0) + 1
    if keyed:
        name = max(sorted(keyed), key=keyed.__getitem__)
        groups: dict[Any, list[tuple[TerritoryNode, Required]]] = {}
        rest = []
        for leaf, required in entries:
            on = required.get(name)
            if on is None or on.op == "between":
                rest.append((leaf, required))
                continue
            narrower = {k: v for k, v in required.items() if k != name}
            for key in (on.value,) if on.op == "eq" else sorted(on.value, key=repr):
                groups.setdefault(key, []).append((leaf, narrower))
        text = next(required[name].kind for _, required in entries if name in required) in TEXT_KINDS
        return _ByValue(name, text, {k: _index(g) for k, g in groups.items()}, _index(rest))
    for name in sorted(ranged, key=lambda n: (-ranged[n], n)):
        inside = sorted((e for e in entries if name in e[1]), key=lambda e: e[1][name].value[0])
        bounds = [e[1][name].value for e in inside]
        if all(bounds[i][1] < bounds[i + 1][0] for i in range(len(bounds) - 1)):
            rest = [e for e in entries if name not in e[1]]
            leaves = [leaf for leaf, _ in inside]
            return _ByRange(name, [b[0] for b in bounds], [b[1] for b in bounds], leaves, _index(rest))
    return _Scan([leaf for leaf, _ in entries])
