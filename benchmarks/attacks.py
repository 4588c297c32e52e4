"""Hostile clients and faults, as functions: each runs one attack on a live server and returns
what a good client saw meanwhile, what the attacker saw, and how soon the server recovered.

These are the connection-level attacks and the helpers every attack module shares; the attacks
through calls are ``benchmarks.call_attacks``, those on shared resources
``benchmarks.resource_attacks``, on the wire format ``benchmarks.protocol_attacks``.
``benchmarks.hostile_clients`` runs them all against ``python -m service`` and prints the
figures; ``tests/service/test_hostile_clients.py`` runs them small and asserts bounds.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

from thrift.protocol import TBinaryProtocol
from thrift.transport import TTransport

from service.gen.inference import InferenceService
from service.gen.inference.ttypes import ErrorCode, InferenceError, InferenceParams
from service.thrift_client import connect

#: How long a probe or an attacker waits for anything before calling it a hang.
WAIT_S = 30.0


def encoded_call(data: bytes, uuid: str = "attack") -> bytes:
    """The bytes of one ``infer_batch`` call, as a client sends them."""
    buffer = TTransport.TMemoryBuffer()
    client = InferenceService.Client(TBinaryProtocol.TBinaryProtocol(buffer))
    client.send_infer_batch(InferenceParams(uuid=uuid, data=data))
    return buffer.getvalue()


def good_call_s(host: str, port: int, photo: bytes, timeout_s: float = WAIT_S) -> float:
    """Seconds a well-behaved client takes to connect and get one image classified."""
    started_s = time.monotonic()
    with connect(host, port, timeout_s=timeout_s) as connection:
        connection.client.infer_batch(InferenceParams(uuid="good", data=photo))
    return time.monotonic() - started_s


def served_again_s(host: str, port: int, photo: bytes, *, retry_s: float = 0.01) -> float:
    """Seconds until a client that retries OVERLOADED (as it may: it is retryable) gets one
    image classified: how long the server takes to recover after an attack."""
    started_s = time.monotonic()
    while True:
        try:
            good_call_s(host, port, photo)
            return time.monotonic() - started_s
        except InferenceError as error:
            if error.code != ErrorCode.OVERLOADED or time.monotonic() - started_s > WAIT_S:
                raise
        time.sleep(retry_s)


def closed_within_s(sock: socket.socket, timeout_s: float = WAIT_S) -> float | None:
    """Seconds until the server closes ``sock`` (reads nothing more), or None if it did not."""
    started_s = time.monotonic()
    sock.settimeout(timeout_s)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return None
    except OSError:
        pass  # a reset is a close too
    return time.monotonic() - started_s


def settle(host: str, port: int) -> None:
    """Wait until the server has closed the connections of the attack before (only the one
    asking is open, nothing is in flight), so that the next attack starts from a clean slate."""
    deadline_s = time.monotonic() + WAIT_S
    with connect(host, port) as connection:
        while True:
            stats = connection.client.stats()
            open_now = stats.connections.open if stats.connections else 1
            in_flight = stats.admission.images_in_flight if stats.admission else 0
            if open_now <= 1 and not in_flight:
                return
            if time.monotonic() > deadline_s:
                raise TimeoutError(f"the server still holds {open_now} connections")
            time.sleep(0.05)


def open_connections(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` connections to the server, each sending nothing yet."""
    return [socket.create_connection((host, port), timeout=WAIT_S) for _ in range(count)]


def close_all(sockets: list[socket.socket]) -> None:
    """Close every one of ``sockets``."""
    for sock in sockets:
        sock.close()


@dataclass
class HeldConnections:
    """Connections that occupy the server without a whole request (idle, half a message, or
    one byte at a time): how long a good client took meanwhile, and how soon they were cut."""

    attack: str
    connections: int
    good_call_s: float
    #: From the attack's first byte until the server had closed every one of them (None:
    #: some connection was still open after ``WAIT_S``).
    all_closed_after_s: float | None
    closed: int


def idle_connections(host: str, port: int, photo: bytes, count: int) -> HeldConnections:
    """``count`` connections that send nothing."""
    return _held(host, port, photo, count, "idle", lambda sock: None)


def half_messages(host: str, port: int, photo: bytes, count: int) -> HeldConnections:
    """``count`` connections that each send half a request and then nothing."""
    whole = encoded_call(photo)
    half = whole[: len(whole) // 2]
    return _held(host, port, photo, count, "half message", lambda sock: sock.sendall(half))


def _held(host, port, photo, count, attack, start) -> HeldConnections:
    started_s = time.monotonic()
    sockets = open_connections(host, port, count)
    try:
        for sock in sockets:
            start(sock)
        good_s = good_call_s(host, port, photo)
        closes = [closed_within_s(sock) for sock in sockets]
    finally:
        close_all(sockets)
    all_closed_s = None if None in closes else time.monotonic() - started_s
    return HeldConnections(attack, count, good_s, all_closed_s, sum(c is not None for c in closes))


def drip_feed(host: str, port: int, photo: bytes, interval_s: float) -> HeldConnections:
    """One connection that sends its request one byte every ``interval_s``."""
    message = encoded_call(photo)
    with socket.create_connection((host, port), timeout=WAIT_S) as sock:
        stop = threading.Event()
        started_s = time.monotonic()

        def drip() -> None:
            for byte in message:
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    return  # cut off
                if stop.wait(interval_s):
                    return

        dripper = threading.Thread(target=drip, daemon=True)
        dripper.start()
        good_s = good_call_s(host, port, photo)
        cut = closed_within_s(sock) is not None
        closed_after_s = time.monotonic() - started_s if cut else None
        stop.set()
        dripper.join(WAIT_S)
    return HeldConnections("drip feed", 1, good_s, closed_after_s, int(cut))


@dataclass
class ConnectionFlood:
    """More connections than the server keeps: how many it closed at once, and whether it
    stayed responsive (CPU it spent meanwhile is for the caller to sample)."""

    opened: int
    refused_at_once: int
    #: From closing the held connections to a good client's answer (it retries while the
    #: server notices the closes and frees their slots).
    good_call_after_s: float


def connection_flood(host: str, port: int, photo: bytes, cap: int, extra: int) -> ConnectionFlood:
    """``cap`` idle connections, then ``extra`` more: those must be closed at accept."""
    held = open_connections(host, port, cap)
    try:
        time.sleep(0.2)  # let the server adopt them before the extra ones arrive
        extras = open_connections(host, port, extra)
        refused = sum(closed_within_s(sock, timeout_s=2.0) is not None for sock in extras)
        close_all(extras)
    finally:
        close_all(held)
    started_s = time.monotonic()
    while True:
        try:
            good_call_s(host, port, photo)
            return ConnectionFlood(cap + extra, refused, time.monotonic() - started_s)
        except (TTransport.TTransportException, OSError):
            if time.monotonic() - started_s > WAIT_S:
                raise
