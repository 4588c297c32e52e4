"""The library's ``NodeStats`` as the Thrift ``WireNodeStats``: the same figures, by name."""

from __future__ import annotations

from collections.abc import Sequence

import torchpipe_lite as tp
from service.gen.inference.ttypes import WireNodeStats
from torchpipe_lite.extend import total_of

#: The figures the IDL carries: library figures each (one the IDL lacks stays in the process).
WIRE_FIELDS = tuple(spec[2] for spec in WireNodeStats.thrift_spec if spec is not None)


def sum_wire_node_stats(parts: Sequence[WireNodeStats]) -> WireNodeStats:
    """Several processes' figures of one node as one (each figure adds up as its metadata in
    ``NodeStats`` says; the first part names the node)."""
    return wire_node_stats(total_of(parts[0].node, parts[0].backend, list(parts)))


def wire_node_stats(stats: tp.NodeStats) -> WireNodeStats:
    """``stats`` as the wire struct.

    A request a node ended without a result is a failure here: the service answers it
    INVALID_IMAGE (bytes that are not an image), so it counts in ``requests_failed``."""
    figures = {name: getattr(stats, name) for name in WIRE_FIELDS}
    figures["requests_failed"] += stats.requests_no_result
    figures["batch_sizes"] = dict(stats.batch_sizes)
    figures["instance_placements"] = [place or "" for place in stats.instance_placements]
    return WireNodeStats(**figures)
