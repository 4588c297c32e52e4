"""The event-loop server's open connections: adopting, closing, and their deadlines.

Only the loop thread touches the table. A connection with a call running is not closed under
that call: it is marked closing, read no more, and closed once its reply has gone out (the
thread that sent the reply posts it back to the loop).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Iterator

from service.ops.log_limit import LogLimiter

from .budgets import BufferLedger, holders_to_cut
from .connection import Connection
from .limits import ConnectionFigures, Overdue, TransportLimits, overdue
from .poller import Poller


class ConnectionTable:
    """The connections by descriptor, and the figures of how each one ended."""

    def __init__(
        self,
        poller: Poller,
        figures: ConnectionFigures,
        log: LogLimiter,
        limits: TransportLimits,
        *,
        buffers: BufferLedger,
        max_connections: int,
    ):
        self._poller = poller
        self._figures = figures
        self._log = log
        self._limits = limits
        self._buffers = buffers
        self._max_connections = max_connections
        self._by_fd: dict[int, Connection] = {}

    def __iter__(self) -> Iterator[Connection]:
        return iter(list(self._by_fd.values()))

    def holds(self, connection: Connection) -> bool:
        """Whether ``connection`` is still open here (its descriptor may be another's now)."""
        return self._by_fd.get(connection.fd) is connection

    def adopt(self, sock: socket.socket, peer: str) -> None:
        """Take a newly accepted connection, or close it at once past the cap."""
        figures = self._figures
        if len(self._by_fd) >= self._max_connections:
            figures.refused_over_cap += 1
            sock.close()
            self._log.log(
                "cap",
                logging.WARNING,
                "refusing connections: %d open is the limit (%d refused so far)",
                self._max_connections,
                figures.refused_over_cap,
            )
            return
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = Connection(sock, peer, time.monotonic(), self._buffers)
        self._by_fd[connection.fd] = connection
        self._poller.watch(connection.fd, connection)
        figures.accepted += 1
        figures.open = len(self._by_fd)

    def drop_after_error(self, connection: Connection, error: Exception) -> None:
        """An exception escaped the handling of ``connection`` (a server bug, or a limit the
        checks missed): close that connection, log at a bounded rate, serve the others."""
        self._figures.closed_on_error += 1
        self._log.log(
            "connection_error",
            logging.ERROR,
            "closing the connection from %s after an unexpected %s",
            connection.peer,
            type(error).__name__,
            exc_info=error,
        )
        with connection.lock:
            if connection.busy and connection.call is None:
                connection.busy = False  # no call was handed out: nothing else will end it
        with contextlib.suppress(OSError):  # the socket may be broken already
            self.close_when_idle(connection)

    def refuse(self, connection: Connection, why: str) -> None:
        """Close a connection that broke the protocol or a limit (counted, logged)."""
        self._figures.closed_malformed += 1
        self._log.log(
            "malformed", logging.WARNING, "closing the connection from %s: %s", connection.peer, why
        )
        self.close_when_idle(connection)

    def cut_largest_holders(self, reading: Connection) -> bool:
        """Close the connections holding the most unfinished bytes until the buffer budget
        is kept; True when ``reading`` was one of them."""
        held = ((c.buffered_bytes, c) for c in self._by_fd.values() if not c.closing)
        for connection in holders_to_cut(held, self._buffers.over_bytes):
            self._figures.closed_over_buffer_budget += 1
            self._log.log(
                "budget",
                logging.WARNING,
                "closing the connection from %s: its unfinished request held %.1f MiB when "
                "those of every connection passed the budget, %.0f MiB",
                connection.peer,
                connection.buffered_bytes / (1 << 20),
                self._buffers.budget_bytes / (1 << 20),
            )
            self.close_when_idle(connection)
        return reading.closing

    def close_when_idle(self, connection: Connection) -> None:
        """Close now, or (a call is running) once its reply has been sent."""
        with connection.lock:
            connection.closing = True
            busy = connection.busy
        connection.drop_input()  # whatever else it sent is never read
        if busy:
            self._poller.forget(connection.fd)  # read no more from it
            return
        self.close(connection)

    def close(self, connection: Connection) -> None:
        """Close the socket and forget the connection."""
        if not self.holds(connection):
            return
        del self._by_fd[connection.fd]
        self._poller.forget(connection.fd)
        connection.drop_input()
        connection.sock.close()
        self._figures.open = len(self._by_fd)

    def close_idle(self) -> None:
        """Close the connections between calls; a call running, or a message half received
        (a client sending its request as the stop came), is let finish, the message within
        its own deadline (``message_timeout_s``): a drip-feeding client cannot hold the drain
        longer than that."""
        for connection in self:
            if not connection.busy and connection.message_started_s is None:
                self.close(connection)

    def unfinished(self) -> int:
        """Connections with a call running or a request message still arriving."""
        return sum(
            connection.busy or connection.message_started_s is not None
            for connection in self._by_fd.values()
        )

    def sweep(self, now_s: float) -> None:
        """Close the connections past a deadline: a message too slow to arrive, or idle."""
        limits = self._limits
        for connection in self:
            if connection.busy or connection.closing:
                continue
            why = overdue(connection.message_started_s, connection.last_active_s, now_s, limits)
            if why is Overdue.SLOW_MESSAGE:
                self._figures.closed_slow_message += 1
                self._log.log(
                    "slow",
                    logging.WARNING,
                    "closing the connection from %s: a message took over %.0f s to arrive",
                    connection.peer,
                    limits.message_timeout_s,
                )
            elif why is Overdue.IDLE:
                self._figures.closed_idle += 1
            if why is not None:
                self.close(connection)
