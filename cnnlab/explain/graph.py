"""Lay out a model's traced data-flow graph (cnnlab.analysis.Summary.edges) for drawing: each node gets a
level (its longest path from the input, so every edge points down) and a column (a chain stays in its
parent's column; parallel branches of a residual block or an Inception module sit side by side)."""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from ..analysis.trace import INPUT_NODE


@dataclass
class GraphNode:
    id: str  # "input", "row:N" or "join:K" as in Summary.edges
    level: int
    column: int


def _order_key(node: str) -> tuple[float, int]:
    """Execution order: the input first, rows by index; a join right after its last input (set later)."""
    if node == INPUT_NODE:
        return (-1.0, 0)
    kind, _, num = node.partition(":")
    return (float(num), 0) if kind == "row" else (float("inf"), int(num))


def layout(nodes: list[str], edges: list[tuple[str, str]]) -> tuple[list[GraphNode], int, int]:
    """(placed nodes in topological order, number of levels, number of columns). `nodes` lists every node;
    edges between unknown nodes are ignored."""
    known = set(nodes)
    edges = [(a, b) for a, b in edges if a in known and b in known and a != b]
    parents: dict[str, list[str]] = {n: [] for n in nodes}
    children: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        if a not in parents[b]:
            parents[b].append(a)
            children[a].append(b)
    key = {n: _order_key(n) for n in nodes}
    for n in nodes:  # a join (torch.cat) runs right after the last of its inputs
        if n.startswith("join:") and parents[n]:
            key[n] = (max(key[p][0] for p in parents[n]) + 0.5, key[n][1])
    # Kahn's algorithm, ties broken by execution order, so the drawing reads like the forward pass.
    waiting = {n: len(parents[n]) for n in nodes}
    ready = [(key[n], n) for n in nodes if waiting[n] == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, n = heapq.heappop(ready)
        order.append(n)
        for c in children[n]:
            waiting[c] -= 1
            if waiting[c] == 0:
                heapq.heappush(ready, (key[c], c))
    order += [n for n in nodes if n not in set(order)]  # a cycle cannot come from a trace; stay total anyway
    level: dict[str, int] = {}
    for n in order:
        level[n] = 1 + max((level[p] for p in parents[n] if p in level), default=-1)
    taken: dict[int, set[int]] = {}
    column: dict[str, int] = {}
    for n in order:
        want = column.get(parents[n][0], 0) if parents[n] else 0
        used = taken.setdefault(level[n], set())
        col = want
        while col in used:
            col += 1
        used.add(col)
        column[n] = col
    placed = [GraphNode(n, level[n], column[n]) for n in order]
    return placed, 1 + max(level.values(), default=0), 1 + max(column.values(), default=0)
