"""The Thrift server's graceful stop, with a handler the test holds mid-request."""

from __future__ import annotations

import socket
import threading
from collections.abc import Sequence

import torch

from clients.connection import connect
from service.gen.inference.ttypes import InferenceParams
from service.handler import ClassifierHandler
from service.server import ThriftServer
from tests.integration.conftest import WAIT_S


class GatedHandler(ClassifierHandler):
    """Every classification waits for the test's ``release``; ``entered`` counts arrivals."""

    handler_name = "gated"

    def __init__(self) -> None:
        super().__init__(device="cpu")
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()

    def classify(self, images: Sequence[bytes]) -> list[torch.Tensor]:
        self.entered.release()
        assert self.release.wait(WAIT_S), "the test never released the handler"
        return [torch.arange(10, dtype=torch.float32) for _ in images]

    def node_figures(self) -> list:
        return []


def test_stop_refuses_new_connections_and_answers_in_flight_requests():
    handler = GatedHandler()
    server = ThriftServer(handler, host="127.0.0.1", port=0, threads=4)
    port = server.listen()
    drained: list[bool] = []
    serving = threading.Thread(target=lambda: drained.append(server.serve()), daemon=True)
    serving.start()

    answers: dict[int, str] = {}

    def call(index: int) -> None:
        with connect("127.0.0.1", port, timeout_s=WAIT_S) as connection:
            result = connection.client.infer_batch(InferenceParams(str(index), b"image"))
            answers[index] = result.label

    idle = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    callers = [threading.Thread(target=call, args=(i,)) for i in range(3)]
    for caller in callers:
        caller.start()
    for _ in callers:
        assert handler.entered.acquire(timeout=WAIT_S), "a request never reached the handler"

    server.stop()
    assert server.stopped_accepting.wait(WAIT_S)
    try:
        socket.create_connection(("127.0.0.1", port), timeout=WAIT_S).close()
        refused = False
    except ConnectionRefusedError:
        refused = True
    assert refused, "the server still accepts connections after stop()"
    assert serving.is_alive(), "serve() returned while requests were in flight"

    handler.release.set()
    for caller in callers:
        caller.join(WAIT_S)
    serving.join(WAIT_S)
    assert answers == {0: "9 ostrich", 1: "9 ostrich", 2: "9 ostrich"}
    assert drained == [True]
    assert idle.recv(16) == b"", "the idle connection should be closed by the stop"
    idle.close()
