"""Honest error accounting: every failure a client causes is typed, counted and logged at a
bounded rate, and a client that gives up is counted cancelled, not as the server's failure."""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path

import pytest
import torch
from thrift.Thrift import TApplicationException

import torchpipe_lite as tp
from benchmarks.attacks import encoded_call
from benchmarks.call_attacks import ppm_declaring
from service.gen.inference import InferenceService
from service.gen.inference.ttypes import ErrorCode, InferenceError, InferenceParams
from service.handlers.main_torchpipe import PipelinedHandler
from service.ops.log_limit import LogLimiter
from service.ops.prometheus_export import render_triton
from service.rpc import connection as rpc_connection
from service.rpc.codec import Call, Codec, service_methods
from service.rpc.connection import Reply
from service.service_config import ImageSettings, ServiceConfig
from tests.image_samples import pam_declaring, pcx_declaring, tiff_declaring
from tests.support.haproxy_cluster import wait_until
from tests.support.live_service import WAIT_S, serve_in_thread
from tests.support.service_fakes import GatedHandler
from torchpipe_lite.errors import InvalidInputError

#: Loggers whose lines a request can cause.
OURS = ("service", "torchpipe_lite")


def frozen_limits(monkeypatch, handler) -> None:
    """Rate limits whose clock stands still, for the handler and the RPC layer: a flood must
    then cost one line per kind, however long it takes on a loaded machine."""
    for owner, logger in (
        (handler._outcomes, logging.getLogger("service.handlers.handler")),
        (rpc_connection, rpc_connection.logger),
    ):
        name = "log" if owner is handler._outcomes else "_failure_log"
        monkeypatch.setattr(owner, name, LogLimiter(logger, clock=lambda: 0.0))


def our_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.split(".")[0] in OURS]


def test_a_flood_of_header_bombs_is_invalid_image_in_a_bounded_number_of_lines(
    service, caplog, monkeypatch
):
    frozen_limits(monkeypatch, service.handler)
    bombs = [
        ppm_declaring(60000, 60000),  # issue 30's 119 bytes
        tiff_declaring(60000, 60000),
        pam_declaring(60000, 60000),
        pcx_declaring(65535, 65535),  # one only Pillow sizes, and refuses to
    ]
    calls = 200
    before = service.handler.stats()
    with caplog.at_level(logging.INFO), service.connect() as connection:
        for index in range(calls):
            with pytest.raises(InferenceError) as caught:
                bomb = bombs[index % len(bombs)]
                connection.client.infer_batch(InferenceParams(uuid=str(index), data=bomb))
            assert caught.value.code == ErrorCode.INVALID_IMAGE, caught.value.message
    after = service.handler.stats()
    invalid = ErrorCode.INVALID_IMAGE
    assert after.failures_by_code.get(invalid, 0) - before.failures_by_code.get(invalid, 0) == calls
    assert after.failures_by_code.get(ErrorCode.INTERNAL) == before.failures_by_code.get(
        ErrorCode.INTERNAL
    )
    lines = our_records(caplog)
    assert not [r for r in lines if r.levelno >= logging.WARNING], lines
    assert len(lines) <= 2, [r.getMessage() for r in lines]


def test_unexpected_failures_of_calls_are_logged_once_per_interval_with_a_count(caplog):
    now_s = [0.0]
    limiter = LogLimiter(rpc_connection.logger, clock=lambda: now_s[0])
    codec = Codec(string_length_limit=1 << 20, container_length_limit=1 << 10)
    method = service_methods(InferenceService)["infer_batch"]
    answers: list[bytes] = []

    def fail_one(seqid: int) -> None:
        reply = Reply(Call(method, seqid, ()), None, codec, lambda _, data: answers.append(data))
        reply.fail(RuntimeError(f"bug {seqid}"))

    with pytest.MonkeyPatch.context() as patch, caplog.at_level(logging.INFO):
        patch.setattr(rpc_connection, "_failure_log", limiter)
        for seqid in range(500):
            fail_one(seqid)
        now_s[0] = 1.0
        fail_one(500)
    assert len(answers) == 501  # every call answered (INTERNAL_ERROR)
    messages = [r.getMessage() for r in our_records(caplog)]
    assert messages == [
        "unexpected exception in infer_batch",
        "unexpected exception in infer_batch (and 499 more like it in the last 1 s, not logged)",
    ]


