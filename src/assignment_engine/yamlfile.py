"""Safe YAML loading that keeps codes as strings and remembers where every key is.

PyYAML's default resolver follows YAML 1.1, where ``NO`` (Norway) is ``False``,
``ON`` (Ontario) is ``True`` and ``01234`` is the octal 668. Sales data is full of
such codes, so plain scalars are resolved here by a short YAML-1.2-like list:
``true``/``false``, ``null``/``~``/empty, decimal integers without a leading zero
and decimal floats. Everything else stays a string. Only the composer is used:
no tags are honoured, no Python objects are ever built from the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import Finding, Location, RuleFileError

Path_ = tuple[str | int, ...]

_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_NULL = {"", "~", "null", "Null", "NULL"}
_INT = re.compile(r"[-+]?(0|[1-9][0-9]*)")
_FLOAT = re.compile(r"[-+]?(0|[1-9][0-9]*)?\.[0-9]+([eE][-+]?[0-9]+)?|[-+]?(0|[1-9][0-9]*)[eE][-+]?[0-9]+")


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
    if node.style is not None:  # quoted or block scalar: always a string
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


_MAX_NODES = 1_000_000  # aliases can expand exponentially ("billion laughs")


def _build(node: yaml.Node, path: Path_, out: LoadedYaml, findings: list[Finding]) -> Any:
    if len(out.positions) > _MAX_NODES:
        raise RuleFileError([Finding(_mark(out.file, node), "the file expands to too many nodes (alias bomb?)")])
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


def _mark(file: str, node: yaml.Node) -> Location:
    return Location(file, node.start_mark.line + 1, node.start_mark.column + 1)


def load_yaml(text: str, file: str) -> LoadedYaml:
    """Parse ``text``; a syntax error becomes a located :class:`RuleFileError`."""
    out = LoadedYaml(file=file, text=text, data=None)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        problem = exc.problem or exc.context or "invalid YAML"
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
