"""The listening side of the event-loop server: new connections in, at a bounded cost.

A connection comes from the listening socket, or, in a worker of ``--workers``, dealt by the
supervisor over a Unix socket (``service.processes.connection_dealer``). When the process is out of
descriptors (EMFILE), accepting pauses for a moment rather than spinning on the same error.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections.abc import Callable

from service.ops.log_limit import LogLimiter
from service.processes.connection_dealer import receive_connections

from .poller import Poller

logger = logging.getLogger("service.rpc")

#: Connections taken per wake-up of the listening socket, so a flood cannot starve the reads.
_ACCEPTS_PER_WAKE = 64
#: How long accepting pauses when the process is out of descriptors (instead of spinning).
_ACCEPT_PAUSE_S = 0.5
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class Acceptor:
    """Owns the listening (or hand-off) socket; the loop calls ``accept`` when it is readable.

    ``adopt(sock, peer)`` takes each new connection; ``on_end()`` is called when a supervisor
    stops dealing (the worker should stop). ``token`` is what the poller reports for it.
    """

    def __init__(
        self,
        poller: Poller,
        log: LogLimiter,
        *,
        host: str,
        port: int,
        reuse_port: bool,
        handoff: socket.socket | None,
        token: object,
        accepts_per_wake: int = _ACCEPTS_PER_WAKE,
    ):
        self._poller = poller
        self._log = log
        self._host = host
        self._requested_port = port
        self._reuse_port = reuse_port
        self._handoff = handoff
        self._token = token
        self._accepts_per_wake = accepts_per_wake
        self._listener: socket.socket | None = None
        self._paused_until_s = 0.0

    @property
    def port(self) -> int:
        """The bound port (useful after listening on port 0)."""
        if self._handoff is not None:
            return self._requested_port  # the supervisor's port
        if self._listener is None:
            raise RuntimeError("the server is not listening yet; call listen() first")
        return self._listener.getsockname()[1]

    def listen(self) -> int:
        """Bind and listen (once); returns the port."""
        if self._listener is None:
            if self._handoff is not None:
                self._listener = self._handoff
            else:
                self._listener = socket.create_server(
                    (self._host, self._requested_port), backlog=1024, reuse_port=self._reuse_port
                )
            self._listener.setblocking(False)
        return self.port

    def watch(self) -> None:
        """Have the poller report new connections."""
        assert self._listener is not None
        self._poller.watch(self._listener.fileno(), self._token)

    def accept(
        self, adopt: Callable[[socket.socket, str], None], on_end: Callable[[], None]
    ) -> None:
        """Take the connections waiting (at most a few dozen per call)."""
        if self._handoff is not None:
            self._accept_dealt(adopt, on_end)
            return
        assert self._listener is not None
        for _ in range(self._accepts_per_wake):
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    self._pause(exc)
                else:
                    self._log.log("accept", logging.WARNING, "accept failed: %s", exc)
                return
            self._adopt(adopt, sock, f"{address[0]}:{address[1]}")

    def _accept_dealt(
        self, adopt: Callable[[socket.socket, str], None], on_end: Callable[[], None]
    ) -> None:
        assert self._handoff is not None
        try:
            dealt = receive_connections(self._handoff)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # the supervisor's end is broken: no more connections come
            logger.error("the connection hand-off failed (%s): stopping", exc)
            on_end()
            return
        if dealt is None:  # the supervisor stopped dealing (a stop, or its exit)
            logger.info("the supervisor deals no more connections: stopping")
            on_end()
            return
        for sock in dealt:
            try:
                host, port = sock.getpeername()[:2]
            except OSError:
                sock.close()
                continue
            self._adopt(adopt, sock, f"{host}:{port}")

    def _adopt(
        self, adopt: Callable[[socket.socket, str], None], sock: socket.socket, peer: str
    ) -> None:
        try:
            adopt(sock, peer)
        except OSError as exc:  # reset before it was set up (setsockopt fails): drop it
            self._log.log("adopt", logging.WARNING, "dropping a new connection: %s", exc)
            sock.close()

    def _pause(self, exc: OSError) -> None:
        self._log.log(
            "accept",
            logging.WARNING,
            "accept failed (%s): pausing new connections for %.1f s",
            exc,
            _ACCEPT_PAUSE_S,
        )
        assert self._listener is not None
        self._poller.forget(self._listener.fileno())
        self._paused_until_s = time.monotonic() + _ACCEPT_PAUSE_S

    def resume_if_due(self, now_s: float) -> None:
        """End a pause whose time is up (called by the loop's periodic sweep)."""
        if self._paused_until_s and now_s >= self._paused_until_s:
            self._paused_until_s = 0.0
            if self._listener is not None:
                self.watch()

    def close(self) -> None:
        """Stop accepting: from now on connecting is refused."""
        assert self._listener is not None
        if not self._paused_until_s:
            self._poller.forget(self._listener.fileno())
        self._paused_until_s = 0.0
        self._listener.close()