@pytest.mark.parametrize(
    ("error", "code"),
    [(InvalidInputError("bad header"), ErrorCode.INVALID_IMAGE), (KeyError(1), ErrorCode.INTERNAL)],
)
def test_admission_failing_is_still_a_typed_and_counted_answer(error, code, caplog):
    handler = GatedHandler()

    def weigh(*_args, **_kwargs):
        raise error

    handler.admission.admit = weigh
    with caplog.at_level(logging.INFO), pytest.raises(InferenceError) as caught:
        handler.admit("infer_batch", (InferenceParams(uuid="u", data=b"x"),))
    assert caught.value.code == code
    assert handler.stats().failures_by_code == {code: 1}


# -- clients that give up ------------------------------------------------------------------


@tp.register_backend("TestTenLogits")
class TenLogits(tp.Backend):
    """Ten logits for every item: class 9 wins."""

    def forward(self, batch):
        for item in batch:
            item["result"] = torch.arange(10, dtype=torch.float32)


def gated_pipelined_handler() -> PipelinedHandler:
    """The pipelined handler on a pipeline whose first stage waits for the test's gate."""
    pipeline = {
        "gate": {"backend": "TestGate", "next": "logits"},
        "logits": {"backend": "TestTenLogits"},
    }
    config = ServiceConfig(Path("gated"), pipeline, model_node="logits", images=ImageSettings())
    return PipelinedHandler(config, device="cpu")


def patient_caller(service) -> tuple[threading.Thread, list[str]]:
    """A client calling ``infer_batch`` on a thread of its own (started), and its answers."""
    answered: list[str] = []

    def patient() -> None:
        with service.connect() as connection:
            params = InferenceParams(uuid="patient", data=b"waits its turn")
            answered.append(connection.client.infer_batch(params).label)

    caller = threading.Thread(target=patient)
    caller.start()
    return caller, answered


def send_and_hang_up(port: int) -> None:
    """A client that sends a whole call and closes its connection before the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        sock.sendall(encoded_call(b"given up on"))


def check_one_cancelled_and_nothing_failed(service, caplog) -> None:
    wait_until(lambda: service.handler.admission.stats().images_in_flight == 0, "the calls end")
    stats = service.handler.stats()
    assert stats.requests_cancelled == 1
    assert stats.requests_ok == 1 and stats.failures_by_code == {}, stats
    assert not [r for r in our_records(caplog) if r.levelno >= logging.WARNING]
    assert "tp_requests_cancelled{handler=" in render_triton(stats)


@pytest.mark.usefixtures("gate")
def test_a_client_that_hangs_up_mid_call_is_counted_cancelled_not_failed(caplog, gate):
    handler = gated_pipelined_handler()
    try:
        with caplog.at_level(logging.INFO), serve_in_thread(handler) as service:
            caller, answered = patient_caller(service)
            assert gate.entered.acquire(timeout=WAIT_S)  # the gate stage is busy with it
            send_and_hang_up(service.port)  # queued behind it, then abandoned
            wait_until(lambda: service.server.figures.calls_abandoned == 1, "the hang-up seen")
            gate.gate.set()
            caller.join(WAIT_S)
            assert answered == ["9 ostrich"]
            check_one_cancelled_and_nothing_failed(service, caplog)
            (gate_node,) = [n for n in handler.stats().nodes if n.node == "gate"]
            assert gate_node.requests_cancelled == 1  # dropped there, unrun
    finally:
        handler.close()


def test_a_blocking_call_whose_client_hung_up_is_counted_cancelled(caplog):
    handler = GatedHandler(threads=1)
    with caplog.at_level(logging.INFO), serve_in_thread(handler) as service:
        caller, answered = patient_caller(service)
        assert handler.entered.acquire(timeout=WAIT_S)  # the one pool thread is busy with it
        send_and_hang_up(service.port)
        wait_until(lambda: service.server.figures.calls_abandoned == 1, "the hang-up seen")
        handler.release.set()
        caller.join(WAIT_S)
        assert answered == ["9 ostrich"]
        check_one_cancelled_and_nothing_failed(service, caplog)


def test_the_answer_to_a_cancelled_call_is_a_quiet_application_error():
    handler = GatedHandler()
    answer = handler.abandoned("infer_batch", 3)
    assert isinstance(answer, TApplicationException)
    assert handler.stats().requests_cancelled == 3 and handler.stats().requests_failed == 0
