"""What the whole server may hold, against clients that each stay within their own limits:
bytes in unfinished messages (a budget for all connections together) and descriptors (a
connection cap that the file limit allows, so the liveness probe still gets one)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time

import pytest

from benchmarks import attacks, resource_attacks
from service.rpc.server import TransportLimits
from service.server_process import free_port
from tests.support import fd_starved_server
from tests.support.fd_starved_server import PingOnly
from tests.support.live_service import WAIT_S, serve_in_thread

HOST = "127.0.0.1"
MIB = 1 << 20
#: How far the buffers may pass their budget: the one read after which the cut is chosen.
_ONE_READ_BYTES = 256 * 1024


def test_stalled_big_senders_cannot_push_the_buffered_bytes_past_the_budget():
    budget_bytes, senders, sent_bytes = 8 * MIB, 6, 3 * MIB
    limits = TransportLimits(max_message_bytes=4 * MIB, max_buffered_bytes=budget_bytes)
    whole = attacks.encoded_call(bytes(sent_bytes + MIB // 2))  # each declares more than it sends
    sockets: list[socket.socket] = []
    with serve_in_thread(PingOnly(), limits=limits) as live:
        try:
            for _ in range(senders):
                sock = socket.create_connection((HOST, live.port), timeout=WAIT_S)
                sockets.append(sock)
                with contextlib.suppress(OSError):  # cut while it sent: the budget at work
                    sock.sendall(memoryview(whole)[:sent_bytes])
            # 18 MiB sent against 8: once all has arrived, at most two senders can be left.
            deadline_s = time.monotonic() + WAIT_S
            while live.server.figures.closed_over_buffer_budget < senders - 2:
                assert time.monotonic() < deadline_s, live.server.figures
                time.sleep(0.01)
            buffers = live.server.buffers
            assert buffers.held_bytes <= budget_bytes
            assert buffers.peak_bytes <= budget_bytes + _ONE_READ_BYTES, buffers.peak_bytes
            with live.connect(timeout_s=WAIT_S) as good:  # a good client is still answered
                good.client.ping()
                assert good.client.stats().connections.open >= 1
        finally:
            attacks.close_all(sockets)


@pytest.mark.slow  # starts a server or subprocesses and waits on them: not in make test-fast
def test_connections_beyond_what_the_file_limit_allows_are_refused_and_liveness_answers():
    port, ops_port = free_port(), free_port()
    server = fd_starved_server.spawn(
        port, 128, "--ops-port", str(ops_port), stderr=subprocess.DEVNULL
    )
    held: list[socket.socket] = []
    extra = 20
    try:
        word, cap = server.stdout.readline().split()
        assert word == "ready" and int(cap) < 128 - 32  # --max-connections 1024 was asked
        for _ in range(int(cap) + extra):
            held.append(socket.create_connection((HOST, port), timeout=WAIT_S))
        assert resource_attacks.closed_by_server(held, window_s=3.0) == extra
        took_s = resource_attacks.live_probe_s(HOST, ops_port, timeout_s=5.0)
        assert took_s is not None, "/health/live did not answer"
        held.pop(0).close()  # a slot frees: a good client is served again
        fd_starved_server.ping_until_served(HOST, port, WAIT_S)
    finally:
        attacks.close_all(held)
        server.terminate()
        server.wait(WAIT_S)
