"""Fuzzing the rule-file loader: whatever the text, compile_rules compiles it or raises a located RuleFileError.

Two sources of input: documents generated from the committed JSON Schema
(rule-file.schema.json, so every key and type an editor would offer), and
valid rule files broken on purpose (lines deleted, duplicated or cut, values
replaced by odd ones, random characters and bytes inserted). A file that
compiles must also match an account. Any other exception, a RecursionError or
an OverflowError, is a bug.

The suite runs a few seconds of examples, the same ones every run;
``HYPOTHESIS_PROFILE=long`` runs many more, each run different.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from assignment_engine import CompiledRules, Engine, RuleFileError, compile_rules, load_rules
from assignment_engine.rules.yamlfile import load_yaml
from conftest import EXAMPLE_RULES

ROOT = Path(__file__).parent.parent
SCHEMA = json.loads((ROOT / "rule-file.schema.json").read_text(encoding="utf-8"))
SHIPPED_RULES = (ROOT / "rules" / "territories.yaml").read_text(encoding="utf-8")
SOURCE = "fuzz.yaml"
SAMPLE = {"string": "US", "integer": 7, "number": 1e6, "boolean": True, "date": "2026-01-31"}  # a value per field type

LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"


def fuzz(examples: int) -> settings:
    """``examples`` in the suite (derandomized, from conftest's profile); fifty times more, at random, when long."""
    return settings(max_examples=examples * 50, derandomize=False) if LONG else settings(max_examples=examples)


def outcome(load: Callable[[], CompiledRules], source: str, lines: int) -> CompiledRules | RuleFileError:
    """The property: a plan that matches an account, or a RuleFileError whose every finding is in the file, on a line when it has one."""
    try:
        rules = load()
    except RuleFileError as error:
        event("refused")
        assert error.findings
        for finding in error.findings:
            where = finding.location
            assert where.file == source, finding
            if where.line is None:  # whole-file problems only
                assert finding.message.startswith(("the file is larger than", "cannot read")), finding
            else:
                assert 1 <= where.line <= lines + 1 and (where.col is None or where.col >= 1), finding
        assert str(error)  # renders, offending lines and carets included
        return error
    event("compiled")
    # values that compile but overflow later (a priority of 10**22 did, in numpy) fail here
    Engine(rules).match({"id": "A1", **{name: SAMPLE[kind] for name, kind in rules.field_types.items()}})
    return rules


# ---------------------------------------------------------------- (a) documents from the JSON Schema

# JSON values where the schema allows anything (a condition's entries)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def from_node(node: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """A strategy for one schema node: containers walked here, leaves (patterns, bounds, enums, formats) by hypothesis-jsonschema.

    hypothesis-jsonschema on the whole schema re-canonicalises sub-schemas on
    every draw (about 0.3 s an example) and its object generator calls a
    Hypothesis internal that no longer exists; walking the containers here
    keeps every constraint of the schema at a fraction of the cost.
    ``depth`` counts references followed, which bounds the recursive territory tree.
    """
    if "$ref" in node:
        return from_node(SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[1]], depth + 1)
    if "anyOf" in node:
        return st.one_of([from_node(option, depth) for option in node["anyOf"]])
    kind = node.get("type")
    if kind == "array":
        if depth > 3 and not node.get("minItems"):
            return st.just([])
        return st.lists(from_node(node["items"], depth), min_size=node.get("minItems", 0), max_size=node.get("minItems", 0) + 3)
    if kind == "object" and "properties" in node:
        required = set(node.get("required", []))
        strategies = {key: from_node(value, depth) for key, value in node["properties"].items()}
        return st.fixed_dictionaries(
            {k: s for k, s in strategies.items() if k in required}, optional={k: s for k, s in strategies.items() if k not in required}
        )
    if kind == "object":
        values = node.get("additionalProperties")
        return st.dictionaries(
            st.text(max_size=12),
            from_node(values, depth) if isinstance(values, dict) else JSON,
            min_size=node.get("minProperties", 0),
            max_size=4,
        )
    return from_schema(node)


FLOW = st.sampled_from([False, True, None])  # block, flow, or flow for the innermost collections only


def dumped(document: Any, flow: bool | None) -> str:
    return yaml.safe_dump(document, default_flow_style=flow, allow_unicode=True, sort_keys=False)


@fuzz(40)
@given(from_node(SCHEMA), FLOW)
def test_documents_from_the_schema_compile_or_are_located(document, flow):
    text = dumped(document, flow)
    outcome(lambda: compile_rules(text, SOURCE), SOURCE, len(text.splitlines()))


@fuzz(60)
@given(st.data(), st.sampled_from(sorted(SCHEMA["properties"])), FLOW)
def test_a_section_from_the_schema_in_a_valid_file_compiles_or_is_located(data, section, flow):
    """Whole generated documents rarely hang together (types, measures and tiers refer to each other), so most stop
    at a semantic finding; one generated section in the example file often compiles, and is then matched."""
    document = load_yaml(EXAMPLE_RULES, SOURCE).data
    document[section] = data.draw(from_node(SCHEMA["properties"][section]), label=section)
    text = dumped(document, flow)
    outcome(lambda: compile_rules(text, SOURCE), SOURCE, len(text.splitlines()))


# ---------------------------------------------------------------- (b) valid rule files broken on purpose

ODD_VALUES = [
    "9" * 400,
    "99999999999999999999999",
    "1e309",
    "-1e309",
    "-1",
    "0",
    "2147483648",
    "-0.0",
    "1_000",
    "0x1F",
    "0o17",
    ".nan",
    "nan",
    ".inf",
    "-.inf",
    "true",
    "false",
    "null",
    "~",
    "''",
    '""',
    "[]",
    "{}",
    "[[]]",
    "{a: {}}",
    "[" * 100 + "]" * 100,
    "{a: " * 40 + "1" + "}" * 40,
    "&x [*x]",
    "&y {k: *y}",
    "*x",
    "*undefined",
    "&a 1",
    "<<: *a",
    "!!python/object/apply:os.system [ls]",
    "!!binary aGk=",
    "2026-13-45",
    "2026-02-29",
    "\x00",
    "\x1b[31m",
    "\u202e",
    "\ud800",
    "\ufeff",
    "\t",
    "'",
    '"',
    "|",
    ">",
    "---",
    "...",
    "%YAML 1.1",
    "@",
    "`",
    "? ",
    ": ",
    "- ",
    "#",
    "\\",
    "é",
    "\r",
    "\u2028",
]
BASES = [EXAMPLE_RULES, SHIPPED_RULES]
where_ = st.floats(min_value=0, max_value=1, exclude_max=True)  # a position, as a share of the text or of its lines
any_text = st.text(st.integers(0, 0x10FFFF).map(chr), min_size=1, max_size=6)  # surrogates and control characters included
MUTATIONS = st.one_of(
    st.tuples(st.sampled_from(["delete", "duplicate", "truncate", "swap", "indent", "dedent"]), where_, where_),
    st.tuples(st.just("replace"), where_, st.sampled_from(ODD_VALUES) | any_text),
    st.tuples(st.just("insert"), where_, st.sampled_from(ODD_VALUES) | any_text),
)


def mutate(text: str, kind: str, at: float, arg: Any) -> str:
    lines = text.splitlines(keepends=True) or [""]
    i = int(at * len(lines))
    if kind == "delete":
        return "".join(lines[:i] + lines[i + 1 :])
    if kind == "duplicate":
        return "".join(lines[: i + 1] + lines[i:])
    if kind == "truncate":
        return text[: int(at * len(text))]
    if kind == "swap":
        j = int(arg * len(lines))
        lines[i], lines[j] = lines[j], lines[i]
        return "".join(lines)
    if kind in ("indent", "dedent"):
        lines[i] = "  " + lines[i] if kind == "indent" else lines[i].removeprefix("  ")
        return "".join(lines)
    p = int(at * len(text))
    if kind == "insert":
        return text[:p] + arg + text[p:]
    # replace the word at p (a value or a key) by arg
    start, end = p, p
    while start > 0 and (text[start - 1].isalnum() or text[start - 1] in "_.-"):
        start -= 1
    while end < len(text) and (text[end].isalnum() or text[end] in "_.-"):
        end += 1
    return text[:start] + arg + text[end:]


@fuzz(150)
@given(st.sampled_from(BASES), st.lists(MUTATIONS, min_size=1, max_size=3))
def test_broken_rule_files_compile_or_are_located(base, mutations):
    text = base
    for mutation in mutations:
        text = mutate(text, *mutation)
    outcome(lambda: compile_rules(text, SOURCE), SOURCE, len(text.splitlines()))


@fuzz(40)
@given(st.sampled_from(BASES), where_, st.binary(min_size=1, max_size=8))
def test_random_bytes_in_a_rule_file_on_disk_are_located(base, at, payload):
    raw = base.encode()
    p = int(at * len(raw))
    raw = raw[:p] + payload + raw[p:]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.yaml"
        path.write_bytes(raw)
        outcome(lambda: load_rules(path), str(path), len(raw.decode("utf-8", "replace").splitlines()))


def test_the_bases_are_valid():
    """The mutations start from files that compile, so the failures they find come from the mutations."""
    for base in BASES:
        assert isinstance(compile_rules(base, SOURCE), CompiledRules)
