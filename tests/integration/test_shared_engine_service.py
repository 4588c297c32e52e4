"""``python -m service --workers 2 --shared-engine``: the model stage in one engine process."""

from __future__ import annotations

import os
import re
import signal
import urllib.request

import pytest
from thrift.transport.TTransport import TTransportException

from service.gen.inference.ttypes import InferenceError, InferenceParams
from service.server_process import free_port
from service.thrift_client import connect
from tests.integration.test_service_process import ServiceProcess


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def _engine_group(model, metrics_port: int) -> ServiceProcess:
    server = ServiceProcess(
        "--workers",
        "2",
        "--shared-engine",
        "--model",
        str(model),
        "--threads",
        "4",
        "--metrics-port",
        str(metrics_port),
    )
    server.wait_for("ready: all 2 workers warmed up")
    return server


@pytest.mark.slow
def test_workers_send_the_model_stage_to_one_engine(resnet18_onnx, photos, baseline_service):
    metrics_port = free_port()
    server = _engine_group(resnet18_onnx, metrics_port)
    try:
        for name, image in photos.items():
            with connect("127.0.0.1", server.port) as connection:  # dealt to each worker in turn
                result = connection.client.infer_batch(InferenceParams(uuid=name, data=image))
            with connect("127.0.0.1", baseline_service.port) as connection:
                expected = connection.client.infer_batch(InferenceParams(uuid=name, data=image))
            # The same engine on the CPU, the same pixels: the same answer as the baseline's.
            assert result.label == expected.label, name
            assert result.score == pytest.approx(expected.score, abs=1e-4), name
        with connect("127.0.0.1", server.port) as connection, pytest.raises(InferenceError):
            connection.client.infer_batch(InferenceParams(uuid="bad", data=b"not a jpeg"))
        # Two warm-ups and one call per photograph reached the engine; the bad image did not.
        requests = 2 + len(photos)
        text = _metrics(metrics_port)
        assert f'tp_engine_requests{{model="resnet18"}} {float(requests)!r}' in text
        assert f'nv_inference_request_success{{model="resnet18",version="1"}} {requests}.0' in text
        server.process.send_signal(signal.SIGTERM)
        assert server.finish() == 0
        assert any(f"shared engine: {requests} requests in" in line for line in server.log)
        assert any("workers exited with codes [0, 0, 0]" in line for line in server.log)
    finally:
        server.kill()


@pytest.mark.slow
def test_an_engine_that_dies_stops_the_group(resnet18_onnx, photos):
    server = _engine_group(resnet18_onnx, free_port())
    try:
        started = next(line for line in server.log if "shared engine process started" in line)
        engine_pid = int(re.search(r"pid (\d+)", started).group(1))
        os.kill(engine_pid, signal.SIGKILL)
        # A call fails at once rather than hanging: with a typed error from the worker whose
        # engine is gone, or, once the supervisor has noticed, refused with the whole group.
        refused = (InferenceError, TTransportException, OSError)
        with (
            pytest.raises(refused),
            connect("127.0.0.1", server.port, timeout_s=10) as connection,
        ):
            connection.client.infer_batch(
                InferenceParams(uuid="x", data=next(iter(photos.values())))
            )
        # ...and the supervisor stops the whole group, for the process manager to restart.
        assert server.finish() != 0
        assert any("the engine exited with code -9" in line for line in server.log)
    finally:
        server.kill()


def test_shared_engine_needs_several_workers():
    server = ServiceProcess("--shared-engine")
    assert server.finish() == 2
    assert any("--shared-engine needs --workers 2 or more" in line for line in server.log)
