"""The Thrift server's graceful stop, with a handler the test holds mid-request."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

from service.gen.inference.ttypes import InferenceParams
from service.rpc.server import ThriftServer
from service.thrift_client import connect
from tests.support.live_service import WAIT_S
from tests.support.service_fakes import GatedHandler


def test_stop_refuses_new_connections_and_answers_in_flight_requests():
    handler = GatedHandler()
    server = ThriftServer(handler, host="127.0.0.1", port=0)
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


def test_a_signal_delivered_to_another_thread_wakes_the_accept_loop():
    """The kernel may hand SIGTERM to any thread; the server's main thread, blocked waiting for
    connections, must still run the handler at once (not at the next connection)."""
    server = ThriftServer(GatedHandler(threads=1), host="127.0.0.1", port=0)
    port = server.listen()
    handled = threading.Event()

    def on_signal(_signum, _frame):
        handled.set()
        server.stop()

    def deliver_to_this_thread():
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

    def unblock_if_stuck():
        # Without the wake-up, only a connection would wake serve(): make one late, so a
        # failing run ends instead of hanging, and the assertion below tells why.
        if not handled.wait(WAIT_S):
            socket.create_connection(("127.0.0.1", port)).close()

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        sender = threading.Timer(0.2, deliver_to_this_thread)  # after serve() is polling
        watchdog = threading.Thread(target=unblock_if_stuck, daemon=True)
        sender.start()
        watchdog.start()
        began = time.monotonic()
        server.serve(drain_timeout_s=WAIT_S)  # on the main thread, as python -m service runs it
        took_s = time.monotonic() - began
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert handled.is_set()
    assert took_s < WAIT_S / 2, f"serve() noticed the signal only after {took_s:.1f} s"


def test_a_worker_serves_dealt_connections_and_stops_when_its_supervisor_is_gone():
    from service.processes.connection_dealer import ConnectionDealer

    dealer = ConnectionDealer("127.0.0.1", 0, 1)
    handoff = socket.socket(fileno=os.dup(dealer.worker_fd(0)))  # what the worker inherits
    dealer.forget_worker_ends()
    dealer.start()
    handler = GatedHandler(threads=2)
    handler.release.set()
    server = ThriftServer(handler, host="127.0.0.1", port=dealer.port, handoff=handoff)
    assert server.listen() == dealer.port  # no socket of its own: the supervisor's port
    drained: list[bool] = []
    serving = threading.Thread(target=lambda: drained.append(server.serve()), daemon=True)
    serving.start()
    try:
        for index in range(3):  # three connections, all dealt to the one worker
            with connect("127.0.0.1", dealer.port, timeout_s=WAIT_S) as connection:
                result = connection.client.infer_batch(InferenceParams(str(index), b"image"))
                assert result.label == "9 ostrich"
        assert dealer.dealt == [3]
    finally:
        dealer.close()  # the supervisor goes away: the worker stops taking connections
    serving.join(WAIT_S)
    assert not serving.is_alive() and drained == [True]
