"""Safe YAML loading that keeps codes as strings and remembers where every key is.

PyYAML's default resolver follows YAML 1.1, where ``NO`` (Norway) is ``False``,
``ON`` (Ontario) is ``True`` and ``01234`` is the octal 668. Sales data is full of
such codes, so plain scalars are resolved here by a short YAML-1.2-like list:
``true``/``false``, ``null``/``~``/empty, decimal integers without a leading zero
and decimal floats. Everything else stays a string. Only the composer is used:
no tags are honoured, no Python objects are ever built from the file.

A rule file may come from anyone, so its cost is bounded before it is built:
its size (:data:`MAX_BYTES`) before parsing, then, on the parser's event stream
(which is iterative, unlike the composer and everything after it), its nesting
(:data:`MAX_DEPTH`) and node count (:data:`MAX_NODES`), aliases counted as the
copies they expand to. An alias inside its own anchor (cyclic data) is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import Finding, Location, RuleFileError

Path_ = tuple[str | int, ...]

# what the largest realistic rule files need, with room to spare (measured in docs/rules.md, Limits)
MAX_BYTES = 8 << 20
MAX_DEPTH = 64
MAX_NODES = 1_000_000

# libyaml when PyYAML was built with it (the same grammar, parsed about ten times faster);
# the base loaders resolve no tags: _scalar does
_LOADER = getattr(yaml, "CBaseLoader", yaml.BaseLoader)

_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_NULL = {"", "~", "null", "Null", "NULL"}
_INT = re.compile(r"[-+]?(0|[1-9][0-9]{0,299})")  # at most 300 digits: every one converts to a float
_FLOAT = re.compile(r"[-+]?(0|[1-9][0-9]*)?\.[0-9]+([eE][-+]?[0-9]+)?|[-+]?(0|[1-9][0-9]*)[eE][-+]?[0-9]+")
# characters YAML does not allow in a stream (its printable set, complemented)
_UNACCEPTABLE = re.compile("[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass
class LoadedYaml:
    """Plain data plus the 1-based (line, col) of every node, keyed by its path."""

    file: str
    text: str
    data: Any
    positions: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    key_positions: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    def location(self, path: Path_, *, key: bool = False) -> Location:
        """Where the value at ``path`` starts (or its key, with ``key=True``).

        Falls back to the nearest ancestor, so a missing key points at its mapping.
        """
        if key and tuple(path) in self.key_positions:
            line, col = self.key_positions[tuple(path)]
            return Location(self.file, line, col)
        for cut in range(len(path), -1, -1):
            pos = self.positions.get(tuple(path[:cut]))
            if pos is not None:
                return Location(self.file, pos[0], pos[1])
        return Location(self.file, 1, 1)


def _scalar(node: yaml.ScalarNode) -> Any:
    if node.style:  # quoted or block scalar: always a string (plain is None, or '' from libyaml)
        return node.value
    text = node.value
    if text in _NULL:
        return None
    if text in _BOOL:
        return _BOOL[text]
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return text


def _build(node: yaml.Node, path: Path_, out: LoadedYaml, findings: list[Finding]) -> Any:
    out.positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.ScalarNode):
        return _scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), out, findings) for i, item in enumerate(node.value)]
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                findings.append(Finding(_mark(out.file, key_node), "mapping keys must be plain names"))
                continue
            key = key_node.value
            if key == "<<":
                findings.append(Finding(_mark(out.file, key_node), "merge keys (<<) are not supported"))
                continue
            if key in result:
                findings.append(Finding(_mark(out.file, key_node), f"duplicate key '{key}'"))
                continue
            out.key_positions[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            result[key] = _build(value_node, (*path, key), out, findings)
        return result
    raise AssertionError(f"unknown YAML node {node!r}")  # pragma: no cover - composer yields only these


def shown(value: Any) -> str:
    """A value for a message, spelt as in YAML (``true``, ``null``, ``'1_000'``) and cut short."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    text = repr(value)
    return text if len(text) <= 80 else text[:79] + "…"


def _mark(file: str, item: yaml.Node | yaml.Event) -> Location:
    return Location(file, item.start_mark.line + 1, item.start_mark.column + 1)


def _too_large(file: str) -> RuleFileError:
    return RuleFileError([Finding(Location(file), f"the file is larger than {MAX_BYTES:,} bytes, the limit for rule files")])


