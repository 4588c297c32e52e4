"""Opens one Thrift connection to the inference service (buffered transport, accelerated binary)."""

from __future__ import annotations

from dataclasses import dataclass

from thrift.protocol import TBinaryProtocol
from thrift.transport import TSocket, TTransport

from service.gen.inference import InferenceService


@dataclass
class Connection:
    """A connected client and the transport to close when done with it."""

    client: InferenceService.Client
    transport: TTransport.TTransportBase

    def close(self) -> None:
        """Closes the socket; safe to call twice."""
        self.transport.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def connect(host: str, port: int, *, timeout_s: float = 10.0) -> Connection:
    """Connects to ``host:port``; raises ``TTransportException`` when nothing answers there.

    ``timeout_s`` bounds connecting and every later read or write on this connection.
    """
    socket = TSocket.TSocket(host, port)
    socket.setTimeout(timeout_s * 1000.0)
    transport = TTransport.TBufferedTransport(socket)
    protocol = TBinaryProtocol.TBinaryProtocolAccelerated(transport)
    transport.open()
    return Connection(InferenceService.Client(protocol), transport)
