"""Account hierarchies: ``parent_id`` links, one root per family.

Each account has at most one parent, so a weakly connected component of the link
graph is either a tree (exactly one account without a parent: the ultimate
parent) or contains exactly one cycle. Roots are found on arrays by pointer
doubling (ten million accounts hold no graph object each); networkx finds and
names the cycles, in the families that have one. Bad links (self-parent, missing parent,
cycle) are errors naming the accounts; with ``on_error="independent"`` they are
reported and the accounts concerned are treated as independent instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import networkx as nx
import numpy as np

from ..errors import Finding, HierarchyError
from ..tables.cells import shown
from ..tables.table import AccountTable


@dataclass
class Families:
    """``root[i]`` is the index of account i's ultimate parent (itself when independent)."""

    root: np.ndarray
    problems: list[Finding] = field(default_factory=list)  # reported, not raised, with on_error="independent"

    def size_of(self, account: int) -> int:
        return int(np.count_nonzero(self.root == self.root[account]))


def build_families(table: AccountTable, on_error: Literal["raise", "independent"] = "raise") -> Families:
    n = len(table)
    root = np.arange(n, dtype=np.int64)
    problems: list[Finding] = []
    child = np.flatnonzero(table.parent_ids.array != "")
    parent = table.ids.positions(table.parent_ids.array[child])  # one sorted join, no dict of ids
    bad = np.flatnonzero((parent < 0) | (parent == child))
    for i, p in zip(child[bad].tolist(), parent[bad].tolist(), strict=True):
        if p < 0:
            problems.append(
                Finding(
                    table.location(i, "parent_id"),
                    f"account {shown(table.ids[i])} names parent {shown(table.parent_ids[i])}, which is not in the accounts file",
                )
            )
        elif p == i:
            problems.append(Finding(table.location(i, "parent_id"), f"account {shown(table.ids[i])} is its own parent"))
    linked = (parent >= 0) & (parent != child)
    up = np.full(n, -1, dtype=np.int64)  # each account's parent; -1 for none or a bad link
    up[child[linked]] = parent[linked]
    top = np.where(up < 0, root, up)
    for _ in range(n.bit_length() + 1):  # pointer doubling: each pass doubles how far up every account points
        higher = top[top]
        if np.array_equal(higher, top):
            break
        top = higher
    cyclic = up[top] >= 0  # links that climb into a cycle reach no account without a parent
    root = np.where(cyclic, root, top)
    graph = nx.DiGraph()  # the families with a cycle only, to find and name it
    kids = np.flatnonzero(cyclic & (up >= 0))
    graph.add_edges_from(zip(up[kids].tolist(), kids.tolist(), strict=True))
    for component in nx.weakly_connected_components(graph):
        cycle = [u for u, _ in nx.find_cycle(graph.subgraph(component))]
        first = min(cycle)
        names = " → ".join(shown(table.ids[v]) for v in [*cycle, cycle[0]])
        problems.append(Finding(table.location(first, "parent_id"), f"parent_id links form a cycle: {names}"))
    if problems and on_error == "raise":
        raise HierarchyError(problems[:50])
    return Families(root, problems)
