"""``python -m service --workers N``: processes sharing one port under a supervisor."""

from __future__ import annotations

import signal
import urllib.request

import pytest

from service.gen.inference.ttypes import InferenceParams
from service.ops.stats_sum import decode_stats
from service.server_process import free_port
from service.thrift_client import connect
from tests.support.service_process import ServiceProcess


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""


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
        assert 'nv_inference_request_success{model="resnet18",version="1"} 10' in text
        assert text.count("# TYPE process_resident_memory_bytes") == 1  # the supervisor's
        # The one core (no GPU here: unpinned) has its own figures beside the sum.
        assert 'tp_core_up{gpu="default"} 1' in text
        assert 'tp_core_request_success{gpu="default",model="resnet18"} 10' in text
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/stats", timeout=5) as r:
            summed = decode_stats(r.read())
        model = next(node for node in summed.nodes if node.node == "resnet18")
        assert model.requests_ok == 10 and summed.requests_ok == 10
        server.process.send_signal(signal.SIGTERM)
        assert server.finish() == 0
        # Ten connections (a warm-up from each worker, then the eight calls): five each.
        assert any("connections dealt per worker: [5, 5]" in line for line in server.log)
    finally:
        server.kill()
