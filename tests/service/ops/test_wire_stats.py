"""The service reads the library's one NodeStats schema: wire struct, process sum and /metrics."""

from __future__ import annotations

import dataclasses

import torchpipe_lite as tp
from service.gen.inference.ttypes import ServerStats
from service.ops.prometheus_export import failures_by_reason, render_triton
from service.ops.stats_sum import sum_server_stats
from service.ops.wire_stats import WIRE_FIELDS, wire_node_stats
from torchpipe_lite.metrics import FIGURES


def test_every_figure_the_idl_carries_is_one_of_the_library_s():
    library = {field.name for field in dataclasses.fields(tp.NodeStats)}
    assert set(WIRE_FIELDS) <= library
    assert {"items_rerun", "requests_cancelled"} <= set(WIRE_FIELDS)


def _server(node: tp.NodeStats) -> ServerStats:
    return ServerStats(
        handler="pipelined", device="cpu", uptime_s=1.0, requests_ok=0, requests_failed=0,
        failures_by_code={}, nodes=[wire_node_stats(node)],
    )  # fmt: skip


def test_each_figure_that_names_a_family_is_exported_and_sums_across_processes():
    node = tp.NodeStats(
        node="m", backend="B", instances=1, requests_ok=7, inferences=9, executions=3,
        queue_time_ms_total=2.0, request_compute_time_ms_total=4.0, queue_length=2, items_rerun=3,
        requests_rejected=1, requests_timed_out=2, requests_cancelled=4, requests_failed=5,
        requests_no_result=1,
    )  # fmt: skip
    summed = sum_server_stats([_server(node), _server(node)])
    text = render_triton(summed)
    labels = '{model="m",version="1"}'
    for name, figure in FIGURES:
        if figure.metric:
            expected = 2 * getattr(node, name) * figure.metric_scale
            assert f"{figure.metric}{labels} {float(expected)!r}" in text, name
    assert f"nv_inference_request_duration_us{labels} 12000.0" in text
    (wire,) = summed.nodes
    assert failures_by_reason(wire) == {"REJECTED": 6, "CANCELED": 8, "BACKEND": 12, "OTHER": 0}