def read_text(path: Path) -> str:
    """The rule file's text; reads at most one byte past :data:`MAX_BYTES`, so any file or device is safe."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise RuleFileError([Finding(Location(str(path)), f"cannot read rule file: {exc.strerror}")]) from None
    if len(raw) > MAX_BYTES:
        raise _too_large(str(path))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = _position(str(path), raw[: exc.start].decode("utf-8"))
        raise RuleFileError([Finding(where, f"not UTF-8 text: {exc.reason}")]) from None


def _position(file: str, before: str) -> Location:
    """Where the character after ``before`` is, counting line breaks as YAML does (``\\r``, NEL and LS too)."""
    lines = (before + "x").splitlines()
    return Location(file, len(lines), len(lines[-1]))


def _check_text(text: str, file: str) -> None:
    """Size first (characters never outnumber UTF-8 bytes), then characters YAML forbids, located."""
    if len(text) > MAX_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise _too_large(file)
    bad = _UNACCEPTABLE.search(text)
    if bad:
        where = _position(file, text[: bad.start()])
        raise RuleFileError([Finding(where, f"character U+{ord(bad.group()):04X} is not allowed in a YAML file")], text.splitlines())


@dataclass(slots=True)
class _Open:
    """A collection whose end event has not come yet."""

    anchor: str | None
    start: int  # nodes counted before it
    level: int  # 1 for the document's collection
    deepest: int  # the deepest level inside it so far, aliases expanded


def _check_shape(text: str, file: str) -> None:
    """Bound nesting and node count on the event stream, before the (recursive) composer runs."""
    nodes = 0
    stack: list[_Open] = []
    anchors: dict[str, tuple[int, int]] = {}  # anchor -> nodes and levels of its node
    deeper = f"nested more than {MAX_DEPTH} levels deep (aliases expanded), the limit for rule files"
    for event in yaml.parse(text, Loader=_LOADER):
        kind = type(event)
        if kind is yaml.ScalarEvent:  # most events; a scalar adds no level
            nodes += 1
            if event.anchor is not None:
                anchors[event.anchor] = (1, 0)
        elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
            nodes += 1
            level = len(stack) + 1
            if level > MAX_DEPTH:
                raise _shape_error(text, file, event, deeper)
            stack.append(_Open(event.anchor, nodes - 1, level, level))
        elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            done = stack.pop()
            if done.anchor is not None:
                anchors[done.anchor] = (nodes - done.start, done.deepest - done.level + 1)
            if stack:
                stack[-1].deepest = max(stack[-1].deepest, done.deepest)
        elif kind is yaml.AliasEvent:
            if any(o.anchor == event.anchor for o in stack):
                raise _shape_error(text, file, event, f"alias *{event.anchor} is inside its own anchor: recursive data is not allowed")
            size, levels = anchors.get(event.anchor, (1, 0))  # an undefined alias is the composer's to report
            nodes += size
            if len(stack) + levels > MAX_DEPTH:
                raise _shape_error(text, file, event, deeper)
            if stack:
                stack[-1].deepest = max(stack[-1].deepest, len(stack) + levels)
        if nodes > MAX_NODES:
            raise _shape_error(
                text,
                file,
                event,
                f"too many nodes: the file expands to more than {MAX_NODES:,} values (aliases expanded), the limit for rule files",
            )


def _shape_error(text: str, file: str, event: yaml.Event, message: str) -> RuleFileError:
    return RuleFileError([Finding(_mark(file, event), message)], text.splitlines())


def load_yaml(text: str, file: str) -> LoadedYaml:
    """Parse ``text`` within the limits; every problem becomes a located :class:`RuleFileError`."""
    _check_text(text, file)
    out = LoadedYaml(file=file, text=text, data=None)
    try:
        _check_shape(text, file)
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and problem.startswith("but "):  # e.g. "expected a single document in the stream, but found another document"
            problem = f"{exc.context}, {problem}"
        raise RuleFileError([Finding(where, f"YAML syntax error: {problem}")], text.splitlines()) from None
    except yaml.YAMLError as exc:
        raise RuleFileError([Finding(Location(file), f"YAML error: {exc}")]) from None
    if node is None:
        raise RuleFileError([Finding(Location(file, 1, 1), "the file is empty")])
    findings: list[Finding] = []
    out.data = _build(node, (), out, findings)
    if findings:
        raise RuleFileError(findings, out.lines)
    return out
