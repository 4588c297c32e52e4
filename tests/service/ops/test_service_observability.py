"""The ops port and the metrics: health states, Triton names, the same figures as stats()."""

from __future__ import annotations

import logging
import socket
import struct
import sys
import threading
import time
import types

import pytest

from service.gen.inference.ttypes import (
    ErrorCode,
    GpuStats,
    InferenceError,
    InferenceParams,
    ServerStats,
    WireNodeStats,
)
from service.ops.gpu_stats import GpuReader
from service.ops.log_limit import LogLimiter
from service.ops.ops_server import PROMETHEUS_CONTENT_TYPE, OpsServer, ServiceState
from service.ops.prometheus_export import FAILURE_REASONS, MetricsRenderer, render_triton
from tests.support.http_metrics import get, samples, value
from tests.support.live_service import WAIT_S

TRITON_NODE_FAMILIES = {
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_pending_request_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
}


@pytest.fixture
def ops():
    state = ServiceState()
    calls = {"fail": False}

    def render() -> str:
        if calls["fail"]:
            raise RuntimeError("broken collector")
        return "# HELP x y\n# TYPE x gauge\nx 1.0\n"

    server = OpsServer(state, render, host="127.0.0.1", port=0)
    server.start()
    try:
        yield server, state, calls
    finally:
        server.close()


def test_a_prober_that_hangs_up_early_costs_one_debug_line_not_a_traceback(capfd, caplog):
    rendering, hung_up = threading.Event(), threading.Event()

    def render() -> str:
        rendering.set()
        assert hung_up.wait(WAIT_S)
        return "x 1.0\n" * 1_000_000  # more than the socket buffers: the write must fail

    def records() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name.startswith("service.ops")]

    server = OpsServer(ServiceState(), render, host="127.0.0.1", port=0)
    server.start()
    try:
        with caplog.at_level(logging.DEBUG, logger="service.ops"):
            prober = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_S)
            prober.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            assert rendering.wait(WAIT_S)
            # Close with a reset, as a prober whose timeout fired does.
            prober.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            prober.close()
            hung_up.set()
            deadline_s = time.monotonic() + WAIT_S
            while not any("went away" in r.getMessage() for r in records()):
                assert time.monotonic() < deadline_s, "the failed write was never handled"
                time.sleep(0.01)
    finally:
        server.close()
    assert "Traceback" not in capfd.readouterr().err
    assert all(r.levelno == logging.DEBUG for r in records())
    assert sum("went away" in r.getMessage() for r in records()) == 1


def test_health_follows_the_life_of_the_server(ops):
    server, state, _calls = ops
    assert get(server.port, "/health/live")[0] == 200
    status, _type, body = get(server.port, "/health/ready")
    assert (status, body) == (503, "starting: loading the models\n")
    state.set_detail("starting: warm-up inference in progress")
    status, _type, body = get(server.port, "/health/ready")
    assert (status, body) == (503, "starting: warm-up inference in progress\n")
    state.mark_ready()
    assert get(server.port, "/health/ready")[0] == 200
    state.mark_draining()
    # 404, not 503: HAProxy (http-check disable-on-404) stops new connections to a draining
    # server without marking it down, so the calls it is finishing are not cut.
    status, _type, body = get(server.port, "/health/ready")
    assert (status, body) == (404, "draining: finishing in-flight requests\n")
    state.mark_ready()  # a late warm-up must not make a draining server ready again
    assert get(server.port, "/health/ready")[0] == 404
    assert get(server.port, "/health/live")[0] == 200


def test_stopped_while_starting_answers_draining(ops):
    """SIGTERM (or a failed warm-up) before the server was ever ready: draining, 404."""
    server, state, _calls = ops
    state.set_detail("starting: warm-up inference in progress")
    assert get(server.port, "/health/ready")[0] == 503
    state.mark_draining()
    status, _type, body = get(server.port, "/health/ready")
    assert (status, body) == (404, "draining: finishing in-flight requests\n")
    assert not state.ready and state.draining


def test_metrics_path_and_errors(ops):
    server, _state, calls = ops
    status, content_type, body = get(server.port, "/metrics")
    assert (status, content_type) == (200, PROMETHEUS_CONTENT_TYPE)
    assert "x 1.0" in body
    assert get(server.port, "/nope")[0] == 404
    calls["fail"] = True
    assert get(server.port, "/metrics")[0] == 500
    assert get(server.port, "/health/live")[0] == 200  # a broken scrape harms nothing else


