"""The supervisor's side of ``--workers``: one listening port, connections dealt to the workers.

With SO_REUSEPORT the kernel picks a worker for each new connection by hashing its addresses,
blind to load. RPC clients keep their connections, so a few dozen of them stay where the hash
put them, and some workers get several times the load of others. The supervisor instead
accepts every connection itself and hands it to the workers in turn, over one Unix socket pair
per worker (the descriptor travels with SCM_RIGHTS): N connections land N / workers on each,
however they arrive.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading

logger = logging.getLogger("service.processes.workers")

#: One byte travels with each descriptor: a stream socket cannot carry ancillary data alone.
_TOKEN = b"c"
#: A worker that stopped reading its hand-off socket must not stall the accept loop.
_SEND_TIMEOUT_S = 1.0


class ConnectionDealer:
    """Listens on ``(host, port)`` and deals accepted connections round-robin to ``count``
    hand-off sockets, one per worker. Pass ``worker_fd(i)`` to worker ``i`` (``pass_fds``), then
    call ``forget_worker_ends()`` and ``start()``; ``close()`` stops accepting. ``reuse_port``
    lets several supervisors share the port (the kernel then hashes between them)."""

    def __init__(
        self, host: str, port: int, count: int, *, backlog: int = 128, reuse_port: bool = False
    ):
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        self.listener = socket.create_server((host, port), backlog=backlog, reuse_port=reuse_port)
        self.listener.setblocking(False)
        pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(count)]
        self._ends = [ours for ours, _ in pairs]
        self._worker_ends: list[socket.socket] | None = [theirs for _, theirs in pairs]
        for end in self._ends:
            end.settimeout(_SEND_TIMEOUT_S)
        self._live = [True] * count
        self._next = 0
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None
        #: Connections handed to each worker so far (figures for logs and tests).
        self.dealt = [0] * count

    @property
    def port(self) -> int:
        """The bound port (useful after asking for port 0)."""
        return self.listener.getsockname()[1]

    def worker_fd(self, index: int) -> int:
        """The descriptor worker ``index`` receives its connections on (inheritable)."""
        if self._worker_ends is None:
            raise RuntimeError("the worker ends are already closed here")
        end = self._worker_ends[index]
        end.set_inheritable(True)
        return end.fileno()

    def forget_worker_ends(self) -> None:
        """Close the supervisor's copies of the worker ends once the workers hold theirs: a
        worker that exits then shows as a broken hand-off socket."""
        for end in self._worker_ends or ():
            end.close()
        self._worker_ends = None

    def start(self) -> ConnectionDealer:
        """Accept and deal on a background thread; returns self."""
        self._thread = threading.Thread(target=self._run, name="connection-dealer", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self.listener.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while not self._stopping.is_set():
            ready = {fd for fd, _event in poller.poll()}
            if self._stopping.is_set() or self.listener.fileno() not in ready:
                continue
            try:
                connection, _address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                continue  # the client went away between poll and accept
            except OSError as exc:  # e.g. out of file descriptors: keep serving the others
                logger.error("accept failed: %s", exc)
                continue
            with connection:  # the worker holds its own copy once dealt
                self.deal(connection)

    def deal(self, connection: socket.socket) -> int | None:
        """Hand ``connection`` to the next live worker; returns its index (None: no worker
        took it, and the client's connection closes)."""
        count = len(self._ends)
        for _ in range(count):
            index = self._next
            self._next = (index + 1) % count
            if not self._live[index]:
                continue
            try:
                socket.send_fds(self._ends[index], [_TOKEN], [connection.fileno()])
            except OSError as exc:  # the worker exited or stopped reading: skip it from now on
                logger.error("worker %d does not take connections (%s): skipping it", index, exc)
                self._live[index] = False
                continue
            self.dealt[index] += 1
            return index
        logger.error("no worker takes connections: closing a new one")
        return None

    def close(self) -> None:
        """Stop accepting (new connections are refused) and close the hand-off sockets."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.listener.close()
        for end in self._ends:
            end.close()
        self.forget_worker_ends()
        os.close(self._wake_r)
        os.close(self._wake_w)


def receive_connections(handoff: socket.socket) -> list[socket.socket] | None:
    """The connections the supervisor dealt on ``handoff`` (a worker's side; call when it is
    readable). None once the supervisor has closed its end."""
    data, fds, _flags, _address = socket.recv_fds(handoff, 64, 64)
    connections = [socket.socket(fileno=fd) for fd in fds]
    if not data and not connections:
        return None
    return connections
