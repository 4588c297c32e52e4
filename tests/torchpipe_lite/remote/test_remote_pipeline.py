"""``tp.serve`` / ``tp.connect``: a pipeline used from other processes, requests in batches."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import torchpipe_lite as tp
from tests.pipeline_fakes import WAIT_S, Gate
from torchpipe_lite.errors import (
    InvalidInputError,
    NoResultError,
    PipelineUnavailableError,
    RequestCancelledError,
    RequestTimeoutError,
)


@tp.register_backend("TestRemoteScale")
class Scale(tp.Backend):
    """result = data * 2 for numbers; b"bad" fails alone; b"none" gives no result."""

    def forward(self, batch):
        for item in batch:
            data = item["data"]
            if isinstance(data, memoryview):
                data = bytes(data)
            if data == b"bad":
                raise InvalidInputError("a bad input")
            if data != b"none":
                item["result"] = data * 2

    def max(self):
        return 8


SCALE = {"batching_timeout": 20, "scale": {"backend": "TestRemoteScale"}}
GATED = {"gated": {"backend": "TestGate", "instance_num": 1}}


@pytest.fixture
def address(tmp_path) -> Path:
    return tmp_path / "pipeline.sock"


@pytest.fixture
def served(address) -> Iterator[tp.PipelineServer]:
    server = tp.serve(SCALE, address)
    try:
        yield server
    finally:
        server.close()


def test_requests_cross_in_batches_both_ways_with_their_own_results(served, address):
    with tp.connect(address) as remote:
        requests = [{"data": index} for index in range(40)]
        remote(requests)
        assert [request["result"] for request in requests] == [2 * i for i in range(40)]
        assert remote.batch_range("scale") == (1, 8)
        assert remote.stats()["scale"].requests_ok == 40
    figures = served.figures()
    assert figures.intake_batches == 1 and figures.requests_received == 40  # one frame in
    assert figures.requests_answered == 40
    assert figures.result_frames <= 10  # answered per batch (batches of up to 8), not per request


def test_errors_cross_typed_and_fail_only_their_own_request(served, address):
    with tp.connect(address) as remote:
        good, bad, empty = {"data": b"ok"}, {"data": b"bad"}, {"data": b"none"}
        ended: dict[int, BaseException | None] = {}
        done = threading.Event()

        def on_done(index, _request, error):
            ended[index] = error
            if len(ended) == 3:
                done.set()

        remote.dispatch_many([good, bad, empty], on_done, strict=True)
        assert done.wait(WAIT_S)
        assert ended[0] is None and good["result"] == b"okok"
        assert isinstance(ended[1], InvalidInputError) and ended[1].node == "scale"
        assert isinstance(ended[2], NoResultError) and "result" not in empty
        relaxed = {"data": b"none"}
        remote(relaxed)  # not strict: no result and no error, as in TorchPipe
        assert "result" not in relaxed
        with pytest.raises(tp.errors.InvalidRequestError, match="unknown node_name"):
            remote({"data": 1, "node_name": "nowhere"})
        assert remote.submit({"data": 21}).result(WAIT_S)["result"] == 42


def _gated_server(address: Path) -> tp.PipelineServer:
    Gate.gate.clear()
    while Gate.entered.acquire(blocking=False):
        pass
    return tp.serve(GATED, address)


def test_a_request_waiting_past_its_timeout_is_dropped_unrun(address):
    server = _gated_server(address)
    try:
        with tp.connect(address) as remote:
            first = remote.submit({"data": 1})
            assert Gate.entered.acquire(timeout=WAIT_S)  # the one instance is busy
            late = remote.submit({"data": 2}, timeout_s=0.05)
            time.sleep(0.1)  # let its deadline pass while it waits (time, not a hand-off)
            Gate.gate.set()
            assert first.result(WAIT_S)["result"] == 1
            with pytest.raises(RequestTimeoutError):
                late.result(WAIT_S)
    finally:
        Gate.gate.set()
        server.close()


@pytest.mark.parametrize("same_write", [False, True], ids=["own-write", "same-write"])
def test_a_cancelled_request_is_dropped_at_the_server(address, same_write):
    server = _gated_server(address)
    try:
        with tp.connect(address) as remote:
            first = remote.submit({"data": 1})
            assert Gate.entered.acquire(timeout=WAIT_S)
            ended = threading.Event()
            outcome: list[BaseException | None] = []
            filler = None
            # Holding the send lock, the sender blocks writing the filler's frame, so the
            # request's SUBMIT and its CANCEL leave together in the next write.
            with remote._send_lock if same_write else contextlib.nullcontext():
                if same_write:
                    filler = remote.submit({"data": 3})
                handle = remote.dispatch(
                    {"data": 2}, lambda _r, error: (outcome.append(error), ended.set())
                )
                handle.cancel()
            waiting = 2 if same_write else 1
            deadline = time.monotonic() + WAIT_S
            while remote.stats()["gated"].queue_length < waiting and time.monotonic() < deadline:
                pass
            Gate.gate.set()
            assert first.result(WAIT_S)["result"] == 1
            if filler is not None:
                assert filler.result(WAIT_S)["result"] == 3
            assert ended.wait(WAIT_S)
            assert isinstance(outcome[0], RequestCancelledError)
    finally:
        Gate.gate.set()
        server.close()


def test_requests_posted_while_the_sender_writes_go_in_one_write(served, address):
    with tp.connect(address) as remote:
        done = threading.Semaphore(0)
        with remote._send_lock:  # the sender thread blocks in its first write
            for index in range(20):
                remote.dispatch({"data": index}, lambda _r, _e: done.release())
        for _ in range(20):
            assert done.acquire(timeout=WAIT_S)
    figures = served.figures()
    assert figures.requests_received == 20
    assert figures.intake_batches <= 2  # the first request's write, then the other 19 at once


def _client_that_dies(address: str, sent) -> None:
    remote = tp.connect(address)
    remote.dispatch({"data": 7}, lambda _r, _e: None)
    sent.set()
    threading.Event().wait(60)  # killed by the test


def test_a_client_that_dies_loses_only_its_own_requests(address):
    server = _gated_server(address)
    context = multiprocessing.get_context("spawn")
    sent = context.Event()
    process = context.Process(target=_client_that_dies, args=(str(address), sent))
    try:
        with tp.connect(address) as remote:
            first = remote.submit({"data": 1})
            assert Gate.entered.acquire(timeout=WAIT_S)
            process.start()
            assert sent.wait(30)
            deadline = time.monotonic() + WAIT_S
            while server.figures().requests_received < 2 and time.monotonic() < deadline:
                pass
            process.kill()
            process.join(WAIT_S)
            deadline = time.monotonic() + WAIT_S
            while server.figures().clients_open > 1 and time.monotonic() < deadline:
                pass
            Gate.gate.set()
            assert first.result(WAIT_S)["result"] == 1
            assert remote.submit({"data": 3}).result(WAIT_S)["result"] == 3  # still served
            deadline = time.monotonic() + WAIT_S
            while server.pipeline.stats()["gated"].requests_cancelled < 1:
                assert time.monotonic() < deadline, "the dead client's request was not dropped"
    finally:
        Gate.gate.set()
        if process.is_alive():
            process.kill()
        server.close()


def _serve_until_killed(address: str, ready) -> None:
    server = tp.serve(GATED, address)  # its gate never opens: requests stay in flight
    ready.set()
    threading.Event().wait(60)
    server.close()


def _serve_scale(address: str, ready) -> None:
    tp.serve(SCALE, address)
    ready.set()
    threading.Event().wait(60)


def test_the_server_dying_fails_its_requests_clearly_and_a_new_one_serves_again(address):
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    dying = context.Process(target=_serve_until_killed, args=(str(address), ready), daemon=True)
    dying.start()
    assert ready.wait(30)
    remote = tp.connect(address)
    replacement = None
    try:
        held = remote.submit({"data": 1})
        dying.kill()
        with pytest.raises(PipelineUnavailableError, match="went away"):
            held.result(WAIT_S)
        os.unlink(address)
        with pytest.raises(PipelineUnavailableError, match="cannot attach"):
            remote({"data": 1})
        ready.clear()
        replacement = context.Process(target=_serve_scale, args=(str(address), ready), daemon=True)
        replacement.start()
        assert ready.wait(30)
        request = {"data": 5}
        remote(request)  # reconnects on its own
        assert request["result"] == 10
    finally:
        remote.close()
        for process in (dying, replacement):
            if process is not None and process.is_alive():
                process.kill()


def test_a_local_pipeline_ending_in_remote_sends_batches_over_one_shared_connection(
    served, address
):
    front = tp.pipe(
        {
            "pre": {"backend": "Identity", "next": "to_core"},
            "to_core": {"backend": "Remote", "address": str(address), "instance_num": 3},
        }
    )
    with front:
        requests = [{"data": index} for index in range(50)]
        front(requests)
        assert [request["result"] for request in requests] == [2 * i for i in range(50)]
        bad = {"data": b"bad"}
        with pytest.raises(InvalidInputError, match="a bad input"):
            front(bad)
    figures = served.figures()
    assert figures.clients_total == 1  # three instances, one connection
    assert figures.intake_batches < 50  # the front's batches, not its requests


def test_a_failed_attach_and_a_close_after_the_server_left_hold_no_descriptor(address):
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        with pytest.raises(PipelineUnavailableError, match="cannot attach"):
            tp.connect(address)  # nothing listens there
    server = tp.serve(SCALE, address)
    remote = tp.connect(address)
    server.close()
    with pytest.raises(PipelineUnavailableError):
        remote({"data": 1})
    remote.close()
    remote.close()  # twice is harmless
    assert len(os.listdir("/proc/self/fd")) <= before
