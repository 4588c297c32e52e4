"""``python -m service --workers N``: processes sharing one port under a supervisor."""

from __future__ import annotations

import signal
import urllib.request

import pytest

from service.gen.inference.ttypes import InferenceParams
from service.server_process import free_port
from service.thrift_client import connect
from service.workers import merge_metrics
from tests.integration.test_service_process import ServiceProcess


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""


def test_merge_sums_counters_and_keeps_one_gpu_reading():
    first = (
        "# TYPE nv_inference_count counter\n"
        'nv_inference_count{model="resnet50",version="1"} 3\n'
        "# TYPE nv_gpu_utilization gauge\n"
        'nv_gpu_utilization{gpu_uuid="GPU-1"} 0.5\n'
    )
    second = (
        "# TYPE nv_inference_count counter\n"
        'nv_inference_count{model="resnet50",version="1"} 4\n'
        'nv_inference_count{model="decoder",version="1"} 1\n'
        "# TYPE nv_gpu_utilization gauge\n"
        'nv_gpu_utilization{gpu_uuid="GPU-1"} 0.7\n'
    )
    merged = merge_metrics([first, second])
    assert 'nv_inference_count{model="resnet50",version="1"} 7.0' in merged
    assert 'nv_inference_count{model="decoder",version="1"} 1.0' in merged
    assert 'nv_gpu_utilization{gpu_uuid="GPU-1"} 0.7' in merged


@pytest.mark.slow
def test_two_workers_share_the_port_report_together_and_stop_cleanly(resnet18_onnx, photos):
    metrics_port = free_port()
    server = ServiceProcess(
        "--workers",
        "2",
        "--model",
        str(resnet18_onnx),
        "--threads",
        "4",
        "--metrics-port",
        str(metrics_port),
    )
    try:
        server.wait_for("ready: all 2 workers warmed up")
        assert _get(f"http://127.0.0.1:{metrics_port}/health/ready")[0] == 200
        image = next(iter(photos.values()))
        for index in range(8):  # new connections, dealt to the workers in turn
            with connect("127.0.0.1", server.port) as connection:
                params = InferenceParams(uuid=str(index), data=image)
                assert 0 < connection.client.infer_batch(params).score <= 1
        status, text = _get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200
        # Two warm-ups (one per worker) and eight calls, summed over both workers.
        assert 'nv_inference_request_success{model="resnet18",version="1"} 10.0' in text
        server.process.send_signal(signal.SIGTERM)
        assert server.finish() == 0
        # Ten connections (a warm-up from each worker, then the eight calls): five each.
        assert any("connections dealt per worker: [5, 5]" in line for line in server.log)
    finally:
        server.kill()
