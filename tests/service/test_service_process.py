"""``python -m service`` as users run it: start-up, model export, SIGTERM and Ctrl-C."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from service.gen.inference.ttypes import InferenceParams
from service.server_process import free_port
from service.thrift_client import connect
from tests.support.service_process import REPO, ServiceProcess

CLIENTS = 3
DRAIN_TIMEOUT_S = 30.0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("handler", "signum", "model_exists"),
    [
        pytest.param("pipelined", signal.SIGTERM, False, id="pipelined-SIGTERM-fresh-model"),
        pytest.param("baseline", signal.SIGINT, True, id="baseline-SIGINT"),
    ],
)
def test_signal_finishes_in_flight_requests(
    handler, signum, model_exists, resnet18_onnx, photos, tmp_path
):
    model = resnet18_onnx if model_exists else tmp_path / "fresh" / "resnet18.onnx"
    args = ["--handler", handler, "--model", str(model), "--threads", "4", "--log-level", "debug"]
    args += ["--drain-timeout-s", str(DRAIN_TIMEOUT_S)]
    args += ["--admit-wait-fraction", "0"]  # the fixed limit: a cold server admits all calls
    if not model_exists:
        args += ["--arch", "resnet18"]  # a missing model the user names is exported only so
    server = ServiceProcess(*args)
    try:
        server.wait_for("serving")
        if not model_exists:
            assert model.is_file()
            assert any("is missing: exporting torchvision resnet18" in line for line in server.log)
        items = [InferenceParams(uuid=name, data=data) for name, data in photos.items()]
        answered_s: list[float] = []
        results: list[list] = []

        def client() -> None:
            with connect("127.0.0.1", server.port, timeout_s=120) as connection:
                results.append(connection.client.infer_many(items, 1))
                answered_s.append(time.monotonic())

        clients = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for thread in clients:
            thread.start()
        server.wait_for("infer_many received", count=CLIENTS, timeout_s=60)
        signalled_s = time.monotonic()
        server.process.send_signal(signum)
        server.wait_for("stopped accepting", timeout_s=DRAIN_TIMEOUT_S)
        with pytest.raises(ConnectionRefusedError):  # new clients are refused while draining
            socket.create_connection(("127.0.0.1", server.port), timeout=10).close()
        for thread in clients:
            thread.join(120)
        code = server.finish()
        exited_s = time.monotonic()
    finally:
        server.kill()
    assert code == 0, "".join(server.log)
    assert len(results) == CLIENTS
    for result in results:
        assert [item.uuid for item in result] == list(photos)
        assert all(item.error is None and len(item.predictions) == 1 for item in result)
    assert max(answered_s) > signalled_s, "nothing was in flight when the signal came"
    assert exited_s - signalled_s < DRAIN_TIMEOUT_S
    output = "".join(server.log)
    assert "stopped accepting" in output and "stopped\n" in output


def run_service(*args: str, python_flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``python -m service ARGS`` to its end (a start that must fail, or ``--help``)."""
    return subprocess.run(
        [sys.executable, *python_flags, "-m", "service", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_unreadable_config_fails_clearly(tmp_path):
    missing = tmp_path / "nope.toml"
    run = run_service("--config", str(missing), "--port", str(free_port()))
    assert run.returncode == 2
    assert f"cannot read the pipeline config {missing}" in run.stderr


def test_a_model_path_that_does_not_exist_is_refused_not_exported(tmp_path):
    missing = tmp_path / "typo" / "resnet5O.onnx"
    run = run_service("--model", str(missing), "--port", str(free_port()))
    assert run.returncode == 2
    assert f"model file {missing} does not exist" in run.stderr
    assert "Traceback" not in run.stderr
    assert not missing.exists() and not missing.parent.exists()


def test_help_is_quick_and_shows_each_default_once():
    started_s = time.monotonic()
    run = run_service("--help", python_flags=("-X", "importtime"))
    assert run.returncode == 0
    assert time.monotonic() - started_s < 30
    imported = {line.split("|")[-1].strip().split(".")[0] for line in run.stderr.splitlines()}
    assert not {"torch", "cv2", "numpy", "thrift"} & imported, "--help loaded the engine"
    assert "(default: None)" not in run.stdout
    options = run.stdout.split("\n  --")[1:]  # one chunk per option
    assert len(options) > 20
    for option in options:
        assert option.count("(default:") <= 1, option
