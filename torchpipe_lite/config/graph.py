"""The graph between nodes, checked once at load: edges, joins, skips, jumps, and ``map``.

A node's successors are the nodes its ``next`` names and the nodes whose ``map`` reads it (a
``map`` is a reference, as in TorchPipe). A node with several predecessors is a join: it runs
once per request, after all of them, on the dict its ``map`` builds from theirs. What the
router needs at run time (successors, the edges that leave a skipped chain or subgraph, the
default entry) is computed here, so that routing a request looks things up and never searches.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import ConfigError
from ..keys import key_named

logger = logging.getLogger(__name__)

#: Backends that send a request through another graph of the pipeline (``jump`` names its root).
JUMP_BACKENDS = frozenset({"Jump", "MapReduce"})

_MAP_PART = re.compile(r"\s*([^\[\],\s]*)\s*\[([^\]]*)\]\s*(,|$)")


@dataclass(frozen=True)
class MapEntry:
    """``target_key`` of the node's input is ``source_key`` of node ``source``'s output."""

    source: str
    source_key: str
    target_key: str


@dataclass(frozen=True)
class Edge:
    """A request's dict leaves node ``source`` for node ``target``."""

    source: str
    target: str


@dataclass(frozen=True)
class Graph:
    """The edges of a pipeline, and what skipping from each node means."""

    successors: Mapping[str, tuple[str, ...]]
    predecessors: Mapping[str, tuple[str, ...]]
    #: For each node: the edges that leave the longest serial chain starting there (taken by
    #: a request whose filter says SerialSkip), and those that leave the largest independent
    #: subgraph rooted there (SubGraphSkip).
    serial_skip: Mapping[str, tuple[Edge, ...]]
    subgraph_skip: Mapping[str, tuple[Edge, ...]]
    roots: tuple[str, ...]
    #: Roots that a Jump or MapReduce node sends requests to (not entries for callers).
    jump_targets: frozenset[str]

    @property
    def entries(self) -> tuple[str, ...]:
        """Roots a caller's request may enter (the default one, when there is one)."""
        return tuple(root for root in self.roots if root not in self.jump_targets)

    def is_join(self, node: str) -> bool:
        return len(self.predecessors[node]) > 1


