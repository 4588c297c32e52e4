"""The load tester against live Thrift servers: a fake one (fast, exact) and the real service."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from clients.client_qps import (
    DEFAULT_TOTAL_NUMBER_CPU,
    DEFAULT_TOTAL_NUMBER_GPU,
    LoadResult,
    LoadTestError,
    default_total_number,
    main,
    run_load,
)
from clients.images import DEFAULT_IMG_DIR, load_images
from service.server_process import ServerProcess, free_port, service_command
from service.thrift_client import connect
from tests.support.fake_inference_server import start_fake_server


def _load(port: int, images: list[bytes], **settings) -> LoadResult:
    """run_load without a progress bar or warm-up unless asked."""
    return run_load(port=port, images=images, **{"warmup": 0, "progress": False, **settings})


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    return load_images(DEFAULT_IMG_DIR)


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory):
    with start_fake_server(tmp_path_factory.mktemp("fake")) as server:
        yield server


def test_images_are_shrunk_jpegs(images):
    import cv2
    import numpy as np

    assert len(images) == len(list(DEFAULT_IMG_DIR.glob("*.jpg")))
    for data in images:
        assert data[:2] == b"\xff\xd8"
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert max(decoded.shape[:2]) <= 640


def test_infer_batch_in_process(fake_server, images):
    result = _load(fake_server.port, images, request_client=4, total_number=203, warmup=10)
    assert (result.requests, result.images, result.ok_requests) == (203, 203, 203)
    assert result.errors == 0 and result.errors_by_code == {}
    assert result.qps > 0 and result.wall_s > 0
    assert 0 < result.tp50_ms <= result.tp90_ms <= result.tp99_ms <= result.max_ms
    assert result.client_cpu_s > 0


def test_infer_many_over_processes(fake_server, images):
    result = _load(
        fake_server.port,
        images,
        request_client=5,
        request_batch=3,
        total_number=60,
        warmup=5,
        processes=2,
    )
    assert (result.processes, result.requests, result.images) == (2, 60, 180)
    assert result.errors == 0 and result.ok_requests == 60


def test_ping_mode(fake_server, images):
    result = _load(fake_server.port, images, method="ping", request_client=3, total_number=100)
    assert (result.method, result.requests, result.images, result.errors) == ("ping", 100, 0, 0)


def test_server_errors_are_counted_by_code(fake_server, images):
    # One image in three is not a JPEG: the fake server rejects it with INVALID_IMAGE.
    mixed = [images[0], b"not an image", images[1]]
    result = _load(fake_server.port, mixed, request_client=1, total_number=30)
    assert result.errors_by_code == {"INVALID_IMAGE": 10}
    assert result.ok_requests == 20


def test_broken_responses_are_errors(tmp_path, images):
    with start_fake_server(tmp_path, "--bad-score") as server:
        result = _load(server.port, images, request_client=2, request_batch=2, total_number=10)
    assert result.errors_by_code == {"BAD_RESPONSE": 20}
    assert result.ok_requests == 0 and result.tp50_ms is None


def test_unreachable_server_is_a_clear_error(images):
    with pytest.raises(LoadTestError, match="cannot connect"):
        _load(free_port(), images, request_client=2, total_number=5)


def test_every_client_must_get_a_call(images):
    with pytest.raises(ValueError, match="request_client"):
        _load(free_port(), images, request_client=8, total_number=5)


def test_cli_prints_summary_and_writes_json(fake_server, tmp_path, capsys):
    out = tmp_path / "load.json"
    argv = ["--port", str(fake_server.port), "--total_number", "50", "--warmup", "5"]
    assert main([*argv, "--request_client", "2", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "QPS:" in printed and "TP99" in printed and "errors: 0" in printed
    figures = json.loads(out.read_text())
    assert figures["requests"] == 50 and figures["errors"] == 0


def test_help_shows_every_default():
    run = subprocess.run(
        [sys.executable, "-m", "clients.client_qps", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0
    text = " ".join(run.stdout.split())
    assert "(default: 10)" in text and "(default: 200)" in text and "(default: infer_batch)" in text
    assert f"default: {DEFAULT_TOTAL_NUMBER_GPU} against a server" in text
    assert "(default: None)" not in text


def test_the_default_number_of_calls_follows_the_servers_device(fake_server, tmp_path):
    assert default_total_number("127.0.0.1", fake_server.port, 5.0) == DEFAULT_TOTAL_NUMBER_GPU
    with start_fake_server(tmp_path, "--device", "cpu") as cpu_server:
        assert default_total_number("127.0.0.1", cpu_server.port, 5.0) == DEFAULT_TOTAL_NUMBER_CPU


def test_ctrl_c_prints_the_figures_so_far_without_a_traceback(tmp_path):
    with start_fake_server(tmp_path) as server:
        command = [sys.executable, "-m", "clients.client_qps", "--port", str(server.port)]
        command += ["--total_number", "10000000", "--warmup", "0", "--processes", "2"]
        command += ["--request_client", "4"]
        # A session of its own, so that the SIGINT below reaches every process of the load
        # tester as a terminal's Ctrl-C does, and nothing else.
        client = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 60
            with connect("127.0.0.1", server.port) as probe:
                while probe.client.stats().requests_ok < 200:  # the timed phase is under way
                    assert time.monotonic() < deadline and client.poll() is None
            os.killpg(client.pid, signal.SIGINT)
            out, err = client.communicate(timeout=60)
        finally:
            if client.poll() is None:
                client.kill()
    assert client.returncode == 130, err.decode()
    assert "Traceback" not in err.decode(), err.decode()
    printed = out.decode()
    assert "INTERRUPTED" in printed and "QPS:" in printed and "errors: 0" in printed


@pytest.mark.slow
def test_real_service_answers_every_call(tmp_path_factory, images):
    """client_qps against the real baseline server (CPU, ResNet18 with seeded random weights)."""
    model_dir = tmp_path_factory.mktemp("model")
    model = model_dir / "resnet18.onnx"
    export = [sys.executable, "-m", "service.tools.export_model", "--arch", "resnet18"]
    subprocess.run([*export, "--output", str(model)], check=True, timeout=300)
    port = free_port()
    command = service_command("baseline", port, model=model)
    with ServerProcess(command, host="127.0.0.1", port=port, log_path=model_dir / "log") as server:
        server.start(ready_timeout_s=300.0)
        result = run_load(
            port=port, images=images, request_client=4, total_number=24, warmup=4, progress=False
        )
        pinged = _load(port, images, method="ping", request_client=4, total_number=200)
    assert result.errors == 0 and result.ok_requests == 24
    assert pinged.errors == 0 and pinged.requests == 200
