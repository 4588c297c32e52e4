"""A thread-pool Thrift server with message size limits and a graceful stop."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from thrift.protocol.TBinaryProtocol import TBinaryProtocolAccelerated
from thrift.protocol.TProtocol import TProtocolException
from thrift.transport.TSocket import TSocket
from thrift.transport.TTransport import TBufferedTransport, TTransportBase, TTransportException

from service.connection_dealer import receive_connections
from service.gen.inference import InferenceService

logger = logging.getLogger(__name__)

_MIB = 1 << 20


@dataclass(frozen=True)
class TransportLimits:
    """What one client message may make the server read and allocate."""

    #: Bytes one request message may span; a longer one is cut off and the connection closed.
    max_message_bytes: int = 64 * _MIB
    #: Elements a list in a request may declare (checked before anything is allocated).
    max_container_items: int = 16 * 1024
    #: How long a read or write may stall once a message has started (idle waits are unbounded).
    io_timeout_s: float = 30.0


def fastbinary_available() -> bool:
    """Whether thrift's C-accelerated binary protocol is importable."""
    try:
        from thrift.protocol import fastbinary  # noqa: F401
    except ImportError:
        return False
    return True


class MessageTooLargeError(TTransportException):
    """A request message went past ``TransportLimits.max_message_bytes``."""


class _ByteBudget(TTransportBase):
    """Counts the bytes read from a socket since ``reset()`` and stops past a limit.

    The accelerated protocol reads through the buffered transport above this one, so counting
    here bounds every byte a message can make the server hold, whatever the protocol decodes.
    """

    def __init__(self, trans: TSocket, limit_bytes: int):
        self._trans = trans
        self._limit_bytes = limit_bytes
        self._used_bytes = 0

    def reset(self) -> None:
        self._used_bytes = 0

    def isOpen(self) -> bool:
        return self._trans.isOpen()

    def close(self) -> None:
        self._trans.close()

    def read(self, sz: int) -> bytes:
        data = self._trans.read(sz)
        self._used_bytes += len(data)
        if self._used_bytes > self._limit_bytes:
            raise MessageTooLargeError(message=f"request message exceeds {self._limit_bytes} bytes")
        return data


def _buffered_bytes(trans: TBufferedTransport) -> int:
    """Bytes already read from the socket into ``trans`` and not yet decoded."""
    buf = trans.cstringio_buf
    with buf.getbuffer() as view:
        return view.nbytes - buf.tell()