def parse_map(node: str, text: object, next_predecessors: Sequence[str]) -> tuple[MapEntry, ...]:
    """TorchPipe's ``map``: ``"B[result:B_result],C[result:data]"``, several pairs per source
    (``"B[1:0,2:data]"``), keys by their constants' names (``TASK_RESULT_KEY``), and
    ``"[result:data]"``, which reads the one predecessor, or on a join, as TorchPipe does, the
    first of them in name order. A map that gives no ``data`` loads (TorchPipe's does) with a
    warning; each request through it then fails."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"must be a string like 'B[result:data]', got {text!r}", node=node)
    entries: list[MapEntry] = []
    position = 0
    text = text.strip()
    while position < len(text):
        match = _MAP_PART.match(text, position)
        if match is None:
            raise ConfigError(
                f"cannot read {text[position:]!r}: expected NODE[src:dst,...] pairs", node=node
            )
        source = match.group(1)
        if not source:
            if not next_predecessors:
                raise ConfigError(
                    f"'[{match.group(2)}]' names no node, and no node's next leads here: "
                    "write NODE[src:dst]",
                    node=node,
                )
            source = sorted(next_predecessors)[0]
            if len(next_predecessors) > 1:
                logger.info("[%s].map: '[%s]' reads %s", node, match.group(2), source)
        for pair in match.group(2).split(","):
            keys = [key_named(key.strip()) for key in pair.split(":")]
            if len(keys) != 2 or not all(keys):
                raise ConfigError(f"{source}[{pair}]: expected src:dst", node=node)
            entries.append(MapEntry(source, keys[0], keys[1]))
        position = match.end()
    if not any(entry.target_key == "data" for entry in entries):
        logger.warning("[%s].map: %r gives the node no 'data'; its requests will fail", node, text)
    return tuple(entries)


def build_graph(
    next_nodes: Mapping[str, tuple[str, ...]],
    maps: Mapping[str, tuple[MapEntry, ...]],
    jumps: Mapping[str, str],
) -> tuple[Graph, list[str]]:
    """The graph of nodes with ``next_nodes``, ``maps`` and ``jumps`` (node -> the root it
    jumps to), and the nodes in topological order. ``ConfigError`` names what is wrong."""
    names = list(next_nodes)
    for name, targets in next_nodes.items():
        for target in targets:
            if target not in next_nodes:
                raise ConfigError(f"names an unknown node {target!r}", node=name, key="next")
    successors: dict[str, list[str]] = {name: list(next_nodes[name]) for name in names}
    for name, entries in maps.items():
        for entry in entries:
            if entry.source not in next_nodes:
                raise ConfigError(f"names an unknown node {entry.source!r}", node=name, key="map")
            if entry.source == name:
                raise ConfigError("a node cannot map from itself", node=name, key="map")
            if name not in successors[entry.source]:
                successors[entry.source].append(name)
    order = _topological_order(names, successors)
    predecessors: dict[str, list[str]] = {name: [] for name in names}
    for name in order:
        for target in successors[name]:
            predecessors[target].append(name)
    for name in names:
        if len(predecessors[name]) > 1 and name not in maps:
            raise ConfigError(
                f"joins {', '.join(predecessors[name])}: give it a map saying what its input "
                'takes from each (e.g. map = "A[result:data],B[result:other]")',
                node=name,
            )
    roots = tuple(name for name in order if not predecessors[name])
    frozen_successors = {name: tuple(successors[name]) for name in names}
    frozen_predecessors = {name: tuple(predecessors[name]) for name in names}
    graph = Graph(
        successors=frozen_successors,
        predecessors=frozen_predecessors,
        serial_skip={n: _serial_skip(n, frozen_successors, frozen_predecessors) for n in names},
        subgraph_skip={n: _subgraph_skip(n, frozen_successors, frozen_predecessors) for n in names},
        roots=roots,
        jump_targets=frozenset(jumps.values()),
    )
    _check_reach(graph)
    _check_jumps(graph, jumps)
    return graph, order


def _serial_skip(
    start: str, successors: Mapping[str, tuple[str, ...]], predecessors: Mapping
) -> tuple[Edge, ...]:
    """The edges out of the longest chain from ``start`` whose links each have one successor
    feeding a node with one predecessor."""
    last = start
    while len(successors[last]) == 1 and len(predecessors[successors[last][0]]) == 1:
        last = successors[last][0]
    return tuple(Edge(last, target) for target in successors[last])


def _subgraph_skip(
    start: str, successors: Mapping[str, tuple[str, ...]], predecessors: Mapping
) -> tuple[Edge, ...]:
    """The edges out of the largest subgraph rooted at ``start`` in which every node but the
    root has all its predecessors inside (TorchPipe's "independent" subgraph)."""
    inside = {start}
    grown = True
    while grown:
        grown = False
        for node in list(inside):
            for target in successors[node]:
                if target not in inside and set(predecessors[target]) <= inside:
                    inside.add(target)
                    grown = True
    return tuple(
        Edge(node, target)
        for node in sorted(inside)
        for target in successors[node]
        if target not in inside
    )


def reachable(graph: Graph, root: str) -> list[str]:
    """The nodes a request entering at ``root`` can reach, ``root`` first."""
    found, pending = [root], [root]
    while pending:
        for target in graph.successors[pending.pop()]:
            if target not in found:
                found.append(target)
                pending.append(target)
    return found


def _check_reach(graph: Graph) -> None:
    """A request entering at a root must be able to meet every predecessor of each join it
    reaches, or that join would wait for it forever."""
    for root in graph.roots:
        seen = set(reachable(graph, root))
        for node in seen:
            missing = [p for p in graph.predecessors[node] if p not in seen]
            if missing:
                raise ConfigError(
                    f"joins {', '.join(missing)}, which a request entering at {root!r} never "
                    "reaches",
                    node=node,
                    key="map",
                )


def _check_jumps(graph: Graph, jumps: Mapping[str, str]) -> None:
    """A jump goes to a root whose graph has one leaf, and no chain of jumps comes back."""
    for node, target in jumps.items():
        if target not in graph.predecessors:
            raise ConfigError(f"names an unknown node {target!r}", node=node, key="jump")
        if graph.predecessors[target]:
            raise ConfigError(
                f"{target!r} is not a root (it has predecessors): a jump enters a graph at "
                "its root",
                node=node,
                key="jump",
            )
        leaves = [n for n in reachable(graph, target) if not graph.successors[n]]
        if len(leaves) != 1:
            raise ConfigError(
                f"the graph at {target!r} ends in {len(leaves)} leaves ({', '.join(leaves)}); "
                "a jump needs one, whose result it takes",
                node=node,
                key="jump",
            )

    def visit(root: str, path: list[str]) -> None:
        for node in reachable(graph, root):
            if node in jumps:
                target = jumps[node]
                if target in path or target == root:
                    cycle = " -> ".join([*path, root, target])
                    raise ConfigError(f"jumps back into itself: {cycle}", node=node, key="jump")
                visit(target, [*path, root])

    for root in graph.roots:
        visit(root, [])


def _topological_order(names: list[str], successors: Mapping[str, list[str]]) -> list[str]:
    order: list[str] = []
    state: dict[str, str] = {}  # "visiting" or "done"

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = " -> ".join([*path[path.index(name) :], name])
            raise ConfigError(f"cycle: {cycle}", node=path[-1], key="next")
        state[name] = "visiting"
        for target in successors[name]:
            visit(target, [*path, name])
        state[name] = "done"
        order.append(name)

    for name in names:
        visit(name, [])
    order.reverse()
    return order
