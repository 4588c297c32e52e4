"""The ``--workers`` supervisor's connection dealer: round-robin, dead workers skipped."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

import pytest

from service.processes.connection_dealer import ConnectionDealer, receive_connections

TIMEOUT_S = 5.0


@pytest.fixture
def dealer_and_workers():
    dealer = ConnectionDealer("127.0.0.1", 0, 3)
    workers = []
    for index in range(3):  # what each worker process would inherit
        end = socket.socket(fileno=os.dup(dealer.worker_fd(index)))
        end.settimeout(TIMEOUT_S)
        workers.append(end)
    dealer.forget_worker_ends()
    dealer.start()
    yield dealer, workers
    dealer.close()
    for end in workers:
        end.close()


@contextlib.contextmanager
def _clients(port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections to ``port``, made in order, closed afterwards."""
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(socket.create_connection(("127.0.0.1", port), TIMEOUT_S))
            for _ in range(count)
        ]


def _take_one(worker: socket.socket) -> socket.socket:
    connections = receive_connections(worker)
    assert connections is not None and len(connections) == 1
    return connections[0]


def test_connections_are_dealt_in_turn_and_arrive_usable(dealer_and_workers) -> None:
    dealer, workers = dealer_and_workers
    with _clients(dealer.port, 6) as clients:
        for turn, client in enumerate(clients):
            served = _take_one(workers[turn % 3])  # the dealer hands them over in order
            with served:
                assert served.getpeername() == client.getsockname()
                client.sendall(b"ping %d" % turn)
                assert served.recv(16) == b"ping %d" % turn
    assert dealer.dealt == [2, 2, 2]


def test_a_worker_that_is_gone_is_skipped(dealer_and_workers) -> None:
    dealer, workers = dealer_and_workers
    workers[1].close()  # as if worker 1 had exited
    with _clients(dealer.port, 4):
        for index in (0, 2, 0, 2):
            _take_one(workers[index]).close()
    assert dealer.dealt == [2, 0, 2]


def test_a_worker_learns_when_the_supervisor_is_gone(dealer_and_workers) -> None:
    dealer, workers = dealer_and_workers
    dealer.close()
    assert receive_connections(workers[0]) is None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", dealer.port), TIMEOUT_S)
