"""Hostile bytes at the Thrift layer, as functions: nesting that would exhaust a recursive
parser, and calls written back to back on one connection.

Each function runs one attack on a live server and returns what the attacker saw and what a
good client saw right after. ``benchmarks.hostile_clients`` runs them at full size;
``tests/service/rpc/test_rpc_loop_faults.py`` runs them small and asserts the outcome.
One of them runs alone against ``python -m service`` at every default, with the server's CPU
time during it:

    python -m benchmarks.protocol_attacks --model models/resnet18.onnx [--megabytes 16]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import logging
import multiprocessing
import shlex
import socket
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from thrift.protocol.TBinaryProtocol import TBinaryProtocol
from thrift.Thrift import TMessageType, TType
from thrift.transport.TSocket import TSocket
from thrift.transport.TTransport import TBufferedTransport, TMemoryBuffer, TTransportException

from benchmarks.attacks import WAIT_S, closed_within_s, settle
from benchmarks.report import write_json
from benchmarks.run_record import git_commit
from service.gen.inference import InferenceService
from service.gen.inference.ttypes import InferenceParams
from service.server_process import REPO_ROOT, ServerProcess, free_port, service_command
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
        started_s = time.monotonic()
        try:
            # The server may refuse the message from its first bytes, while the rest is still
            # being sent: the reset then reaches sendall.
            sock.sendall(message)
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
    host: str,
    port: int,
    attack: str,
    messages: list[bytes],
    wait_s: float = WAIT_S,
    writes: list[bytes] | None = None,
) -> BackToBack:
    """Write ``messages`` (their sequence ids 1, 2, ... in order) in one ``sendall`` (or as
    ``writes``, the same bytes cut otherwise, one ``sendall`` each, not coalesced) and read
    answers until all have come or none comes for ``wait_s``."""
    sock = TSocket(host, port)
    sock.setTimeout(wait_s * 1000)
    transport = TBufferedTransport(sock)
    protocol = TBinaryProtocol(transport)
    transport.open()
    answers: list[tuple[str, int, int]] = []
    started_s = time.monotonic()
    try:
        if writes is None:
            writes = [b"".join(messages)]
        if b"".join(writes) != b"".join(messages):
            raise ValueError("the writes must carry the messages' bytes, in order")
        sock.handle.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in writes:
            sock.handle.sendall(piece)
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


def small_items_call(message_bytes: int, items_per_list: int, method: str = "ping") -> bytes:
    """A call of ``method`` of about ``message_bytes`` whose arguments carry one unknown field:
    a list of lists of ``items_per_list`` empty structs each, one byte an item, every list
    within the server's item limit. Cheap to send, and each item is one step of a scanner's
    walk: a scan that restarts on every read does work quadratic in the message's size."""
    inner = struct.pack("!bi", TType.STRUCT, items_per_list) + b"\x00" * items_per_list
    lists = max(1, message_bytes // len(inner))
    value = struct.pack("!bi", TType.LIST, lists) + inner * lists
    name = method.encode()
    head = struct.pack("!Ii", 0x80010000 | TMessageType.CALL, len(name)) + name
    field = struct.pack("!bh", TType.LIST, UNKNOWN_FIELD_ID) + value
    return head + struct.pack("!i", 1) + field + b"\x00"


#: Between two pings of ``small_items_in_pieces``'s second client.
PING_EVERY_S = 0.05


@dataclass
class SmallItems:
    """One call of millions of one-byte items written in small pieces, and pings meanwhile."""

    message_bytes: int
    items: int
    chunk_bytes: int
    #: Bytes the server took before the attacker gave up or was cut off (all: the message).
    sent_bytes: int
    send_s: float
    #: Seconds from the last byte sent to the answer (None: not answered within ``wait_s``).
    answered_after_s: float | None
    #: A second client's pings, each on a new connection, from before the first byte until
    #: the answer (or the end).
    pings: int
    pings_failed: int
    ping_p50_s: float | None
    ping_max_s: float | None


def small_items_in_pieces(
    host: str,
    port: int,
    message_bytes: int,
    *,
    chunk_bytes: int = 1024,
    items_per_list: int = 16 * 1024,
    wait_s: float = WAIT_S,
) -> SmallItems:
    """Send ``small_items_call(message_bytes)`` ``chunk_bytes`` at a time (no delay, no
    coalescing by the client: each piece is its own segment), while another client pings from
    a process of its own (a thread of this one would wait on the sender for the interpreter
    lock and measure that, not the server)."""
    message = small_items_call(message_bytes, items_per_list)
    items = (len(message) // (items_per_list + 5)) * items_per_list
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    pinger = context.Process(
        target=_ping_until_told, args=(host, port, theirs, wait_s), name="small-items-pinger"
    )
    pinger.start()
    if not ours.poll(wait_s):  # its first ping: it is running
        pinger.kill()
        raise RuntimeError("the pinging process did not start")
    ours.recv()
    sent = 0
    answered_after_s = None
    with socket.create_connection((host, port), timeout=wait_s) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started_s = time.monotonic()
        try:
            with memoryview(message) as view:
                while sent < len(message):
                    sent += sock.send(view[sent : sent + chunk_bytes])
        except OSError:  # cut off, or the server stopped reading for wait_s
            pass
        send_s = time.monotonic() - started_s
        if sent == len(message):
            try:
                answered = bool(sock.recv(1))
            except OSError:
                answered = False
            if answered:
                answered_after_s = time.monotonic() - started_s - send_s
    ours.send("stop")
    pinged = ours.recv() if ours.poll(wait_s + 1.0) else []
    pinger.join(wait_s)
    served = sorted(s for s in pinged if s is not None)
    return SmallItems(
        message_bytes=len(message),
        items=items,
        chunk_bytes=chunk_bytes,
        sent_bytes=sent,
        send_s=send_s,
        answered_after_s=answered_after_s,
        pings=len(pinged),
        pings_failed=len(pinged) - len(served),
        ping_p50_s=served[len(served) // 2] if served else None,
        ping_max_s=served[-1] if served else None,
    )


def _ping_until_told(host: str, port: int, pipe: Any, timeout_s: float) -> None:
    """Ping every ``PING_EVERY_S`` until ``pipe`` says stop; send back the seconds of each
    ping made after the first (which only tells the caller that pinging has begun)."""
    pipe.send(ping_s(host, port, timeout_s=timeout_s))
    pinged: list[float | None] = []
    while not pipe.poll(PING_EVERY_S):
        pinged.append(ping_s(host, port, timeout_s=timeout_s))
    pipe.recv()
    pipe.send(pinged)


def main(argv: list[str] | None = None) -> int:
    """Run ``small_items_in_pieces`` against a fresh server; print and write its figures."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m benchmarks.protocol_attacks")
    parser.add_argument("--handler", choices=("pipelined", "baseline"), default="pipelined")
    parser.add_argument("--model", type=Path, default=None, help="model file (the config's)")
    parser.add_argument("--megabytes", type=float, default=16.0, help="the message's size")
    parser.add_argument("--chunk-bytes", type=int, default=1024, help="bytes per send")
    parser.add_argument("--results-dir", type=Path, default=REPO_ROOT / "runs")
    args = parser.parse_args(argv)
    host, port = "127.0.0.1", free_port()
    command = service_command(args.handler, port, model=args.model)
    log_path = args.results_dir / "protocol-attacks-server.log"
    with ServerProcess(command, host=host, port=port, log_path=log_path) as server:
        server.start()
        process = psutil.Process(server.pid)
        settle(host, port)
        cpu_before_s = sum(process.cpu_times()[:2])
        started_s = time.monotonic()
        result = small_items_in_pieces(
            host, port, int(args.megabytes * (1 << 20)), chunk_bytes=args.chunk_bytes
        )
        figures = {
            **dataclasses.asdict(result),
            "wall_s": time.monotonic() - started_s,
            "server_cpu_s": sum(process.cpu_times()[:2]) - cpu_before_s,
            "ping_after_s": ping_s(host, port),
        }
    print(figures)
    today = datetime.date.today().isoformat()
    record = {
        "date": today,
        "git_commit": git_commit(),
        "cores": psutil.cpu_count(),
        "server_command": shlex.join(command),
        "invocation": shlex.join(["python", "-m", "benchmarks.protocol_attacks", *sys.argv[1:]]),
        "attacks": {"small items in pieces": figures},
    }
    write_json(args.results_dir / f"{today}-cpu-small-items-{args.handler}.json", record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
