"""Hostile bytes at the Thrift layer: absurd declared lengths, cut-off and foreign messages.

Raw bytes on a socket, so nothing a well-behaved client library would refuse to send is out of
reach. Every case must leave the server answering other clients; declared lengths must be
refused before anything is allocated (a slow read would hide that, so the stall timeout here
is long and the refusal must come fast).
"""

from __future__ import annotations

import logging
import socket
import struct
import time

import psutil
import pytest
from thrift.protocol.TBinaryProtocol import TBinaryProtocol
from thrift.Thrift import TApplicationException, TMessageType, TType
from thrift.transport.TSocket import TSocket
from thrift.transport.TTransport import TBufferedTransport

from service.gen.inference.ttypes import InferenceParams
from service.rpc.server import TransportLimits
from tests.support.live_service import WAIT_S, live_service
from tests.support.thrift_messages import raw_call

MAX_MESSAGE_BYTES = 1 << 20
#: A refusal by the length checks takes milliseconds; waiting for bytes would take IO_TIMEOUT_S.
REFUSAL_S = 5.0
IO_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def server(resnet18_onnx):
    limits = TransportLimits(
        max_message_bytes=MAX_MESSAGE_BYTES, max_container_items=64, message_timeout_s=IO_TIMEOUT_S
    )
    with live_service("baseline", resnet18_onnx, transport_limits=limits) as service:
        yield service


def params_with_data_length(declared: int):
    def write(protocol) -> None:
        protocol.writeFieldBegin("params", TType.STRUCT, 1)
        protocol.writeStructBegin("InferenceParams")
        protocol.writeFieldBegin("uuid", TType.STRING, 1)
        protocol.writeString("u")
        protocol.writeFieldBegin("data", TType.STRING, 2)
        protocol.writeI32(declared)  # the length prefix alone; the bytes never follow

    return write


def list_of(declared: int):
    def write(protocol) -> None:
        protocol.writeFieldBegin("params", TType.LIST, 1)
        protocol.writeListBegin(TType.STRUCT, declared)

    return write


def complete_call(photo: bytes) -> bytes:
    def write(protocol) -> None:
        protocol.writeFieldBegin("params", TType.STRUCT, 1)
        InferenceParams(uuid="whole", data=photo).write(protocol)
        protocol.writeFieldEnd()
        protocol.writeFieldStop()

    return raw_call("infer_batch", write)


def assert_cut_off(port: int, payload: bytes, *, half_close: bool = False) -> float:
    """Send ``payload``; the server must close the connection without answering. Returns the
    seconds that took."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        started_s = time.monotonic()
        sock.sendall(payload)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        try:
            answer = sock.recv(4096)
        except ConnectionResetError:
            answer = b""
        took_s = time.monotonic() - started_s
    assert answer == b"", f"expected the connection closed unanswered, got {answer[:40]!r}"
    return took_s


def assert_still_serving(service, photo: bytes) -> None:
    with service.connect() as connection:
        result = connection.client.infer_batch(InferenceParams(uuid="after", data=photo))
    assert result.label


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(raw_call("infer_batch", params_with_data_length(2**31 - 1)), id="2GB"),
        pytest.param(raw_call("infer_batch", params_with_data_length(-5)), id="negative"),
        pytest.param(raw_call("infer_many", list_of(10**9)), id="list-of-1e9"),
        pytest.param(raw_call("infer_many", list_of(65)), id="list-over-limit"),
        pytest.param(b"\x80\x01\x00\x01" + b"\x7f\xff\xff\xff" + b"x" * 8, id="2GB-method-name"),
    ],
)
def test_declared_lengths_over_the_limits_are_refused_at_once(server, photos, payload):
    rss = psutil.Process().memory_info().rss
    took_s = assert_cut_off(server.port, payload)
    assert took_s < REFUSAL_S, f"took {took_s:.1f} s: waited for the bytes instead of refusing"
    assert psutil.Process().memory_info().rss - rss < 64 << 20, "allocated the declared size"
    assert_still_serving(server, photos["coins"])


def test_client_leaving_mid_request_harms_nothing(server, photos):
    whole = complete_call(photos["chelsea"])
    for cut in (3, 20, len(whole) // 2, len(whole) - 1):
        # Half a message, then the client closes its side: the server sees the end of input.
        assert_cut_off(server.port, whole[:cut], half_close=True)
        # Half a message, then the client vanishes without a word.
        with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_S) as sock:
            sock.sendall(whole[:cut])
    assert_still_serving(server, photos["coins"])


def test_a_client_that_hangs_up_before_its_answer_is_not_an_error(server, photos, caplog):
    """A load tester stopped with Ctrl-C leaves calls whose answers nobody reads: routine, so
    the server drops them (unrun if they still wait) and logs nothing about it."""
    with server.connect() as connection:
        before = connection.client.stats().connections
    with caplog.at_level(logging.INFO, logger="service"):
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_S)
            sock.sendall(complete_call(photos["chelsea"]))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # a reset, before the answer
        deadline = time.monotonic() + WAIT_S
        with server.connect() as connection:
            while connection.client.stats().connections.replies_undelivered < (
                before.replies_undelivered + 3
            ):
                assert time.monotonic() < deadline, "the abandoned calls never ended"
            after = connection.client.stats().connections
    # Seen going while they ran (or, if one had finished first, its answer found no one).
    assert after.calls_abandoned - before.calls_abandoned <= 3
    assert_still_serving(server, photos["coins"])
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert noisy == [], [r.getMessage() for r in noisy]


def test_framed_transport_client_is_cut_off(server, photos):
    """A client speaking TFramedTransport sends a 4-byte frame length first: not a message."""
    whole = complete_call(photos["chelsea"])
    framed = len(whole).to_bytes(4, "big") + whole
    # Refused at the first 4 bytes (no version word), not after a stall of IO_TIMEOUT_S.
    assert assert_cut_off(server.port, framed[: len(framed) // 2]) < REFUSAL_S
    assert_still_serving(server, photos["coins"])


def test_unknown_method_gets_an_application_error(server, photos):
    sock = TSocket("127.0.0.1", server.port)
    sock.setTimeout(WAIT_S * 1000)
    transport = TBufferedTransport(sock)
    protocol = TBinaryProtocol(transport)
    transport.open()
    try:
        transport.write(raw_call("no_such_method", lambda p: p.writeFieldStop()))
        transport.flush()
        name, kind, _seqid = protocol.readMessageBegin()
        assert (name, kind) == ("no_such_method", TMessageType.EXCEPTION)
        error = TApplicationException()
        error.read(protocol)
        protocol.readMessageEnd()
        assert error.type == TApplicationException.UNKNOWN_METHOD
        # The same connection goes on serving known methods.
        transport.write(complete_call(photos["coins"]))
        transport.flush()
        assert protocol.readMessageBegin()[1] == TMessageType.REPLY
    finally:
        transport.close()
    assert_still_serving(server, photos["coins"])
