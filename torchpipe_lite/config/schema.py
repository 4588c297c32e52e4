"""Typed, validated configuration: what the loader produces and the scheduler consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .expression import BackendSpec
from .graph import Graph, MapEntry

#: Keys the scheduler reads; every other key of a node is a backend parameter.
NODE_KEYS = frozenset(
    {
        "backend",
        "instance_num",
        "batching_timeout",
        "min",
        "max",
        "next",
        "max_queue_size",
        "request_timeout",
        "device_id",
        "inline",
        "filter",
        "map",
    }
)

DEFAULT_INSTANCE_NUM = 1
DEFAULT_BATCHING_TIMEOUT_MS = 0.0


@dataclass(frozen=True)
class NodeConfig:
    """One stage of the pipeline, validated.

    ``min_batch``/``max_batch`` are the configured bounds (``None`` when the backend decides);
    ``max_queue_size`` 0 and ``request_timeout_ms`` 0 mean unlimited.
    """

    name: str
    backend: BackendSpec
    instance_num: int = DEFAULT_INSTANCE_NUM
    batching_timeout_ms: float = DEFAULT_BATCHING_TIMEOUT_MS
    min_batch: int | None = None
    max_batch: int | None = None
    next_nodes: tuple[str, ...] = ()
    max_queue_size: int = 0
    request_timeout_ms: float = 0.0
    #: Run the backend on the thread that delivers each request (no queue, no worker threads).
    inline: bool = False
    #: Every key of the node as written (after defaults), handed to each backend's ``init``.
    params: dict[str, Any] = field(default_factory=dict)
    #: The filter deciding, per request, what happens here (``torchpipe_lite.filters``).
    filter: str = "swap"
    #: How the node's input is built from its predecessors' outputs (empty: it takes its one
    #: predecessor's dict).
    map_entries: tuple[MapEntry, ...] = ()
    #: The node whose backend and instances this one uses: itself, or for a logical node
    #: (``[rec.2]``) the physical node it is another entry to.
    physical: str = ""
    #: For a Jump or MapReduce node: the root of the graph it sends requests through.
    jump: str | None = None

    @property
    def is_logical(self) -> bool:
        return self.physical != self.name


@dataclass(frozen=True)
class PipelineConfig:
    """Every node, in topological order (a node comes before the nodes it feeds), and the
    graph between them."""

    nodes: tuple[NodeConfig, ...]
    roots: tuple[str, ...]
    graph: Graph

    def node(self, name: str) -> NodeConfig:
        """The node called ``name``."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)
