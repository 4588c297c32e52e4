"""``python -m service --metrics-port``: readiness waits for the warm-up and ends at SIGTERM."""

from __future__ import annotations

import signal
import time

import pytest

from service.server_process import free_port
from service.service_config import DEFAULT_CONFIG
from service.thrift_client import connect
from tests.support.http_metrics import get, samples, value
from tests.support.service_process import ServiceProcess

pytestmark = pytest.mark.slow


def poll_status(port: int, path: str, wanted: int, timeout_s: float = 30.0) -> None:
    """Wait until ``path`` answers ``wanted`` (an HTTP probe polls too: this is its view)."""
    deadline_s = time.monotonic() + timeout_s
    while (status := get(port, path)[0]) != wanted:
        assert time.monotonic() < deadline_s, f"{path} still answers {status}, not {wanted}"
        time.sleep(0.05)


def test_ready_after_warmup_and_not_ready_once_draining(resnet18_onnx):
    metrics_port = free_port()
    server = ServiceProcess(
        "--model", str(resnet18_onnx), "--threads", "4",
        "--metrics-port", str(metrics_port), "--shutdown-delay-s", "5",
    )  # fmt: skip
    try:
        server.wait_for("ready: warmed up")
        status, _type, body = get(metrics_port, "/health/ready")
        assert (status, body) == (200, "ready\n")
        with connect("127.0.0.1", server.port) as connection:
            stats = connection.client.stats()
        assert stats.ready is True
        assert stats.requests_ok == 1  # the warm-up inference went through the whole path
        found = samples(get(metrics_port, "/metrics")[2])
        assert value(found, "nv_inference_count", model="resnet18") == 1
        assert value(found, "tp_ready") == 1
        assert value(found, "process_resident_memory_bytes") > 0

        server.process.send_signal(signal.SIGTERM)
        poll_status(metrics_port, "/health/ready", 404)  # draining (503 is for starting)
        status, _type, body = get(metrics_port, "/health/ready")
        assert (status, body) == (404, "draining: finishing in-flight requests\n")
        assert get(metrics_port, "/health/live")[0] == 200
        # Within --shutdown-delay-s the Thrift port still takes new clients (the load
        # balancer is still learning that this server is going away).
        with connect("127.0.0.1", server.port) as connection:
            connection.client.ping()
        code = server.finish()
    finally:
        server.kill()
    output = "".join(server.log)
    assert code == 0, output
    assert "not ready; still accepting for 5.0 s" in output and "stopped accepting" in output
    # The start-up summary has a line per node: backend, instances, batch range, placement,
    # precision and limits.
    assert "node cpu_decoder: DecodeMat x8, batch 1..1, on cpu, max_queue_size 2048" in output
    assert (
        "node resnet18: SyncTensor[Sequential[TorchTensor,ClassScores]] x2, batch 1..8, on cpu, "
        "precision fp32 (fp16 requested; CPU), max_queue_size 512, request_timeout 10000 ms"
    ) in output


def test_failed_warmup_never_becomes_ready(resnet18_onnx, tmp_path):
    """A model node that needs two requests per batch cannot run the lone warm-up request."""
    config = tmp_path / "needs_two.toml"
    config.write_text(DEFAULT_CONFIG.read_text().replace("min = 1", "min = 2"))
    metrics_port = free_port()
    server = ServiceProcess(
        "--config", str(config), "--model", str(resnet18_onnx),
        "--metrics-port", str(metrics_port), "--warmup-timeout-s", "3", "--drain-timeout-s", "2",
    )  # fmt: skip
    try:
        server.wait_for("serving pipelined")
        # The warm-up is stuck in the model node's queue: alive, but not ready.
        assert get(metrics_port, "/health/live")[0] == 200
        status, _type, body = get(metrics_port, "/health/ready")
        assert (status, body) == (503, "starting: warm-up inference in progress\n")
        code = server.finish()
    finally:
        server.kill()
    output = "".join(server.log)
    assert code == 2, output
    assert "warm-up inference failed, stopping" in output
