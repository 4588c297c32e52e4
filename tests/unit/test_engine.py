"""The shared model engine: EngineServer and its EngineTensor clients, on the CPU."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import torch

import torchpipe_lite as tp
from torchpipe_lite.backends.base import Backend
from torchpipe_lite.engine import EngineServer, protocol

HWC = (4, 5, 3)
WAIT_S = 10.0
BAD_PIXEL = 255  # ChannelMean refuses an image whose first pixel is this
INVALID_PIXEL = 254  # ... and calls one whose first pixel is this invalid input


@tp.register_backend("ChannelMean")
class ChannelMean(Backend):
    """Each image's per-channel mean; records batch sizes; may hold a batch at a gate."""

    PARAMS = frozenset({"gate"})
    batch_sizes: ClassVar[list[int]] = []
    gate: ClassVar[threading.Event | None] = None
    entered: ClassVar[threading.Event] = threading.Event()

    def forward(self, batch: list[dict[str, Any]]) -> None:
        ChannelMean.batch_sizes.append(len(batch))
        ChannelMean.entered.set()
        if ChannelMean.gate is not None:
            assert ChannelMean.gate.wait(WAIT_S)
        for item in batch:
            pixels = item["data"]
            if int(pixels[0, 0, 0, 0]) == BAD_PIXEL:
                raise ValueError("refused a bad pixel")
            if int(pixels[0, 0, 0, 0]) == INVALID_PIXEL:
                raise tp.InvalidInputError("an invalid pixel")
            if int(pixels[0, 0, 0, 0]) == 7:
                continue  # no result for this one, and no error
            item["result"] = pixels.float().mean(dim=(2, 3))


def _image(value: int) -> torch.Tensor:
    return torch.full((1, HWC[2], HWC[0], HWC[1]), value, dtype=torch.uint8)


