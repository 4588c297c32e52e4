"""What a server under test says about itself: its ``stats`` call, and with ``--workers`` the
group's per-node totals from the supervisor's summed ``/stats`` (the same ``ServerStats``)."""

from __future__ import annotations

import urllib.request
from typing import Any

from service.gen.inference.ttypes import ServerStats
from service.ops.stats_sum import decode_stats
from service.thrift_client import connect


def server_stats(port: int) -> dict[str, Any]:
    """The server's own figures (device, per-node batch sizes) after its runs."""
    with connect("127.0.0.1", port, timeout_s=30.0) as connection:
        stats = connection.client.stats()
    return {
        "device": stats.device,
        "requests_ok": stats.requests_ok,
        "requests_failed": stats.requests_failed,
        "nodes": node_rows(stats),
    }


def node_rows(stats: ServerStats) -> list[dict[str, Any]]:
    """Each node's figures as a JSON-ready dict (batch sizes keyed by their text)."""
    return [
        {k: v for k, v in vars(node).items() if k != "batch_sizes"}
        | {"batch_sizes": {str(size): n for size, n in sorted(node.batch_sizes.items())}}
        for node in stats.nodes
    ]


def group_node_figures(stats_url: str) -> list[dict[str, Any]]:
    """Per-node totals over every worker of ``--workers``, from the supervisor's ``/stats``
    (the ``stats`` call reaches one worker only)."""
    with urllib.request.urlopen(stats_url, timeout=30) as response:
        return node_rows(decode_stats(response.read()))


def batching_line(handler: str, stats: dict[str, Any]) -> str:
    """How the server's busiest node batched (warm-up calls included): over every worker when
    the server has several, else its own count."""
    nodes = stats.get("group_nodes") or stats["nodes"]
    if not nodes:
        return f"{handler} server ({stats['device']}): no node statistics"
    node = max(nodes, key=lambda n: n.get("request_compute_time_ms_total", 0.0))
    inferences, executions = int(node["inferences"]), int(node["executions"])
    mean = inferences / executions if executions else 0.0
    scope = f", all {stats['workers']} workers" if stats.get("group_nodes") else ""
    line = (
        f"{handler} server ({stats['device']}{scope}): node {node['node']!r} ran "
        f"{inferences} images in {executions} batches (mean batch {mean:.2f})"
    )
    return line
