"""The operations port under a flood of connections that send nothing or half a request:
no thread per connection, a bounded number open, and ``/health/live`` still answers."""

from __future__ import annotations

import os
import socket
import threading
import urllib.request

import pytest

from benchmarks import attacks, resource_attacks
from service.ops.ops_http import ANSWER_THREADS, MAX_CONNECTIONS
from service.ops.ops_server import OpsServer, ServiceState
from tests.support.live_service import WAIT_S

HOST = "127.0.0.1"
#: Far more than the flood needs on an idle machine; a shared 2-core one may be slow.
PROBE_BOUND_S = 5.0


@pytest.fixture
def ops():
    server = OpsServer(ServiceState(), lambda: "x 1.0\n", host=HOST, port=0)
    server.start()
    try:
        yield server
    finally:
        server.close()


def flood(port: int, count: int) -> list[socket.socket]:
    """``count`` connections; every other one sends half a request line."""
    sockets = []
    for i in range(count):
        sock = socket.create_connection((HOST, port), timeout=WAIT_S)
        if i % 2:
            sock.sendall(b"GET /metrics HTT")
        sockets.append(sock)
    return sockets


def test_a_flood_costs_no_thread_per_connection_and_liveness_still_answers(ops):
    threads_before = threading.active_count()
    held = flood(ops.port, 300)
    try:
        took_s = resource_attacks.live_probe_s(HOST, ops.port, timeout_s=PROBE_BOUND_S)
        assert took_s is not None, "/health/live did not answer under the flood"
        url = f"http://{HOST}:{ops.port}/metrics"
        with urllib.request.urlopen(url, timeout=PROBE_BOUND_S) as response:
            assert response.status == 200 and response.read() == b"x 1.0\n"
        assert threading.active_count() <= threads_before + ANSWER_THREADS
        assert ops.http.open_connections <= MAX_CONNECTIONS
    finally:
        attacks.close_all(held)


def test_at_the_cap_a_new_connection_closes_the_oldest_unanswered_one(ops):
    held = flood(ops.port, MAX_CONNECTIONS)
    try:
        took_s = resource_attacks.live_probe_s(HOST, ops.port, timeout_s=PROBE_BOUND_S)
        assert took_s is not None
        assert attacks.closed_within_s(held[0], timeout_s=PROBE_BOUND_S) is not None
        assert ops.http.evicted >= 1
    finally:
        attacks.close_all(held)


def test_a_connection_that_sends_no_request_is_closed_at_its_deadline(ops):
    with socket.create_connection((HOST, ops.port), timeout=WAIT_S) as idle:
        idle.sendall(b"GET /health/li")
        assert attacks.closed_within_s(idle, timeout_s=PROBE_BOUND_S) is not None


def test_the_benchmark_flood_leaves_liveness_answering_with_a_bounded_thread_count(ops):
    flood = resource_attacks.ops_flood(
        HOST,
        ops.port,
        os.getpid(),
        connections=300,
        duration_s=1.5,
        hold_s=1.0,
        probe_timeout_s=PROBE_BOUND_S,
    )
    assert flood.opened == 300
    assert flood.probes.probes >= 1 and flood.probes.failed == 0, flood
    # The flood's own prober and the sampler are two threads; the ops port adds none.
    assert flood.threads_peak <= flood.threads_before + 2, flood
