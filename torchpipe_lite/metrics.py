"""Per-node figures: one schema (``NodeStats``) whose field metadata says how each adds up.

Each figure is listed once, in ``NodeStats``, with a ``Figure`` saying what it is: whether
each instance's worker counts it (``InstanceCounters`` has exactly those), how parts add up
(instances of a node, processes of a server), and the Prometheus family it is exported as
(Triton's name where Triton has one). The library exports nothing itself; the service's Thrift
mapping, its multi-process sum and its Prometheus exporter read these fields and this metadata,
so a new counter is one line here (and one in the IDL).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Merge(Enum):
    """How a figure adds up over parts (a node's instances, a server's processes)."""

    #: Names the node: not added; every part has the same.
    KEY = "key"
    #: Added up.
    SUM = "sum"
    #: A ``{batch size: batches}`` count: added per size.
    SIZES = "sizes"
    #: A list with one entry per instance: the parts' lists, one after the other.
    CONCAT = "concat"


@dataclass(frozen=True)
class Figure:
    """What one ``NodeStats`` field is (its field metadata, under ``FIGURE``)."""

    help: str
    merge: Merge = Merge.SUM
    #: Counted by each instance's worker thread (``InstanceCounters``), lock-free.
    counted: bool = False
    #: The Prometheus family it is exported as (per node), or None.
    metric: str | None = None
    metric_type: str = "counter"
    #: The exported value is the field's times this (milliseconds to Triton's microseconds).
    metric_scale: float = 1.0
    #: The Triton failure reason (``nv_inference_request_failure``) these requests count under.
    failure_reason: str | None = None


#: The key of a ``NodeStats`` field's ``Figure`` in its metadata.
FIGURE = "figure"


def _meta(**figure: Any) -> dict[str, Figure]:
    return {FIGURE: Figure(**figure)}


def _figure(default: Any = 0, **figure: Any) -> Any:
    return dataclasses.field(default=default, metadata=_meta(**figure))


_REQUIRED = dataclasses.MISSING
_US = 1000.0  # Triton's durations are in microseconds; ours in milliseconds


@dataclass
class NodeStats:
    """A snapshot of one node's figures since the pipeline started (see each field's help).

    ``inferences / executions`` is the mean batch size: both count the batches a node formed,
    as ``batch_sizes`` does; a batch that raised and ran again item by item counts once there,
    its re-runs in ``items_rerun``.
    """

    node: str = _figure(_REQUIRED, help="The node's name", merge=Merge.KEY)
    backend: str = _figure(_REQUIRED, help="Its backend expression", merge=Merge.KEY)
    instances: int = _figure(_REQUIRED, help="Backend instances (inline: one per thread run on)")
    requests_ok: int = _figure(
        help="Requests that left the node with a result",
        counted=True,
        metric="nv_inference_request_success",
    )
    requests_failed: int = _figure(
        help="Requests that failed in the backend", counted=True, failure_reason="BACKEND"
    )
    requests_no_result: int = _figure(
        help="Requests ended without a result and without an error (bytes not an image)",
        counted=True,
    )
    requests_rejected: int = _figure(
        help="Requests refused at once: the queue was full", failure_reason="REJECTED"
    )
    requests_timed_out: int = _figure(
        help="Requests dropped unrun: request_timeout or their deadline passed",
        counted=True,
        failure_reason="REJECTED",
    )
    requests_cancelled: int = _figure(
        help="Requests dropped unrun because their caller cancelled them",
        counted=True,
        failure_reason="CANCELED",
    )
    inferences: int = _figure(
        help="Items run through the backend, each once",
        counted=True,
        metric="nv_inference_count",
    )
    executions: int = _figure(
        help="Batches run (inferences / executions is the mean batch size)",
        counted=True,
        metric="nv_inference_exec_count",
    )
    batch_sizes: dict[int, int] = dataclasses.field(
        default_factory=dict,
        metadata=_meta(help="Batches run, by size", merge=Merge.SIZES, counted=True),
    )
    queue_time_ms_total: float = _figure(
        0.0,
        help="Time requests waited in the queue, in all",
        counted=True,
        metric="nv_inference_queue_duration_us",
        metric_scale=_US,
    )
    compute_time_ms_total: float = _figure(
        0.0, help="Time batches ran, each batch once", counted=True
    )
    request_compute_time_ms_total: float = _figure(
        0.0,
        help="Time batches ran, once per request in them (Triton's compute_infer)",
        counted=True,
        metric="nv_inference_compute_infer_duration_us",
        metric_scale=_US,
    )
    queue_length: int = _figure(
        help="Requests waiting in the queue now",
        metric="nv_inference_pending_request_count",
        metric_type="gauge",
    )
    instance_placements: list[str | None] = dataclasses.field(
        default_factory=list,
        metadata=_meta(help="Where each instance computes (its placement())", merge=Merge.CONCAT),
    )
    items_rerun: int = _figure(
        help="Items run again alone because their batch raised",
        counted=True,
        metric="tp_items_rerun",
    )

    @property
    def mean_batch_size(self) -> float:
        """Mean items per batch (0 before the first batch)."""
        return self.inferences / self.executions if self.executions else 0.0


#: Every ``NodeStats`` field with its ``Figure``, in field order.
FIGURES: tuple[tuple[str, Figure], ...] = tuple(
    (field.name, field.metadata[FIGURE]) for field in dataclasses.fields(NodeStats)
)
_ADDED = tuple((name, figure.merge) for name, figure in FIGURES if figure.merge is not Merge.KEY)


def add_figures(total: NodeStats, part: Any) -> None:
    """Add ``part``'s figures into ``total``, each as its ``Merge`` says.

    ``part`` is anything with ``NodeStats``' attribute names: another ``NodeStats``, an
    ``InstanceCounters``, the service's wire struct; a figure it lacks or leaves unset counts
    0 (a racy but consistent-enough read of counters still being written).
    """
    for name, merge in _ADDED:
        value = getattr(part, name, None)
        if not value:
            continue
        if merge is Merge.SUM:
            setattr(total, name, getattr(total, name) + value)
        elif merge is Merge.SIZES:
            sizes = getattr(total, name)
            for size, count in list(value.items()):
                sizes[size] = sizes.get(size, 0) + count
        else:
            getattr(total, name).extend(value)


def total_of(node: str, backend: str, parts: list[Any]) -> NodeStats:
    """One ``NodeStats`` for ``node``: the sum of ``parts`` (see ``add_figures``)."""
    total = NodeStats(node=node, backend=backend, instances=0)
    for part in parts:
        add_figures(total, part)
    return total


_COUNTED = tuple((name, figure.merge) for name, figure in FIGURES if figure.counted)


class InstanceCounters:
    """The counted figures of ``NodeStats`` (``Figure.counted``), owned by one worker thread,
    so updating them needs no lock. ``add_figures`` reads them into a snapshot."""

    __slots__ = tuple(name for name, _ in _COUNTED)

    def __init__(self) -> None:
        for name, merge in _COUNTED:
            setattr(self, name, Counter() if merge is Merge.SIZES else 0)

    def record_batch(
        self, *, size: int, compute_s: float, queue_s: float, failed: int, no_result: int = 0
    ) -> None:
        """A batch of ``size`` requests ran for ``compute_s`` after they had waited ``queue_s``
        in all; ``failed`` of them failed and ``no_result`` ended without a result."""
        self.executions += 1
        self.inferences += size
        self.batch_sizes[size] += 1
        self.compute_time_ms_total += compute_s * 1000.0
        self.request_compute_time_ms_total += compute_s * size * 1000.0
        self.queue_time_ms_total += queue_s * 1000.0
        self.requests_failed += failed
        self.requests_no_result += no_result
        self.requests_ok += size - failed - no_result

    def add_to(self, stats: NodeStats) -> None:
        """Add these counters into ``stats``."""
        add_figures(stats, self)
