"""Several server processes' figures as one ``ServerStats``: what a supervisor reports.

The workers of ``--workers`` each answer ``/stats`` on their ops port with their ``ServerStats``
(the Thrift ``stats`` call's struct, in Thrift's binary encoding); the supervisor sums them here
and renders ``/metrics`` from the sum with the same renderer a single process uses, so one
figure type reaches the Thrift call, every ``/metrics`` and the benchmarks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from thrift.Thrift import TException
from thrift.TSerialization import deserialize, serialize

from service.gen.inference.ttypes import AdmissionStats, ConnectionStats, NodeStats, ServerStats

#: NodeStats fields that add up across processes (each process runs its own instances).
_NODE_SUMS = (
    "instances",
    "requests_ok",
    "requests_failed",
    "requests_rejected",
    "requests_timed_out",
    "inferences",
    "executions",
    "queue_time_ms_total",
    "compute_time_ms_total",
    "queue_length",
    "request_compute_time_ms_total",
    "requests_cancelled",
)
_ADMISSION_SUMS = (
    "images_in_flight",
    "max_images_in_flight",
    "megapixels_in_flight",
    "max_megapixels_in_flight",
    "calls_refused",
    "images_limit",
    "images_cleared_per_s",
)
_CONNECTION_SUMS = (
    "open",
    "max_open",
    "accepted",
    "refused_over_cap",
    "closed_idle",
    "closed_slow_message",
    "closed_malformed",
    "replies_undelivered",
    "calls_abandoned",
)


def encode_stats(stats: ServerStats) -> bytes:
    """``stats`` as ``/stats`` sends it."""
    return serialize(stats)


def decode_stats(data: bytes) -> ServerStats:
    """A ``/stats`` body back as ``ServerStats``; ``ValueError`` for bytes that are not one."""
    try:
        stats = deserialize(ServerStats(), data)
        stats.validate()  # required fields missing: not a whole ServerStats
    except (EOFError, TException) as error:
        raise ValueError(f"not a ServerStats ({len(data)} bytes): {error!r}") from None
    return stats


def sum_server_stats(parts: Sequence[ServerStats]) -> ServerStats | None:
    """The processes' figures as one server's (``None`` for no process).

    Counters, times, queue lengths and admission figures add up; nodes are matched by name.
    The GPUs are the machine's, which every process reads alike: the first process's are kept.
    The group is ready when every process is.
    """
    if not parts:
        return None
    first = parts[0]
    failures: Counter[int] = Counter()
    for part in parts:
        failures.update(part.failures_by_code)
    readiness = [part.ready for part in parts if part.ready is not None]
    return ServerStats(
        handler=first.handler,
        device=first.device,
        uptime_s=max(part.uptime_s for part in parts),
        requests_ok=sum(part.requests_ok for part in parts),
        requests_failed=sum(part.requests_failed for part in parts),
        requests_cancelled=sum(part.requests_cancelled or 0 for part in parts),
        failures_by_code=dict(failures),
        nodes=_sum_nodes(parts),
        gpus=next((part.gpus for part in parts if part.gpus), None),
        ready=all(readiness) if readiness else None,
        admission=_sum_fields(
            AdmissionStats, [p.admission for p in parts if p.admission], _ADMISSION_SUMS
        ),
        connections=_sum_fields(
            ConnectionStats, [p.connections for p in parts if p.connections], _CONNECTION_SUMS
        ),
    )


def _sum_nodes(parts: Sequence[ServerStats]) -> list[NodeStats]:
    by_name: dict[str, list[NodeStats]] = {}
    for part in parts:
        for node in part.nodes:
            by_name.setdefault(node.node, []).append(node)
    summed = []
    for name, nodes in by_name.items():
        total = _sum_fields(NodeStats, nodes, _NODE_SUMS)
        total.node, total.backend = name, nodes[0].backend
        sizes: Counter[int] = Counter()
        for node in nodes:
            sizes.update(node.batch_sizes)
        total.batch_sizes = dict(sizes)
        total.instance_placements = [p for node in nodes for p in node.instance_placements or ()]
        summed.append(total)
    return summed


def _sum_fields(kind: type, items: Sequence[object], names: Sequence[str]):
    """A ``kind`` whose ``names`` are the sums over ``items`` (an absent optional counts 0);
    ``None`` when there are no items."""
    if not items:
        return None
    return kind(**{name: sum(getattr(item, name) or 0 for item in items) for name in names})
