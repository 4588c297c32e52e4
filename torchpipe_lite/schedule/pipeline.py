"""The pipeline: builds the nodes of a configuration, routes requests between them."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from time import monotonic
from typing import Any

from ..config.loader import load_config
from ..config.schema import PipelineConfig
from ..errors import InvalidRequestError, PipelineClosedError, RequestError, RequestTimeoutError
from ..metrics import NodeStats
from .inline_node import InlineNode
from .job import Job
from .node import Node
from .request import RequestHandle

logger = logging.getLogger(__name__)


class Pipeline:
    """A running pipeline. Thread-safe: call it from any number of threads.

    ``model(req)`` blocks until ``req`` went through every stage and raises the request's typed
    error if it failed; ``req["result"]`` holds the last stage's result, and is absent when a
    stage produced none. ``model.submit(req)`` returns a ``concurrent.futures.Future`` instead.
    """

    def __init__(self, config: PipelineConfig):
        self.config = config
        self._nodes: dict[str, Node] = {}
        self._successors: dict[str, tuple[Node, ...]] = {}
        self._closed = False
        self._close_lock = threading.Lock()
        for node_config in config.nodes:
            node_class = InlineNode if node_config.inline else Node
            self._nodes[node_config.name] = node_class(node_config, self._route)
        for node_config in config.nodes:
            self._successors[node_config.name] = tuple(
                self._nodes[name] for name in node_config.next_nodes
            )
        for name, node in self._nodes.items():
            feeders = _transitive_predecessors(config, name)
            node.queue.upstream = tuple(self._nodes[f] for f in feeders) if feeders else None
        started: list[Node] = []
        try:
            for node in self._nodes.values():
                node.start()
                started.append(node)
        except BaseException:
            for node in started:
                node.close()
            raise
        self._default_entry = self._nodes[config.roots[0]] if len(config.roots) == 1 else None

    # -- calling -------------------------------------------------------------------------------

    def __call__(
        self,
        request: dict[str, Any] | list[dict[str, Any]],
        timeout_s: float | None = None,
        *,
        strict: bool = False,
    ) -> None:
        """Run one request dict, or a list of them, to completion (results land in the dicts).

        With a list, every request runs; the first error (in list order) is raised after all
        have completed. ``timeout_s`` is the requests' deadline: one still waiting at a stage
        when it passes is dropped there, unrun, and the call raises ``RequestTimeoutError``
        (a batch already running finishes, unwatched). A request that a stage ends without a
        result (a decoder given bytes that are not an image) has no ``"result"`` key and no
        error, as in TorchPipe; ``strict=True`` raises ``NoResultError`` for it instead,
        naming the node.
        """
        requests = request if isinstance(request, list) else [request]
        deadline_s = _deadline(timeout_s)
        handles = [
            RequestHandle(self._checked(item), strict=strict, deadline_s=deadline_s)
            for item in requests
        ]
        self._enqueue(handles)
        for handle in handles:
            remaining = None if timeout_s is None else max(0.0, deadline_s - monotonic())
            if not handle.wait(remaining):
                for unfinished in handles:
                    unfinished.cancel()
                raise RequestTimeoutError(f"no answer within {timeout_s} s")
        for handle in handles:
            if handle.error is not None:
                raise handle.error

    def submit(
        self, request: dict[str, Any], *, strict: bool = False, timeout_s: float | None = None
    ) -> Future:
        """Start ``request`` and return a future that resolves to the same dict (or raises;
        ``strict`` and ``timeout_s`` as for calling). Cancelling the future before it ends
        drops the request at the next stage it reaches."""
        future: Future = Future()
        future.set_running_or_notify_cancel()

        def resolve(handle: RequestHandle) -> None:
            if handle.error is None:
                future.set_result(handle.item)
            else:
                future.set_exception(handle.error)

        handle = RequestHandle(
            self._checked(request), on_done=resolve, strict=strict, deadline_s=_deadline(timeout_s)
        )
        try:
            self._enqueue([handle])
        except RequestError as error:
            future.set_exception(error)
        return future

    def dispatch(
        self,
        request: dict[str, Any],
        on_done: Callable[[dict[str, Any], BaseException | None], None],
        *,
        strict: bool = False,
        timeout_s: float | None = None,
    ) -> RequestHandle:
        """Start ``request``; ``on_done(request, error)`` is called once it has ended
        (``strict`` and ``timeout_s`` as for calling). Returns its handle, whose ``cancel()``
        drops the request at the next stage it reaches (its caller has gone away).

        The cheapest way in for servers: no thread waits and no future is made. ``on_done``
        runs on the worker thread that ends the request (or, for a request refused at once,
        on the calling thread), so it must be quick and must not block or raise.
        """

        def resolve(handle: RequestHandle) -> None:
            on_done(handle.item, handle.error)

        handle = RequestHandle(
            self._checked(request), on_done=resolve, strict=strict, deadline_s=_deadline(timeout_s)
        )
        try:
            self._enqueue([handle])
        except RequestError as error:
            on_done(request, error)
        return handle

    def _checked(self, item: Any) -> dict[str, Any]:
        if not isinstance(item, dict):
            raise InvalidRequestError(f"a request must be a dict, got {type(item).__name__}")
        if "data" not in item:
            raise InvalidRequestError("a request needs a 'data' key")
        item.pop("result", None)  # a reused dict must not show a stale result
        return item

    def _entry(self, item: dict[str, Any]) -> Node:
        name = item.get("node_name")
        if name is None:
            if self._default_entry is None:
                roots = ", ".join(self.config.roots)
                raise InvalidRequestError(f"several entry nodes ({roots}): set 'node_name'")
            return self._default_entry
        try:
            return self._nodes[name]
        except KeyError:
            raise InvalidRequestError(f"unknown node_name {name!r}") from None

    def _enqueue(self, handles: list[RequestHandle]) -> None:
        if self._closed:
            raise PipelineClosedError("the pipeline is closed")
        now = monotonic()
        by_entry: dict[Node, list[Job]] = {}
        for handle in handles:
            by_entry.setdefault(self._entry(handle.item), []).append(Job(handle.item, handle, now))
        for node, jobs in by_entry.items():
            node.put(jobs)

    # -- routing (runs on worker threads) ------------------------------------------------------

    def _route(self, node_name: str, jobs: list[Job]) -> None:
        successors = self._successors[node_name]
        onward: list[Job] = []
        now = monotonic()
        for job in jobs:
            item = job.item
            if not successors or "result" not in item:
                job.completion.end_branch(node_name, item, None)
            elif len(successors) == 1:
                item["data"] = item.pop("result")
                job.enqueued_s = now
                onward.append(job)
            else:
                self._fork(successors, job, now)
        if onward:
            self._put(successors[0], onward)

    def _fork(self, successors: tuple[Node, ...], job: Job, now: float) -> None:
        handle = job.completion
        handle.fork(len(successors) - 1)
        result = job.item.pop("result")
        for successor in successors:
            branch = dict(job.item)
            branch["data"] = result
            self._put(successor, [Job(branch, handle, now)])

    @staticmethod
    def _put(node: Node, jobs: list[Job]) -> None:
        try:
            node.put(jobs)
        except RequestError as error:
            for job in jobs:
                job.completion.end_branch(node.name, job.item, error)

    # -- lifecycle and figures -----------------------------------------------------------------

    def close(self) -> None:
        """Stop intake, finish everything in flight, and join every worker thread."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        for node in self._nodes.values():  # topological order: upstream drains first
            node.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def stats(self) -> dict[str, NodeStats]:
        """Per-node figures, keyed by node name, in pipeline order."""
        return {name: node.stats() for name, node in self._nodes.items()}

    def batch_range(self, node_name: str) -> tuple[int, int]:
        """The (min, max) batch size a node settled on after its backends initialised."""
        node = self._nodes[node_name]
        return node.min_batch, node.max_batch

    @property
    def node_names(self) -> list[str]:
        """Node names in pipeline order."""
        return list(self._nodes)


def _deadline(timeout_s: float | None) -> float:
    """The ``time.monotonic()`` instant ``timeout_s`` from now (``math.inf`` for none)."""
    return math.inf if timeout_s is None else monotonic() + timeout_s


def _transitive_predecessors(config: PipelineConfig, name: str) -> list[str]:
    """Every node from which requests can reach ``name``."""
    feeders = {node.name: [] for node in config.nodes}
    for node in config.nodes:
        for target in node.next_nodes:
            feeders[target].append(node.name)
    found: list[str] = []
    pending = list(feeders[name])
    while pending:
        current = pending.pop()
        if current not in found:
            found.append(current)
            pending.extend(feeders[current])
    return found


def pipe(config: str | Path | Mapping[str, Any]) -> Pipeline:
    """Build and start a pipeline from a TOML file path or a dict of the same shape."""
    return Pipeline(load_config(config))
