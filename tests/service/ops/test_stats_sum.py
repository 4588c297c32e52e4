"""Several processes' ServerStats as one, and the /stats route that carries them."""

from __future__ import annotations

import pytest

from service.gen.inference.ttypes import (
    AdmissionStats,
    ConnectionStats,
    GpuStats,
    ServerStats,
    WireNodeStats,
)
from service.ops.ops_server import STATS_CONTENT_TYPE, OpsServer, ServiceState
from service.ops.prometheus_export import render_triton
from service.ops.stats_sum import decode_stats, encode_stats, sum_server_stats


def _node(name: str, ok: int, batches: dict[int, int], placement: str) -> WireNodeStats:
    return WireNodeStats(
        node=name, backend="TorchTensor", instances=1, requests_ok=ok, requests_failed=1,
        requests_rejected=0, requests_timed_out=2, inferences=ok, executions=sum(batches.values()),
        batch_sizes=batches, queue_time_ms_total=1.5, compute_time_ms_total=4.0, queue_length=3,
        request_compute_time_ms_total=8.0, instance_placements=[placement],
    )  # fmt: skip


def _worker(ok: int, uptime_s: float, *, gpu_util: float, ready: bool = True) -> ServerStats:
    return ServerStats(
        handler="pipelined", device="cuda:0", uptime_s=uptime_s, requests_ok=ok,
        requests_failed=1, failures_by_code={3: 1},
        nodes=[_node("resnet50", ok, {4: ok // 4}, "cuda:0")],
        gpus=[GpuStats(0, "GPU-1", "H200", gpu_util, 10, 100)], ready=ready,
        admission=AdmissionStats(2, 512, 0.5, 64.0, 7),
        connections=ConnectionStats(5, 256, 9, 1, 0, 0, 2, 0, 1),
    )  # fmt: skip


def test_counters_add_up_and_the_machine_s_gpus_are_read_once():
    summed = sum_server_stats([_worker(8, 10.0, gpu_util=0.5), _worker(12, 11.0, gpu_util=0.7)])
    assert (summed.requests_ok, summed.requests_failed) == (20, 2)
    assert summed.failures_by_code == {3: 2} and summed.uptime_s == 11.0
    (node,) = summed.nodes
    assert (node.instances, node.requests_ok, node.requests_timed_out) == (2, 20, 4)
    assert node.batch_sizes == {4: 5} and node.queue_length == 6
    assert node.request_compute_time_ms_total == 16.0
    assert node.instance_placements == ["cuda:0", "cuda:0"]
    assert [gpu.utilization for gpu in summed.gpus] == [0.5]  # the first process's reading
    assert summed.admission.images_in_flight == 4 and summed.admission.calls_refused == 14
    assert summed.connections.open == 10 and summed.connections.closed_malformed == 4
    assert summed.ready


def test_nodes_are_matched_by_name_and_one_unready_worker_makes_the_group_unready():
    first = _worker(4, 1.0, gpu_util=0.1)
    second = _worker(4, 1.0, gpu_util=0.1, ready=False)
    second.nodes.append(_node("decoder", 4, {1: 4}, ""))
    summed = sum_server_stats([first, second])
    assert [node.node for node in summed.nodes] == ["resnet50", "decoder"]
    assert summed.nodes[1].requests_ok == 4 and not summed.ready
    assert sum_server_stats([]) is None


def test_the_sum_renders_like_one_server():
    summed = sum_server_stats([_worker(8, 1.0, gpu_util=0.5), _worker(12, 1.0, gpu_util=0.5)])
    text = render_triton(summed)
    assert 'nv_inference_request_success{model="resnet50",version="1"} 20' in text


def test_stats_cross_in_thrift_binary_and_a_truncated_body_is_refused():
    stats = _worker(8, 1.0, gpu_util=0.5)
    assert decode_stats(encode_stats(stats)) == stats
    with pytest.raises(ValueError, match="not a ServerStats"):
        decode_stats(encode_stats(stats)[:10])
    with pytest.raises(ValueError, match="not a ServerStats"):
        decode_stats(b"")


def test_the_stats_route_says_loading_then_sends_the_struct_and_survives_a_failure():
    answers = iter([None, _worker(8, 1.0, gpu_util=0.5), RuntimeError("boom")])

    def current() -> ServerStats | None:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    ops = OpsServer(ServiceState(), lambda: "", stats=current, port=0)
    try:
        assert ops.respond("/stats")[0] == 503
        status, content_type, body = ops.respond("/stats")
        assert (status, content_type) == (200, STATS_CONTENT_TYPE)
        assert decode_stats(body).requests_ok == 8
        assert ops.respond("/stats")[0] == 500
    finally:
        ops.close()
    plain = OpsServer(ServiceState(), lambda: "", port=0)
    try:
        assert plain.respond("/stats")[0] == 404  # a server without stats has no route
    finally:
        plain.close()


def test_cancelled_requests_add_up_and_reach_metrics():
    first, second = _worker(4, 1.0, gpu_util=0.1), _worker(4, 1.0, gpu_util=0.1)
    first.requests_cancelled = 3  # the second predates the field: it counts as 0
    summed = sum_server_stats([first, second])
    assert summed.requests_cancelled == 3
    assert 'tp_requests_cancelled{handler="pipelined"} 3.0' in render_triton(summed)