def test_pipelined_metrics_match_stats(pipelined_service, photos):
    """/metrics renders exactly what the Thrift stats() call returns, under Triton's names."""
    with pipelined_service.connect() as connection:
        for name, data in list(photos.items())[:3]:
            connection.client.infer_batch(InferenceParams(uuid=name, data=data))
        with pytest.raises(InferenceError):
            connection.client.infer_batch(InferenceParams(uuid="bad", data=b"not an image"))
        stats = connection.client.stats()
    found = samples(render_triton(stats))
    assert set(found) >= TRITON_NODE_FAMILIES
    assert not any(name.startswith("nv_gpu") for name in found)  # no GPU here: not exported
    # The model node is named after the model file it runs (the test's resnet18.onnx).
    assert [n.node for n in stats.nodes] == ["cpu_decoder", "cpu_posdecoder", "resnet18"]
    for node in stats.nodes:
        labels = {"model": node.node, "version": "1"}
        assert value(found, "nv_inference_request_success", **labels) == node.requests_ok
        assert value(found, "nv_inference_count", **labels) == node.inferences
        assert value(found, "nv_inference_exec_count", **labels) == node.executions
        assert value(found, "nv_inference_queue_duration_us", **labels) == pytest.approx(
            node.queue_time_ms_total * 1000
        )
        compute_us = value(found, "nv_inference_compute_infer_duration_us", **labels)
        assert compute_us == pytest.approx(node.request_compute_time_ms_total * 1000)
        # Per request, a batch's time counts once per request in it: never less than per batch.
        assert node.request_compute_time_ms_total >= node.compute_time_ms_total - 1e-9
        assert value(found, "nv_inference_request_duration_us", **labels) == pytest.approx(
            compute_us + node.queue_time_ms_total * 1000
        )
        failures = {
            reason: value(found, "nv_inference_request_failure", reason=reason, **labels)
            for reason in FAILURE_REASONS
        }
        # Other tests share this server: compare with its figures rather than with zero.
        assert failures == {
            "REJECTED": node.requests_rejected + node.requests_timed_out,
            "CANCELED": 0,
            "BACKEND": node.requests_failed,
            "OTHER": 0,
        }
    model = next(n for n in stats.nodes if n.node == "resnet18")
    # The bad image ended at the decoder (no result), so the model ran the good ones only.
    assert model.inferences >= 3 and model.requests_ok >= 3
    assert value(found, "tp_requests_success", handler="pipelined") == stats.requests_ok
    invalid = value(found, "tp_requests_failure", handler="pipelined", code="INVALID_IMAGE")
    assert invalid == stats.failures_by_code[ErrorCode.INVALID_IMAGE] >= 1