class ThriftServer:
    """Serves ``InferenceService`` over buffered transport and the accelerated binary protocol.

    A fixed pool of worker threads, each serving one connection at a time (as thrift's
    TThreadPoolServer does), plus the accept loop in the thread that calls ``serve()``.
    ``stop()`` (safe from a signal handler) stops accepting, lets every request already
    received finish and be answered, closes idle connections, then ``serve()`` returns.
    """

    def __init__(
        self,
        handler: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 8888,
        threads: int = 20,
        limits: TransportLimits | None = None,
        reuse_port: bool = False,
        handoff: socket.socket | None = None,
    ):
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self._processor = InferenceService.Processor(handler)
        self._host = host
        self._requested_port = port
        self._threads = threads
        self._limits = limits or TransportLimits()
        self._reuse_port = reuse_port
        #: A worker of ``--workers`` does not listen: its supervisor accepts and hands it
        #: connections over this Unix socket (``service.connection_dealer``).
        self._handoff = handoff
        # The string limit is the message limit: an oversized image inside an acceptable
        # message reaches the handler, which answers TOO_LARGE instead of dropping the client.
        self._string_length_limit = self._limits.max_message_bytes
        self._listener: socket.socket | None = None
        self._clients: queue.Queue[TSocket | None] = queue.Queue()
        self._stopping = threading.Event()
        #: Set once the listening socket is closed: from then on connecting is refused.
        self.stopped_accepting = threading.Event()
        self._wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        self._wake_w: int | None = wake_w
        # Signals wake the accept loop through their own pipe (signal.set_wakeup_fd): the
        # kernel may deliver SIGTERM to any thread, and Python runs the handler only once the
        # main thread, blocked in poll(), returns to bytecode.
        self._signal_r, self._signal_w = os.pipe()
        os.set_blocking(self._signal_r, False)
        os.set_blocking(self._signal_w, False)
        if not fastbinary_available():
            logger.warning(
                "thrift.protocol.fastbinary (the C extension) is missing: using the pure-Python "
                "binary protocol, several times slower; reinstall thrift with a C compiler present"
            )

    def _protocol(self, trans: TTransportBase) -> TBinaryProtocolAccelerated:
        # strictRead: a message must open with the binary protocol's version word, as every
        # thrift client writes it. Without it, the first 4 bytes of anything else (a framed
        # client's frame size, an HTTP request) read as a method-name length and the connection
        # would wait, holding a worker thread, for bytes that never come.
        return TBinaryProtocolAccelerated(
            trans,
            strictRead=True,
            string_length_limit=self._string_length_limit,
            container_length_limit=self._limits.max_container_items,
        )

    @property
    def port(self) -> int:
        """The bound port (useful after listening on port 0)."""
        if self._handoff is not None:
            return self._requested_port  # the supervisor's port
        if self._listener is None:
            raise RuntimeError("the server is not listening yet; call listen() first")
        return self._listener.getsockname()[1]

    def listen(self) -> int:
        """Bind and listen; returns the port. ``serve()`` calls it when needed."""
        if self._handoff is not None:
            self._handoff.setblocking(False)
            self._listener = self._handoff
        if self._listener is None:
            self._listener = socket.create_server(
                (self._host, self._requested_port), backlog=128, reuse_port=self._reuse_port
            )
            self._listener.setblocking(False)
        return self.port

    def stop(self) -> None:
        """Ask ``serve()`` to stop accepting, finish in-flight requests and return."""
        self._stopping.set()
        wake_w = self._wake_w
        if wake_w is None:
            return  # serve() has already finished
        with contextlib.suppress(OSError):  # a full pipe: serve() is awake already
            os.write(wake_w, b"x")

    def serve(self, drain_timeout_s: float = 60.0) -> bool:
        """Run until ``stop()``. Returns True when every in-flight request was answered
        within ``drain_timeout_s`` after the stop, False when some were still running."""
        self.listen()
        assert self._listener is not None
        workers = [
            threading.Thread(target=self._worker, name=f"thrift-worker-{i}", daemon=True)
            for i in range(self._threads)
        ]
        for worker in workers:
            worker.start()
        on_main_thread = threading.current_thread() is threading.main_thread()
        previous_wakeup_fd = signal.set_wakeup_fd(self._signal_w) if on_main_thread else -1
        try:
            self._accept_until_stopped()
        finally:
            if on_main_thread:
                signal.set_wakeup_fd(previous_wakeup_fd)
            self._listener.close()
            self.stopped_accepting.set()
            for _ in workers:
                self._clients.put(None)
        logger.info("stopped accepting; finishing in-flight requests")
        deadline_s = time.monotonic() + drain_timeout_s
        for worker in workers:
            worker.join(max(0.0, deadline_s - time.monotonic()))
        stuck = sum(worker.is_alive() for worker in workers)
        if stuck:  # their threads still poll the wake pipe: leave it open
            logger.error(
                "%d connection(s) still busy after %.0f s; giving up", stuck, drain_timeout_s
            )
            return False
        wake_r, wake_w = self._wake_r, self._wake_w
        self._wake_w = None
        for fd in (wake_w, wake_r, self._signal_r, self._signal_w):
            os.close(fd)
        return True

    def _accept_until_stopped(self) -> None:
        assert self._listener is not None
        poller = select.poll()
        poller.register(self._listener.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        poller.register(self._signal_r, select.POLLIN)
        while not self._stopping.is_set():
            ready = {fd for fd, _event in poller.poll()}
            # A signal's handler has run by now (the main thread is back in bytecode).
            if self._signal_r in ready:
                _drain(self._signal_r)
            if self._stopping.is_set():
                return
            if self._listener.fileno() not in ready:
                continue
            for conn in self._accepted():
                client = TSocket()
                client.setHandle(conn)
                client.setTimeout(self._limits.io_timeout_s * 1000)
                self._clients.put(client)

    def _accepted(self) -> list[socket.socket]:
        """The connections waiting on the listening socket, or the ones the supervisor dealt."""
        assert self._listener is not None
        if self._handoff is not None:
            try:
                connections = receive_connections(self._handoff)
            except (BlockingIOError, InterruptedError):
                return []
            except OSError as exc:  # the supervisor's end is broken: no more connections come
                logger.error("the connection hand-off failed (%s): stopping", exc)
                self._stopping.set()
                return []
            if connections is None:  # the supervisor stopped dealing (a stop, or its exit)
                logger.info("the supervisor deals no more connections: stopping")
                self._stopping.set()
                return []
            return connections
        try:
            conn, _address = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return []  # the client went away between poll and accept
        except OSError as exc:  # e.g. out of file descriptors: keep serving the others
            logger.error("accept failed: %s", exc)
            return []
        return [conn]

    def _worker(self) -> None:
        while True:
            client = self._clients.get()
            if client is None:
                return
            try:
                self._serve_connection(client)
            except Exception:  # the thread must outlive any connection
                logger.exception("unexpected error while serving a connection")
            finally:
                client.close()

    def _serve_connection(self, client: TSocket) -> None:
        try:
            host, port = client.handle.getpeername()[:2]
            peer = f"{host}:{port}"
        except OSError:
            return  # the client is already gone
        budget = _ByteBudget(client, self._limits.max_message_bytes)
        itrans = TBufferedTransport(budget)
        otrans = TBufferedTransport(client)
        iprot = self._protocol(itrans)
        oprot = self._protocol(otrans)
        conn_fd = client.handle.fileno()
        poller = select.poll()
        poller.register(conn_fd, select.POLLIN | select.POLLPRI)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            if _buffered_bytes(itrans) == 0:
                # Wait for the next message without holding a read timeout: idle keep-alive
                # connections are normal. Once stopping, only take what has already arrived.
                wait_ms = 0 if self._stopping.is_set() else None
                ready = {fd for fd, _event in poller.poll(wait_ms)}
                if conn_fd not in ready:
                    if self._stopping.is_set():
                        return
                    continue
            budget.reset()
            try:
                self._processor.process(iprot, oprot)
            except MessageTooLargeError as exc:
                logger.warning("closing the connection from %s: %s", peer, exc)
                return
            except TTransportException as exc:
                if exc.type != TTransportException.END_OF_FILE:
                    logger.warning("closing the connection from %s: %s", peer, exc)
                return
            except (TProtocolException, OverflowError, ValueError) as exc:
                # OverflowError: the C decoder's way of refusing a length over the limits.
                logger.warning(
                    "closing the connection from %s: malformed or oversized request: %s", peer, exc
                )
                return


def _drain(fd: int) -> None:
    """Read a non-blocking pipe empty."""
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 512):
            pass
