"""Routing between nodes: where a request goes when it enters, and when a node is done with it.

A node's output goes to each of its successors (a copy each, when there are several). At a
successor the request may first have to wait (a join runs once every predecessor has
delivered), its input may be built by ``map``, and then the node's filter decides: run the
node (the request joins its queue), skip it (or the chain, or the subgraph, it starts), end
the request there (Break) or fail it. The common case, one predecessor and the default
``swap`` filter, is a few dictionary operations with no call per request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from time import monotonic
from typing import Any

from ..config.graph import Edge
from ..config.schema import NodeConfig, PipelineConfig
from ..errors import FilterError, RequestError
from ..filters import SWAP, Status, constant_status, filter_function
from .job import Job
from .request import RequestHandle

logger = logging.getLogger(__name__)

#: Where the jobs that must run a node go: ``put(node_name, jobs)`` (the node's queue).
Put = Callable[[str, list[Job]], None]


class Router:
    """Moves requests through the graph of ``config``; ``put`` queues jobs at a node."""

    def __init__(self, config: PipelineConfig, put: Put):
        graph = config.graph
        self._graph = graph
        self._put = put
        self._configs: Mapping[str, NodeConfig] = {node.name: node for node in config.nodes}
        self._successors = graph.successors
        self._filters = {
            node.name: filter_function(node.filter, node.params) for node in config.nodes
        }
        # Entries whose filter can only say Run (or swap, which has nothing to swap there).
        self._enter_directly = {
            node.name: node.filter == SWAP or constant_status(node.filter) is Status.RUN
            for node in config.nodes
        }
        # Where the default handling is all there is: one predecessor, swap, no map.
        self._plain = {
            node.name: len(graph.predecessors[node.name]) == 1
            and node.filter == SWAP
            and not node.map_entries
            for node in config.nodes
        }

    # -- entering and leaving ------------------------------------------------------------------

    def enter(self, node: str, handles: list[RequestHandle]) -> None:
        """Start ``handles`` at ``node``. The node's filter decides first, except a ``swap``
        (a request entering has no predecessor's result to swap in)."""
        now = monotonic()
        jobs = [Job(handle.item, handle, now, at=node) for handle in handles]
        if self._enter_directly[node]:
            self._put(node, jobs)
            return
        runs: dict[str, list[Job]] = {}
        for job in jobs:
            self._decide(node, job, runs)
        for target, entering in runs.items():  # a refusal here is the caller's to see
            self._put(target, entering)

    def route(self, node_name: str, jobs: list[Job]) -> None:
        """A node has run ``jobs``: each one's dict is its node's output; send it on."""
        runs: dict[str, list[Job]] = {}
        now = monotonic()
        successors, plain = self._successors, self._plain
        for job in jobs:
            at = job.at or node_name
            targets = successors[at]
            item = job.item
            if not targets:
                job.completion.end_branch(at, item, None)
            elif len(targets) == 1 and plain[targets[0]]:  # swap, inline
                if "result" not in item:
                    job.completion.end_request(at, item)  # type: ignore[attr-defined]
                    continue
                item["data"] = item.pop("result")
                job.at = targets[0]
                job.enqueued_s = now
                runs.setdefault(targets[0], []).append(job)
            else:
                self._leave([Edge(at, target) for target in targets], job, runs)
        self._flush(runs)

    def _leave(self, edges: list[Edge] | tuple[Edge, ...], job: Job, runs: dict) -> None:
        """``job``'s dict leaves along ``edges`` (a copy for each, when there are several);
        no edge: the request ends where it is."""
        if not edges:
            job.completion.end_branch(job.at, job.item, None)
            return
        if len(edges) == 1:
            self._arrive(edges[0], job, runs)
            return
        job.completion.fork(len(edges) - 1)  # type: ignore[attr-defined]
        for edge in edges:
            self._arrive(edge, Job(dict(job.item), job.completion, job.enqueued_s), runs)

    def _arrive(self, edge: Edge, job: Job, runs: dict) -> None:
        """``job`` reaches ``edge.target`` from ``edge.source``: wait at a join, build the
        input by ``map``, then let the target's filter decide."""
        target = edge.target
        config = self._configs[target]
        item: dict[str, Any] | None = job.item
        if self._graph.is_join(target):
            arrived = job.completion.join(  # type: ignore[attr-defined]
                target, edge.source, item, len(self._graph.predecessors[target])
            )
            if arrived is None:
                return  # others are still to come; this branch has merged into theirs
            item = self._mapped(config, arrived, job)
        elif config.map_entries:
            item = self._mapped(config, {edge.source: item}, job)
        if item is None:
            return  # the map failed the request
        job.item = item
        self._decide(target, job, runs)

    def _decide(self, node: str, job: Job, runs: dict) -> None:
        """Run ``node``'s filter on ``job`` and act on its status."""
        try:
            status = self._filters[node](job.item)
        except Exception as error:  # a user's filter: its failure is the request's
            failure = FilterError(f"filter raised {type(error).__name__}: {error}", node=node)
            failure.__cause__ = error
            job.completion.end_branch(node, job.item, failure)
            return
        job.at = node
        if status is Status.RUN:
            # As TorchPipe: the node computes a fresh result (a predecessor's, left in the dict
            # by a filter that did not swap it in, must not pass for this node's).
            job.item.pop("result", None)
            job.enqueued_s = monotonic()
            runs.setdefault(node, []).append(job)
        elif status is Status.SKIP:
            self._leave([Edge(node, target) for target in self._successors[node]], job, runs)
        elif status is Status.SERIAL_SKIP:
            self._leave(self._graph.serial_skip[node], job, runs)
        elif status is Status.SUBGRAPH_SKIP:
            self._leave(self._graph.subgraph_skip[node], job, runs)
        elif status is Status.BREAK:
            job.completion.end_request(node, job.item)  # type: ignore[attr-defined]
        else:
            error = FilterError(f"its filter ({self._configs[node].filter}) said Error", node=node)
            job.completion.end_branch(node, job.item, error)

    def _mapped(
        self, config: NodeConfig, arrived: Mapping[str, dict[str, Any]], job: Job
    ) -> dict[str, Any] | None:
        """The node's input from its predecessors' outputs, by its ``map`` (a new dict; the
        values are shared, not copied); None when a key is missing (the request failed)."""
        built: dict[str, Any] = {}
        for entry in config.map_entries:
            source = arrived[entry.source]
            if entry.source_key not in source:
                error = RequestError(
                    f"map: node {entry.source!r} gave no {entry.source_key!r} (it has "
                    f"{', '.join(map(repr, source)) or 'nothing'})",
                    node=config.name,
                )
                job.completion.end_branch(config.name, source, error)
                return None
            built[entry.target_key] = source[entry.source_key]
        if "data" not in built:
            error = RequestError(
                f"map = {config.params.get('map')!r} gives the node no 'data'", node=config.name
            )
            job.completion.end_branch(config.name, built, error)
            return None
        for source in arrived.values():
            # TorchPipe's "context" sugar: a shared context travels through a map unasked.
            if "context" in source and "context" not in built:
                built["context"] = source["context"]
        return built

    def _flush(self, runs: dict[str, list[Job]]) -> None:
        """Queue the jobs that must run each node; a node that refuses them (a full queue, a
        closing pipeline) fails those requests alone."""
        for node, jobs in runs.items():
            try:
                self._put(node, jobs)
            except RequestError as error:
                for job in jobs:
                    job.completion.end_branch(node, job.item, error)
