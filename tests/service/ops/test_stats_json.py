"""``/stats.json``: the ops port's ``ServerStats`` as JSON beside the binary ``/stats``."""

from __future__ import annotations

import json
import urllib.request

from service.gen.inference.ttypes import AdmissionStats, ErrorCode, ServerStats, WireNodeStats
from service.ops.ops_server import STATS_CONTENT_TYPE, OpsServer, ServiceState
from service.ops.stats_json import STATS_JSON_CONTENT_TYPE, stats_json
from service.ops.stats_sum import decode_stats


def _stats() -> ServerStats:
    node = WireNodeStats(
        node="resnet50", backend="SyncTensor[TorchTensor]", instances=2, requests_ok=12,
        requests_failed=0, requests_rejected=0, requests_timed_out=0, inferences=12,
        executions=4, batch_sizes={4: 3}, queue_time_ms_total=1.5, compute_time_ms_total=9.0,
        queue_length=0,
    )  # fmt: skip
    return ServerStats(
        handler="pipelined", device="cpu", uptime_s=3.0, requests_ok=12, requests_failed=2,
        failures_by_code={ErrorCode.INVALID_IMAGE: 2}, nodes=[node], gpus=[], ready=True,
        admission=AdmissionStats(0, 512, 0.0, 1000.0, 0, images_cleared_per_s=float("nan")),
    )  # fmt: skip


def test_the_json_holds_every_figure_with_codes_by_name():
    record = json.loads(stats_json(_stats()))
    assert record["requests_ok"] == 12 and record["handler"] == "pipelined"
    assert record["failures_by_code"] == {"INVALID_IMAGE": 2}
    (node,) = record["nodes"]
    assert node["batch_sizes"] == {"4": 3} and node["executions"] == 4
    assert record["admission"]["images_cleared_per_s"] is None  # NaN is not JSON


def test_the_ops_port_serves_both_forms_over_http():
    ops = OpsServer(ServiceState(), lambda: "", stats=_stats, port=0)
    ops.start()
    try:
        base = f"http://127.0.0.1:{ops.port}"
        with urllib.request.urlopen(f"{base}/stats.json", timeout=5) as answer:
            assert answer.headers["Content-Type"] == STATS_JSON_CONTENT_TYPE
            assert json.loads(answer.read())["nodes"][0]["node"] == "resnet50"
        with urllib.request.urlopen(f"{base}/stats", timeout=5) as answer:
            assert answer.headers["Content-Type"] == STATS_CONTENT_TYPE
            assert decode_stats(answer.read()).requests_ok == 12
    finally:
        ops.close()
