"""Per-node counters and timings: written by one worker thread each, summed on read."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class NodeStats:
    """A snapshot of one node's figures since the pipeline started.

    ``requests_ok`` counts requests that left the node with a result and ``requests_no_result``
    those it ended without one and without an error (TorchPipe's "no result": a decoder given
    bytes that are not an image; such a request goes no further); ``inferences`` counts items
    run through the backend and ``executions`` batches run, so ``inferences / executions`` is
    the mean batch size.
    """

    node: str
    backend: str
    instances: int
    requests_ok: int = 0
    requests_failed: int = 0
    requests_no_result: int = 0
    requests_rejected: int = 0
    requests_timed_out: int = 0
    #: Dropped unrun because their caller cancelled them (``RequestCancelledError``).
    requests_cancelled: int = 0
    inferences: int = 0
    executions: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)
    queue_time_ms_total: float = 0.0
    compute_time_ms_total: float = 0.0
    #: Compute time as each request saw it: a batch's time counted once per request in it
    #: (Triton's per-request ``compute_infer`` convention; ``compute_time_ms_total``: once).
    request_compute_time_ms_total: float = 0.0
    queue_length: int = 0
    #: Where each instance computes (``Backend.placement()``), e.g. ``["cuda:0", "cuda:1"]``.
    instance_placements: list[str | None] = field(default_factory=list)

    @property
    def mean_batch_size(self) -> float:
        """Mean items per batch (0 before the first batch)."""
        return self.inferences / self.executions if self.executions else 0.0


class InstanceCounters:
    """Counters owned by a single worker thread, so updating them needs no lock."""

    __slots__ = (
        "batch_sizes",
        "compute_time_s",
        "executions",
        "inferences",
        "queue_time_s",
        "request_compute_time_s",
        "requests_cancelled",
        "requests_failed",
        "requests_no_result",
        "requests_ok",
        "requests_timed_out",
    )

    def __init__(self) -> None:
        self.requests_ok = 0
        self.requests_failed = 0
        self.requests_no_result = 0
        self.requests_timed_out = 0
        self.requests_cancelled = 0
        self.inferences = 0
        self.executions = 0
        self.batch_sizes: Counter[int] = Counter()
        self.queue_time_s = 0.0
        self.compute_time_s = 0.0
        self.request_compute_time_s = 0.0

    def record_batch(
        self, *, size: int, compute_s: float, queue_s: float, failed: int, no_result: int = 0
    ) -> None:
        """A batch of ``size`` requests ran for ``compute_s`` after they had waited ``queue_s``
        in all; ``failed`` of them failed and ``no_result`` ended without a result."""
        self.compute_time_s += compute_s
        self.request_compute_time_s += compute_s * size
        self.queue_time_s += queue_s
        self.inferences += size
        self.batch_sizes[size] += 1
        self.requests_failed += failed
        self.requests_no_result += no_result
        self.requests_ok += size - failed - no_result

    def add_to(self, stats: NodeStats) -> None:
        """Add these counters into ``stats`` (a racy but consistent-enough read)."""
        stats.requests_ok += self.requests_ok
        stats.requests_failed += self.requests_failed
        stats.requests_no_result += self.requests_no_result
        stats.requests_timed_out += self.requests_timed_out
        stats.requests_cancelled += self.requests_cancelled
        stats.inferences += self.inferences
        stats.executions += self.executions
        for size, count in list(self.batch_sizes.items()):
            stats.batch_sizes[size] = stats.batch_sizes.get(size, 0) + count
        stats.queue_time_ms_total += self.queue_time_s * 1000.0
        stats.compute_time_ms_total += self.compute_time_s * 1000.0
        stats.request_compute_time_ms_total += self.request_compute_time_s * 1000.0