def test_images_a_stage_cannot_decode_count_as_its_failures(pipelined_service, photos):
    """A non-image and a truncated JPEG end at the decoder without a result: the caller gets
    INVALID_IMAGE, and the decoder counts them as BACKEND failures, not as successes."""
    truncated = photos["chelsea"][: len(photos["chelsea"]) // 2]
    with pipelined_service.connect() as connection:
        before = {n.node: n for n in connection.client.stats().nodes}
        for bad in (b"not an image", truncated):
            with pytest.raises(InferenceError) as caught:
                connection.client.infer_batch(InferenceParams(uuid="bad", data=bad))
            assert caught.value.code == ErrorCode.INVALID_IMAGE
        stats = connection.client.stats()
    decoder = next(n for n in stats.nodes if n.node == "cpu_decoder")
    assert decoder.requests_ok == before["cpu_decoder"].requests_ok
    assert decoder.requests_failed == before["cpu_decoder"].requests_failed + 2
    found = samples(render_triton(stats))
    labels = {"model": "cpu_decoder", "version": "1", "reason": "BACKEND"}
    assert value(found, "nv_inference_request_failure", **labels) == decoder.requests_failed


def test_baseline_exports_its_engine_under_the_model_nodes_name(baseline_service, photos):
    with baseline_service.connect() as connection:
        connection.client.infer_batch(InferenceParams(uuid="a", data=photos["coffee"]))
        stats = connection.client.stats()
    (node,) = stats.nodes
    assert node.node == "resnet18" and node.queue_length == 0
    found = samples(render_triton(stats))
    labels = {"model": "resnet18", "version": "1"}
    assert value(found, "nv_inference_count", **labels) == node.inferences >= 1
    assert value(found, "nv_inference_exec_count", **labels) == node.executions
    assert value(found, "nv_inference_pending_request_count", **labels) == 0


def test_failure_reasons_and_gpus_from_figures():
    node = WireNodeStats(
        node="m",
        backend="B",
        instances=1,
        requests_ok=5,
        requests_failed=2,
        requests_rejected=3,
        requests_timed_out=4,
        inferences=7,
        executions=3,
        batch_sizes={},
        queue_time_ms_total=1.5,
        compute_time_ms_total=2.0,
        queue_length=6,
        request_compute_time_ms_total=5.0,
    )
    gpu = GpuStats(
        index=0,
        uuid="GPU-1234",
        name="Test GPU",
        utilization=0.25,
        memory_used_bytes=1 << 30,
        memory_total_bytes=80 << 30,
    )
    stats = ServerStats(
        handler="pipelined",
        device="cuda:0",
        uptime_s=1.0,
        requests_ok=5,
        requests_failed=9,
        failures_by_code={ErrorCode.OVERLOADED: 3, ErrorCode.TIMEOUT: 4, ErrorCode.INTERNAL: 2},
        nodes=[node],
        gpus=[gpu],
        ready=True,
    )
    found = samples(render_triton(stats))
    labels = {"model": "m", "version": "1"}
    failures = {
        r: value(found, "nv_inference_request_failure", reason=r, **labels) for r in FAILURE_REASONS
    }
    assert failures == {"REJECTED": 7, "CANCELED": 0, "BACKEND": 2, "OTHER": 0}
    assert value(found, "nv_inference_pending_request_count", **labels) == 6
    assert value(found, "nv_inference_request_duration_us", **labels) == 6500
    assert value(found, "nv_gpu_utilization", gpu_uuid="GPU-1234") == 0.25
    assert value(found, "nv_gpu_memory_used_bytes", gpu_uuid="GPU-1234") == 1 << 30
    assert value(found, "nv_gpu_memory_total_bytes", gpu_uuid="GPU-1234") == 80 << 30
    assert value(found, "tp_ready", handler="pipelined") == 1
    assert value(found, "tp_requests_failure", code="OVERLOADED") == 3


def test_renderer_before_the_models_load_has_process_figures_only():
    found = samples(MetricsRenderer(lambda: None).render())
    assert "process_resident_memory_bytes" in found
    assert not any(name.startswith(("nv_", "tp_")) for name in found)


class FakeNvml:
    """The few pynvml calls GpuReader makes, for one GPU."""

    class NVMLError(Exception):
        pass

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"handle-{index}"

    def nvmlDeviceGetMemoryInfo(self, handle):
        return types.SimpleNamespace(used=3 << 30, total=80 << 30)

    def nvmlDeviceGetUUID(self, handle) -> bytes:
        return b"GPU-fake"

    def nvmlDeviceGetName(self, handle) -> str:
        return "Fake H100"

    def nvmlDeviceGetUtilizationRates(self, handle):
        return types.SimpleNamespace(gpu=42)


def test_gpu_reader_through_nvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml())
    reader = GpuReader()
    assert reader.available and reader.reason is None
    (gpu,) = reader.read()
    assert (gpu.uuid, gpu.name, gpu.utilization) == ("GPU-fake", "Fake H100", 0.42)
    assert (gpu.memory_used_bytes, gpu.memory_total_bytes) == (3 << 30, 80 << 30)


def test_gpu_reader_without_nvml_says_why(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    with caplog.at_level(logging.INFO, logger="service.ops.gpu_stats"):
        reader = GpuReader()
    assert not reader.available and reader.read() is None
    assert "nvidia-ml-py is not installed" in reader.reason
    assert [r.message for r in caplog.records] == [f"GPU metrics not exported: {reader.reason}"]


def test_failures_log_one_line_per_call_and_a_flood_of_them_few_lines(service, caplog, monkeypatch):
    # A fresh rate limit whose clock stands still: the shared server's may have just logged for
    # another test, and the flood must cost one line of each kind however long it takes.
    frozen = LogLimiter(logging.getLogger("service.handlers.handler"), clock=lambda: 0.0)
    monkeypatch.setattr(service.handler._outcomes, "log", frozen)
    bad = [InferenceParams(uuid=f"bad-{i}", data=b"x") for i in range(100)]
    with (
        caplog.at_level(logging.INFO, logger="service.handlers.handler"),
        service.connect() as connection,
    ):
        with pytest.raises(InferenceError):
            connection.client.infer_batch(InferenceParams(uuid="bad-1", data=b"not an image"))
        results = connection.client.infer_many(bad, 1)
        for _ in range(50):  # the same failure, again and again
            with pytest.raises(InferenceError):
                connection.client.infer_batch(InferenceParams(uuid="again", data=b""))
    assert all(result.error is not None for result in results)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "request failed uuid='bad-1' code=INVALID_IMAGE: not a decodable image"
    assert lines[1] == "infer_many: 100 of 100 images failed (INVALID_IMAGE x100)"
    assert len(lines) == 2, lines  # the 50 failures after them: within the same second
