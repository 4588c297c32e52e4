"""Several server processes' figures as one ``ServerStats``: what a supervisor reports.

The workers of ``--workers`` each answer ``/stats`` on their ops port with their ``ServerStats``
(the Thrift ``stats`` call's struct, in Thrift's binary encoding); the supervisor sums them here
and renders ``/metrics`` from the sum with the same renderer a single process uses, so one
figure type reaches the Thrift call, every ``/metrics`` and the benchmarks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from thrift.Thrift import TException, TType
from thrift.TSerialization import deserialize, serialize

from service.gen.inference.ttypes import AdmissionStats, ConnectionStats, ServerStats, WireNodeStats
from service.ops.wire_stats import sum_wire_node_stats

#: Thrift types of the figures that add up across processes (counts, times, gauges).
_NUMBERS = frozenset({TType.BYTE, TType.I16, TType.I32, TType.I64, TType.DOUBLE})


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
    summed = _sum_numbers(ServerStats, parts)
    summed.handler, summed.device = first.handler, first.device
    summed.uptime_s = max(part.uptime_s for part in parts)
    summed.failures_by_code = dict(failures)
    summed.nodes = _sum_nodes(parts)
    summed.gpus = next((part.gpus for part in parts if part.gpus), None)
    summed.ready = all(readiness) if readiness else None
    summed.admission = _sum_numbers(AdmissionStats, [p.admission for p in parts if p.admission])
    summed.connections = _sum_numbers(
        ConnectionStats, [p.connections for p in parts if p.connections]
    )
    return summed


def _sum_nodes(parts: Sequence[ServerStats]) -> list[WireNodeStats]:
    by_name: dict[str, list[WireNodeStats]] = {}
    for part in parts:
        for node in part.nodes:
            by_name.setdefault(node.node, []).append(node)
    return [sum_wire_node_stats(nodes) for nodes in by_name.values()]


def _sum_numbers(kind: type, items: Sequence[object]):
    """A ``kind`` whose numeric fields are the sums over ``items`` (an unset optional counts
    0), its others unset; ``None`` when there are no items."""
    if not items:
        return None
    names = [spec[2] for spec in kind.thrift_spec if spec is not None and spec[1] in _NUMBERS]
    return kind(**{name: sum(getattr(item, name) or 0 for item in items) for name in names})
