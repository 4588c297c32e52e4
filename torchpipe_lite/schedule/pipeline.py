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

from ..compat import Event
from ..config.loader import load_config
from ..config.schema import PipelineConfig
from ..errors import (
    EntryNodeError,
    InvalidRequestError,
    PipelineClosedError,
    RequestError,
    RequestTimeoutError,
)
from ..metrics import NodeStats
from .job import Job
from .request import RequestHandle
from .routing import Router
from .stage import Stage, make_stage

logger = logging.getLogger(__name__)


class Pipeline:
    """A running pipeline. Thread-safe: call it from any number of threads.

    ``model(req)`` blocks until ``req`` went through every stage and raises the request's typed
    error if it failed; ``req["result"]`` holds the last stage's result, and is absent when a
    stage produced none. ``model.submit(req)`` returns a ``concurrent.futures.Future`` instead.
    """

    def __init__(self, config: PipelineConfig):
        self.config = config
        self._closed = False
        self._close_lock = threading.Lock()
        self._router = Router(config, self._queue)
        # The physical nodes (each with its queue and instances), and for every node of the
        # graph, logical ones included, the physical node that runs it.
        self._nodes: dict[str, Stage] = {
            node.name: make_stage(node, self._router.route, self._router.enter)
            for node in config.nodes
            if not node.is_logical
        }
        self._runs_on = {c.name: self._nodes[c.physical] for c in config.nodes}
        for name, node in self._nodes.items():
            feeders = _feeders(config, name)
            node.feed_from([self._nodes[f] for f in feeders] if feeders else None)
        started: list[Stage] = []
        try:
            for node in self._nodes.values():
                node.start()
                started.append(node)
        except BaseException:
            for node in started:
                node.close()
            raise
        entries = config.graph.entries
        self._default_entry = entries[0] if len(entries) == 1 else None
        # One node: every request runs it, whatever node_name says (TorchPipe schedules a
        # one-node configuration without its graph, where node_name is never read).
        self._only_node = config.nodes[0].name if len(config.nodes) == 1 else None

    # -- calling -------------------------------------------------------------------------------

    def __call__(
        self,
        request: dict[str, Any] | list[dict[str, Any]] | None = None,
        timeout_s: float | None = None,
        *,
        strict: bool = False,
        **keys: Any,
    ) -> Any:
        """Run one request dict, or a list of them, to completion (results land in the dicts).

        As TorchPipe's ``pipe``, ``keys`` given by name are added to every request dict; with
        no request at all, they make the request (``model(data=x)``), and the call returns its
        ``result`` (``KeyError`` when there is none).

        With a list, every request runs; the first error (in list order) is raised after all
        have completed. ``timeout_s`` is the requests' deadline: one still waiting at a stage
        when it passes is dropped there, unrun, and the call raises ``RequestTimeoutError``
        (a batch already running finishes, unwatched). A request that a stage ends without a
        result (a decoder given bytes that are not an image) has no ``"result"`` key and no
        error, as in TorchPipe; ``strict=True`` raises ``NoResultError`` for it instead,
        naming the node.
        """
        if request is None:
            built = dict(keys)
            self(built, timeout_s, strict=strict)
            return built["result"]
        requests = request if isinstance(request, list) else [request]
        if keys:
            for item in requests:
                if isinstance(item, dict):
                    item.update(keys)
        waited = [item for item in requests if not _has_event(item)]
        for item in requests:
            if _has_event(item):  # TorchPipe's asynchronous call: the event tells the end
                self.dispatch(item, lambda _item, error, event=item["event"]: event.notify(error))
        if len(waited) < len(requests):
            requests = waited
            if not requests:
                return None
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

    def dispatch_many(
        self,
        requests: list[dict[str, Any]],
        on_done: Callable[[int, dict[str, Any], BaseException | None], None],
        *,
        strict: bool = False,
        timeouts_s: list[float | None] | None = None,
    ) -> list[RequestHandle]:
        """``dispatch`` for several requests at once: each entry node's queue takes them in
        one operation. ``on_done(index, request, error)`` names the request by its index in
        ``requests``; ``timeouts_s`` gives each its own (None: none). A request that is
        malformed, or that its entry node refuses, ends at once, alone or with the others
        refused with it."""

        def resolver(index: int) -> Callable[[RequestHandle], None]:
            return lambda handle: on_done(index, handle.item, handle.error)

        handles: list[RequestHandle] = []
        by_entry: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            timeout_s = None if timeouts_s is None else timeouts_s[index]
            handle = RequestHandle(
                request, on_done=resolver(index), strict=strict, deadline_s=_deadline(timeout_s)
            )
            handles.append(handle)
            try:
                entry = self._entry(self._checked(request))
            except RequestError as error:
                on_done(index, request, error)
                continue
            by_entry.setdefault(entry, []).append(index)
        for entry, indices in by_entry.items():
            try:
                if self._closed:
                    raise PipelineClosedError("the pipeline is closed")
                self._router.enter(entry, [handles[index] for index in indices])
            except RequestError as error:  # refused: each ends at once, on this thread
                for index in indices:
                    on_done(index, requests[index], error)
        return handles

    def _checked(self, item: Any) -> dict[str, Any]:
        if not isinstance(item, dict):
            raise InvalidRequestError(f"a request must be a dict, got {type(item).__name__}")
        if "data" not in item:
            raise InvalidRequestError("a request needs a 'data' key")
        item.pop("result", None)  # a reused dict must not show a stale result
        return item

    def _entry(self, item: dict[str, Any]) -> str:
        if self._only_node is not None:
            return self._only_node
        name = item.get("node_name")
        if name is None:
            if self._default_entry is None:
                entries = ", ".join(self.config.graph.entries)
                raise EntryNodeError(f"several entry nodes ({entries}): set 'node_name'")
            return self._default_entry
        if name not in self._runs_on:
            raise EntryNodeError(f"unknown node_name {name!r}")
        return name

    def _enqueue(self, handles: list[RequestHandle]) -> None:
        if self._closed:
            raise PipelineClosedError("the pipeline is closed")
        if len(handles) == 1:
            self._router.enter(self._entry(handles[0].item), handles)
            return
        by_entry: dict[str, list[RequestHandle]] = {}
        for handle in handles:
            by_entry.setdefault(self._entry(handle.item), []).append(handle)
        for name, entering in by_entry.items():
            self._router.enter(name, entering)

    def _queue(self, name: str, jobs: list[Job]) -> None:
        """Jobs that must run node ``name`` join the queue of the node that runs it."""
        self._runs_on[name].put(jobs)

    # -- lifecycle and figures -----------------------------------------------------------------

    def close(self) -> None:
        """Stop intake, finish everything in flight, and join every worker thread."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        for node in _close_order(self.config, self._nodes):  # upstream drains first
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
        return self._nodes[node_name].batch_range()

    def min(self) -> int:
        """The smallest batch the entry node runs (TorchPipe's ``pipe.min()``)."""
        return self.batch_range(self._entry_for_range())[0]

    def max(self) -> int:
        """The largest batch the entry node runs (TorchPipe's ``pipe.max()``)."""
        return self.batch_range(self._entry_for_range())[1]

    def _entry_for_range(self) -> str:
        name = self._only_node or self._default_entry
        if name is None:
            raise EntryNodeError("several entry nodes: ask batch_range(node_name) instead")
        return self.config.node(name).physical

    @property
    def node_names(self) -> list[str]:
        """Node names in pipeline order."""
        return list(self._nodes)


def _has_event(item: Any) -> bool:
    return isinstance(item, dict) and isinstance(item.get("event"), Event)


def _deadline(timeout_s: float | None) -> float:
    """The ``time.monotonic()`` instant ``timeout_s`` from now (``math.inf`` for none)."""
    return math.inf if timeout_s is None else monotonic() + timeout_s


def _feeders(config: PipelineConfig, name: str) -> list[str]:
    """Every physical node from which requests can reach ``name``'s queue (through any node
    of the graph that runs on it)."""
    graph = config.graph
    physical = {node.name: node.physical for node in config.nodes}
    aliases = [node.name for node in config.nodes if node.physical == name]
    found: list[str] = []
    pending = [feeder for alias in aliases for feeder in graph.predecessors[alias]]
    while pending:
        current = pending.pop()
        if physical[current] not in found and physical[current] != name:
            found.append(physical[current])
        pending.extend(p for p in graph.predecessors[current] if physical[p] not in found)
    return found


def _close_order(config: PipelineConfig, nodes: Mapping[str, Any]) -> list[Any]:
    """Physical nodes so that each closes after every node that can send it requests,
    counting a Jump's sub-requests: the graph it jumps to closes after it."""
    after: dict[str, set[str]] = {name: set() for name in nodes}
    physical = {node.name: node.physical for node in config.nodes}
    for node in config.nodes:
        for target in config.graph.successors[node.name]:
            if physical[target] != node.physical:
                after[physical[target]].add(node.physical)
        if node.jump is not None:
            after[physical[node.jump]].add(node.physical)
    order: list[str] = []
    while len(order) < len(nodes):
        ready = [n for n in nodes if n not in order and after[n] <= set(order)]
        order.extend(ready or [n for n in nodes if n not in order])  # a cycle: any order
    return [nodes[name] for name in order]


def pipe(config: str | Path | Mapping[str, Any] | PipelineConfig) -> Pipeline:
    """Build and start a pipeline from a TOML file path, TOML text, a dict, or a
    configuration ``load_config`` returned."""
    return Pipeline(config if isinstance(config, PipelineConfig) else load_config(config))
