"""``python -m service --workers 2 --shared-engine``: the model stage in one engine process."""

from __future__ import annotations

import signal

import pytest

from clients.connection import connect
from service.gen.inference.ttypes import InferenceError, InferenceParams
from tests.integration.test_service_process import ServiceProcess


@pytest.mark.slow
def test_workers_send_the_model_stage_to_one_engine(resnet18_onnx, photos, baseline_service):
    server = ServiceProcess(
        "--workers", "2", "--shared-engine", "--model", str(resnet18_onnx), "--threads", "4"
    )
    try:
        server.wait_for("serving pipelined", count=2)
        server.wait_for("ready: warmed up", count=2)
        for index, (name, image) in enumerate(photos.items()):
            with connect("127.0.0.1", server.port) as connection:  # dealt to each worker in turn
                result = connection.client.infer_batch(InferenceParams(uuid=name, data=image))
            with connect("127.0.0.1", baseline_service.port) as connection:
                expected = connection.client.infer_batch(InferenceParams(uuid=name, data=image))
            # The same engine on the CPU, the same pixels: the same answer as the baseline's.
            assert result.label == expected.label, name
            assert result.score == pytest.approx(expected.score, abs=1e-4), name
            assert index < len(photos)
        with connect("127.0.0.1", server.port) as connection, pytest.raises(InferenceError):
            connection.client.infer_batch(InferenceParams(uuid="bad", data=b"not a jpeg"))
        server.process.send_signal(signal.SIGTERM)
        assert server.finish() == 0
        # Two warm-ups and one call per photograph reached the engine; the bad image did not.
        requests = 2 + len(photos)
        assert any(f"shared engine: {requests} requests in" in line for line in server.log)
        assert any("workers exited with codes [0, 0, 0]" in line for line in server.log)
    finally:
        server.kill()


def test_shared_engine_needs_several_workers():
    server = ServiceProcess("--shared-engine")
    assert server.finish() == 2
    assert any("--shared-engine needs --workers 2 or more" in line for line in server.log)
