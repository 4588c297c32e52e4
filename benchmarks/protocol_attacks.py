"""Hostile bytes at the Thrift layer, as functions: nesting that would exhaust a recursive
parser, and calls written back to back on one connection.

Each function runs one attack on a live server and returns what the attacker saw and what a
good client saw right after. ``benchmarks.hostile_clients`` runs them at full size;
``tests/integration/test_rpc_loop_faults.py`` runs them small and asserts the outcome.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

from thrift.protocol.TBinaryProtocol import TBinaryProtocol
from thrift.Thrift import TMessageType, TType
from thrift.transport.TSocket import TSocket
from thrift.transport.TTransport import TBufferedTransport, TMemoryBuffer, TTransportException

from benchmarks.attacks import WAIT_S, closed_within_s
from service.gen.inference import InferenceService
from service.gen.inference.ttypes import InferenceParams
from service.thrift_client import connect

#: The field id of the unknown field the nested attacks carry (no method has one this high).
UNKNOWN_FIELD_ID = 99


def encoded(method: str, *args: Any, seqid: int = 1) -> bytes:
    """The bytes of one call of the IDL's ``method`` with sequence id ``seqid``."""
    buffer = TMemoryBuffer()
    client = InferenceService.Client(TBinaryProtocol(buffer))
    client._seqid = seqid  # the generated client keeps no public way to set it
    getattr(client, f"send_{method}")(*args)
    return buffer.getvalue()


def unknown_method_call(name: str, seqid: int = 1) -> bytes:
    """A call of a method the IDL does not have, with no arguments."""
    buffer = TMemoryBuffer()
    protocol = TBinaryProtocol(buffer)
    protocol.writeMessageBegin(name, TMessageType.CALL, seqid)
    protocol.writeStructBegin("args")
    protocol.writeFieldStop()
    protocol.writeStructEnd()
    protocol.writeMessageEnd()
    return buffer.getvalue()


def nested_value(depth: int, kind: int) -> bytes:
    """A value of ``kind`` (STRUCT, LIST, SET or MAP) nesting ``depth`` of its own kind, one
    inside the other (``depth`` >= 1), as the binary protocol encodes it."""
    if kind == TType.STRUCT:  # a field holding the next struct; each struct ends with STOP
        return struct.pack("!bh", TType.STRUCT, 1) * (depth - 1) + b"\x00" * depth
    if kind in (TType.LIST, TType.SET):  # one element: the next container; the last is empty
        return struct.pack("!bi", kind, 1) * (depth - 1) + struct.pack("!bi", TType.I32, 0)
    if kind == TType.MAP:  # one entry, i32 key 0: its value is the next map
        level = struct.pack("!bbii", TType.I32, TType.MAP, 1, 0)
        return level * (depth - 1) + struct.pack("!bbi", TType.I32, TType.I32, 0)
    raise ValueError(f"not a nesting kind: {kind}")


def nested_call(depth: int, kind: int = TType.LIST, method: str = "ping") -> bytes:
    """A call of ``method`` whose arguments carry one unknown field: ``nested_value``."""
    name = method.encode()
    head = struct.pack("!Ii", 0x80010000 | TMessageType.CALL, len(name)) + name
    field = struct.pack("!bh", kind, UNKNOWN_FIELD_ID) + nested_value(depth, kind)
    return head + struct.pack("!i", 1) + field + b"\x00"


@dataclass
class DeepNesting:
    """One call nesting containers deeper than a recursive parser can follow."""

    kind: str
    depth: int
    message_bytes: int
    #: Seconds until the server closed the connection (None: it did not within ``WAIT_S``).
    closed_after_s: float | None
    answered: bool  # the server answered it (it must not: it is not a valid call)
    #: A new client's ``ping`` right after, in seconds (None: the server no longer answers).
    ping_after_s: float | None


def deep_nesting(
    host: str, port: int, depth: int, kind: int = TType.LIST, wait_s: float = WAIT_S
) -> DeepNesting:
    """Send one ``ping`` carrying an unknown field nested ``depth`` deep, then ping anew."""
    message = nested_call(depth, kind)
    with socket.create_connection((host, port), timeout=wait_s) as sock:
        sock.sendall(message)
        started_s = time.monotonic()
        try:
            first = sock.recv(1)
            answered = bool(first)
            closed = not first or closed_within_s(sock, wait_s) is not None
        except TimeoutError:  # neither answered nor closed: the server has stopped reading
            answered = closed = False
        except OSError:  # a reset is a close
            answered, closed = False, True
        closed_after_s = time.monotonic() - started_s if closed else None
    name = TType._VALUES_TO_NAMES[kind]
    return DeepNesting(name, depth, len(message), closed_after_s, answered, ping_s(host, port))


def ping_s(host: str, port: int, timeout_s: float = 5.0) -> float | None:
    """Seconds a new client takes to connect and get a ``ping`` answered; None if it is not."""
    started_s = time.monotonic()
    try:
        with connect(host, port, timeout_s=timeout_s) as connection:
            connection.client.ping()
    except (TTransportException, OSError):
        return None
    return time.monotonic() - started_s


@dataclass
class BackToBack:
    """Calls written in one go on one connection: which were answered, in what order."""

    attack: str
    calls: int
    #: (method name, message type, sequence id) of each answer, in the order they came.
    answers: list[tuple[str, int, int]]
    #: From the write to the last answer read (or to giving up on the rest).
    took_s: float

    @property
    def in_order(self) -> bool:
        """Every call was answered, each under its own sequence id, in the order sent."""
        return [seqid for _, _, seqid in self.answers] == list(range(1, self.calls + 1))


def back_to_back(
    host: str, port: int, attack: str, messages: list[bytes], wait_s: float = WAIT_S
) -> BackToBack:
    """Write ``messages`` (their sequence ids 1, 2, ... in order) in one ``sendall`` and read
    answers until all have come or none comes for ``wait_s``."""
    sock = TSocket(host, port)
    sock.setTimeout(wait_s * 1000)
    transport = TBufferedTransport(sock)
    protocol = TBinaryProtocol(transport)
    transport.open()
    answers: list[tuple[str, int, int]] = []
    started_s = time.monotonic()
    try:
        sock.handle.sendall(b"".join(messages))
        while len(answers) < len(messages):
            try:
                name, kind, seqid = protocol.readMessageBegin()
            except (TTransportException, OSError):
                break  # no more answers within wait_s, or the connection closed
            protocol.skip(TType.STRUCT)
            protocol.readMessageEnd()
            answers.append((name, kind, seqid))
    finally:
        transport.close()
    return BackToBack(attack, len(messages), answers, time.monotonic() - started_s)


def two_infer_batches(host: str, port: int, photo: bytes, wait_s: float = WAIT_S) -> BackToBack:
    """Two ``infer_batch`` calls in one write."""
    calls = [encoded("infer_batch", InferenceParams(str(i), photo), seqid=i) for i in (1, 2)]
    return back_to_back(host, port, "two infer_batch", calls, wait_s)


def unknown_then_ping(host: str, port: int, wait_s: float = WAIT_S) -> BackToBack:
    """A call of a method that does not exist, then a ``ping``, in one write."""
    calls = [unknown_method_call("nosuch", seqid=1), encoded("ping", seqid=2)]
    return back_to_back(host, port, "nosuch then ping", calls, wait_s)


def many_pings(host: str, port: int, count: int, wait_s: float = WAIT_S) -> BackToBack:
    """``count`` pings in one write."""
    calls = [encoded("ping", seqid=i) for i in range(1, count + 1)]
    return back_to_back(host, port, f"{count} pings", calls, wait_s)
