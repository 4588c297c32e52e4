"""A light closed-loop load for the interpreter budget: raw pre-encoded calls, one thread.

Thrift's client library costs tens of microseconds of Python per call; on a 2-core machine
that would compete with the server being measured. Here every call is encoded once, up
front, and a selector loop keeps ``clients`` connections each with one call in flight,
checking only that each reply is a whole REPLY message.
"""

from __future__ import annotations

import selectors
import socket
import time
from dataclasses import dataclass

from thrift.protocol.TBinaryProtocol import TBinaryProtocol
from thrift.Thrift import TMessageType
from thrift.transport.TTransport import TMemoryBuffer

from service.gen.inference.InferenceService import infer_batch_args
from service.gen.inference.ttypes import InferenceParams
from service.rpc.message_scan import ScanLimits, scan_message
from service.thrift_client import connect

_LIMITS = ScanLimits(max_message_bytes=1 << 20, max_container_items=1 << 16)


@dataclass
class Window:
    """What one ``run_for`` saw."""

    seconds: float
    replies: int
    errors: int


def encode_call(image: bytes, uuid: str) -> bytes:
    """An ``infer_batch`` call message carrying ``image``."""
    buffer = TMemoryBuffer()
    protocol = TBinaryProtocol(buffer)
    protocol.writeMessageBegin("infer_batch", TMessageType.CALL, 1)
    infer_batch_args(params=InferenceParams(uuid=uuid, data=image)).write(protocol)
    protocol.writeMessageEnd()
    return buffer.getvalue()


class RawLoad:
    """``clients`` connections to ``host:port``, each sending the next image once answered."""

    def __init__(self, host: str, port: int, images: list[bytes], *, clients: int):
        self.host, self.port = host, port
        self.calls = [encode_call(image, f"budget-{index}") for index, image in enumerate(images)]
        self.selector = selectors.DefaultSelector()
        self.sockets = []
        for index in range(clients):
            sock = socket.create_connection((host, port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sockets.append(sock)
            self.selector.register(sock, selectors.EVENT_READ, [index * 7, b""])
        self.started = False

    def _send(self, sock: socket.socket, state: list) -> None:
        state[0] += 1
        sock.sendall(self.calls[state[0] % len(self.calls)])

    def run_for(self, seconds: float) -> Window:
        """Keep every connection busy for ``seconds``; what was answered meanwhile."""
        if not self.started:
            for key in self.selector.get_map().values():
                self._send(key.fileobj, key.data)
            self.started = True
        replies = errors = 0
        began = time.perf_counter()
        end = began + seconds
        while time.perf_counter() < end:
            for key, _ in self.selector.select(0.5):
                sock, state = key.fileobj, key.data
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("the server closed a load connection")
                state[1] += data
                found = scan_message(state[1], _LIMITS)
                if isinstance(found, int):
                    continue
                head, size = found
                # An InferenceResult reply's struct opens with field 0 (success), type STRUCT.
                ok = head.message_type == TMessageType.REPLY and state[1][head.body_offset] == 12
                if ok and state[1][head.body_offset + 1 : head.body_offset + 3] == b"\0\0":
                    replies += 1
                else:
                    errors += 1
                state[1] = state[1][size:]
                self._send(sock, state)
        return Window(time.perf_counter() - began, replies, errors)

    def server_stats(self) -> dict[str, float]:
        """Each node's mean batch size so far, from the server's ``stats()``."""
        with connect(self.host, self.port) as connection:
            stats = connection.client.stats()
        return {
            node.node: round(node.inferences / node.executions, 2) if node.executions else 0.0
            for node in stats.nodes
        }

    def close(self) -> None:
        """Close every connection (after draining what is in flight, briefly)."""
        for sock in self.sockets:
            sock.close()
        self.selector.close()