def _wait_until(condition, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        pause.wait(0.005)


@pytest.fixture
def engine(tmp_path) -> Iterator[EngineServer]:
    ChannelMean.batch_sizes = []
    ChannelMean.gate = None
    ChannelMean.entered.clear()
    node = tp.load_config(
        {"m": {"backend": "ChannelMean", "max": 3, "batching_timeout": 10_000}}
    ).node("m")
    server = EngineServer(node, tmp_path / "engine.sock", input_hwc=HWC).start()
    ChannelMean.batch_sizes.clear()  # forget the probe
    ChannelMean.entered.clear()
    yield server
    ChannelMean.gate = None
    server.close()


def _client(server: EngineServer, max_batch: int = 3) -> Backend:
    return tp.create_backend("EngineTensor", {"engine": str(server.path), "max": max_batch})


def test_results_come_back_into_each_requests_own_item(engine):
    client = _client(engine)
    items = [{"data": _image(value)} for value in (1, 2, 3)]
    client.forward(items)
    assert [item["result"].tolist() for item in items] == [[[v, v, v]] for v in (1.0, 2.0, 3.0)]
    assert engine.layout.result_values == HWC[2]
    assert client.max() == 3


def test_requests_of_several_clients_form_one_batch(engine):
    ChannelMean.gate = threading.Event()
    clients = [_client(engine, max_batch=1) for _ in range(4)]
    results: dict[int, Any] = {}

    def call(index: int) -> None:
        item = {"data": _image(10 + index)}
        clients[index].forward([item])
        results[index] = item["result"]

    first = threading.Thread(target=call, args=(0,))
    first.start()
    assert ChannelMean.entered.wait(WAIT_S)  # the one instance is busy with client 0
    others = [threading.Thread(target=call, args=(index,)) for index in (1, 2, 3)]
    for thread in others:
        thread.start()
    _wait_until(lambda: engine.figures().queued == 3)
    ChannelMean.gate.set()
    for thread in [first, *others]:
        thread.join(WAIT_S)
    # Three processes' worth of clients, one batch: the engine's reason to exist.
    assert ChannelMean.batch_sizes == [1, 3]
    assert {index: results[index].tolist() for index in results} == {
        index: [[10.0 + index] * 3] for index in range(4)
    }
    assert engine.figures().mean_batch == 2.0


def test_a_failing_request_fails_alone_and_the_engine_goes_on(engine):
    client = _client(engine)
    with pytest.raises(tp.BackendError, match="refused a bad pixel"):
        client.forward([{"data": _image(1)}, {"data": _image(BAD_PIXEL)}])
    # The engine ran the batch, then each request alone: only the bad one failed.
    assert ChannelMean.batch_sizes == [2, 1, 1]
    assert engine.figures().failed == 1
    item = {"data": _image(4)}
    client.forward([item])
    assert item["result"].tolist() == [[4.0, 4.0, 4.0]]


def test_a_request_error_raised_in_the_engine_reaches_the_client_as_its_own_type(engine):
    client = _client(engine)
    with pytest.raises(tp.InvalidInputError, match="an invalid pixel") as raised:
        client.forward([{"data": _image(INVALID_PIXEL)}])
    assert type(raised.value) is tp.InvalidInputError


@pytest.mark.parametrize(
    "error",
    [
        tp.BackendError("b"),
        tp.InvalidInputError("i"),
        tp.OverloadedError("o"),
        tp.RequestTimeoutError("t"),
        tp.errors.RequestCancelledError("c"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_every_request_error_type_survives_the_wire(error):
    status = protocol.status_for(error)
    assert status not in (protocol.Status.OK, protocol.Status.NO_RESULT)
    assert type(protocol.error_for(status, protocol.failure_text(error))) is type(error)


def test_any_other_exception_arrives_as_a_backend_error_naming_its_type():
    error = RuntimeError("cuda out of memory")
    status = protocol.status_for(error)
    arrived = protocol.error_for(status, protocol.failure_text(error))
    assert type(arrived) is tp.BackendError
    assert "RuntimeError: cuda out of memory" in str(arrived)


def test_a_request_without_result_ends_without_error(engine):
    client = _client(engine)
    items = [{"data": _image(7)}, {"data": _image(8)}]
    client.forward(items)
    assert "result" not in items[0]
    assert items[1]["result"].tolist() == [[8.0, 8.0, 8.0]]


def test_bad_input_is_refused_before_it_reaches_the_engine(engine):
    client = _client(engine)
    wrong_shape = torch.zeros((1, 3, 5, 4), dtype=torch.uint8)
    with pytest.raises(tp.InvalidInputError, match="expected a 1x3x4x5 uint8"):
        client.forward([{"data": wrong_shape}])
    with pytest.raises(tp.InvalidInputError):
        client.forward([{"data": _image(1).float()}])
    with pytest.raises(tp.InvalidInputError):
        client.forward([{"data": b"bytes"}])
    assert ChannelMean.batch_sizes == []


def test_a_client_that_breaks_the_protocol_is_dropped_and_others_are_not(engine):
    good = _client(engine)
    rogue = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    rogue.settimeout(WAIT_S)
    rogue.connect(str(engine.path))
    protocol.recv_exact(rogue, protocol.HELLO.size)
    rogue.sendall(protocol.ATTACH.pack(protocol.MAGIC, 1))  # no memory passed with it
    assert rogue.recv(16) == b""  # the engine hung up
    rogue.close()
    item = {"data": _image(5)}
    good.forward([item])
    assert item["result"].tolist() == [[5.0, 5.0, 5.0]]


def test_a_slot_out_of_range_ends_that_connection(engine):
    client = _client(engine, max_batch=1)
    client._sock.sendall(protocol.SUBMIT.pack(5))  # slot 5 of 1
    assert client._sock.recv(16) == b""
    _wait_until(lambda: engine.figures().connections_open == 0)


def test_when_the_engine_is_gone_the_client_says_so(engine):
    client = _client(engine)
    engine.close()
    for _ in range(2):
        with pytest.raises(tp.BackendError, match="is gone"):
            client.forward([{"data": _image(1)}])


def test_a_client_max_below_one_is_a_config_error(engine):
    with pytest.raises(tp.ConfigError, match="max"):
        tp.create_backend("EngineTensor", {"engine": str(engine.path), "max": 0})


def test_an_engine_that_cannot_be_reached_is_an_init_error(tmp_path):
    with pytest.raises(ConnectionError, match="cannot reach the model engine"):
        tp.create_backend("EngineTensor", {"engine": str(tmp_path / "nothing.sock")})


def test_a_pipeline_node_runs_in_the_engine(engine):
    with tp.pipe({"m": {"backend": "EngineTensor", "engine": str(engine.path)}}) as pipeline:
        request = {"data": _image(9)}
        pipeline(request)
    assert request["result"].tolist() == [[9.0, 9.0, 9.0]]


def test_an_engine_whose_model_fails_to_load_raises_at_start(tmp_path):
    node = tp.load_config({"m": {"backend": "Fail"}}).node("m")
    with pytest.raises(tp.errors.BackendInitError, match="refused"):
        EngineServer(node, tmp_path / "engine.sock", input_hwc=HWC).start()
    assert not (tmp_path / "engine.sock").exists()


def test_an_engine_that_cannot_listen_raises_and_stops_its_instances(tmp_path):
    node = tp.load_config({"m": {"backend": "ChannelMean", "instance_num": 2}}).node("m")
    server = EngineServer(node, tmp_path / ("x" * 120), input_hwc=HWC)  # too long for AF_UNIX
    with pytest.raises(OSError):
        server.start()
    assert not any(thread.is_alive() for thread in server._stage._threads)
