"""RemotePipeline: a pipeline served by another process (``tp.serve``), called as a local one.

``connect(address)`` attaches to the server: it makes this process's shared-memory arena and
hands it over once. A request's data is copied into the arena and a small record goes to the
server; requests sent together (``dispatch_many``, a list call) go in one frame. A receiver
thread reads the server's answers, one frame per batch of ends, and completes each request as
a local pipeline would: same ``__call__``, ``submit``, ``dispatch``, typed errors.

Only ``data`` and ``node_name`` travel; the caller's dict gets ``result`` when it comes back.
When the server goes away, every request it held fails with ``PipelineUnavailableError`` and
the next request reconnects (a supervisor restarts the server).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import pickle
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from ..errors import (
    InvalidRequestError,
    PipelineClosedError,
    PipelineUnavailableError,
    RequestError,
)
from ..metrics import NodeStats
from . import wire
from .arena import Arena
from .calls import DispatchCalls, OnDone
from .wire import FrameKind

logger = logging.getLogger(__name__)

DEFAULT_ARENA_BYTES = 256 << 20


class RemoteHandle:
    """One request at the server; ``cancel()`` drops it at the next stage it reaches."""

    __slots__ = ("_pipeline", "offset", "on_done", "request", "request_id")

    def __init__(self, pipeline: RemotePipeline, request_id: int, request: dict, on_done: OnDone):
        self._pipeline = pipeline
        self.request_id = request_id
        self.request = request
        self.on_done = on_done
        self.offset = -1

    def cancel(self) -> None:
        self._pipeline._cancel(self.request_id)


class RemotePipeline(DispatchCalls):
    """A client of a ``PipelineServer`` at ``address``. Thread-safe."""

    def __init__(
        self,
        address: str | Path,
        *,
        arena_bytes: int = DEFAULT_ARENA_BYTES,
        connect_timeout_s: float = 10.0,
    ):
        self.address = str(address)
        self._connect_timeout_s = connect_timeout_s
        self._arena = Arena(arena_bytes)
        self._ids = itertools.count(1)
        self._pending: dict[int, RemoteHandle] = {}
        self._pending_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._connect_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._stats_reply: Future | None = None
        self._sock: socket.socket | None = None
        self._closed = False
        # Frames waiting for the sender thread, each with the ids of the requests it starts.
        self._outbox: list[tuple[bytes, list[int]]] = []
        self._outbox_ready = threading.Condition(threading.Lock())
        try:
            self.shape: wire.PipelineShape = self._connect()
        except BaseException:
            self._arena.close()
            raise
        threading.Thread(target=self._send_frames, name="remote-sender", daemon=True).start()

    # -- connecting --------------------------------------------------------------------------

    def _connect(self) -> wire.PipelineShape:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self._connect_timeout_s)
        try:
            sock.connect(self.address)
            hello = wire.HELLO.pack(wire.MAGIC, wire.VERSION, self._arena.capacity_bytes)
            socket.send_fds(sock, [wire.frame(FrameKind.HELLO, hello)], [self._arena.fd])
            kind, body = wire.recv_frame(sock)
            if kind != FrameKind.READY:
                raise wire.WireError(f"expected READY, got frame kind {kind}")
            shape = pickle.loads(body)
        except (OSError, wire.WireError) as error:
            sock.close()
            raise PipelineUnavailableError(
                f"cannot attach to the pipeline served at {self.address}: {error}"
            ) from error
        sock.settimeout(None)
        self._entries = {name: index for index, name in enumerate(shape.node_names)}
        self._sock = sock
        self._receiver = threading.Thread(
            target=self._receive, args=(sock,), name="remote-receiver", daemon=True
        )
        self._receiver.start()
        return shape

    def _socket(self) -> socket.socket:
        """The live connection, reconnecting when the server went away."""
        sock = self._sock
        if sock is not None:
            return sock
        with self._connect_lock:
            if self._closed:
                raise PipelineClosedError("the remote pipeline is closed")
            if self._sock is None:
                self.shape = self._connect()
            return self._sock

    @property
    def connected(self) -> bool:
        """Whether the connection to the server is up (False after it went away, until the
        next request or ``reattach`` reconnects)."""
        return self._sock is not None

    def reattach(self) -> None:
        """Connect again now if the server went away; ``PipelineUnavailableError`` when it
        still cannot be reached."""
        self._socket()

    # -- calling -----------------------------------------------------------------------------

    def dispatch_many(
        self,
        requests: list[dict[str, Any]],
        on_done: Callable[[int, dict[str, Any], BaseException | None], None],
        strict: bool = False,
        timeout_s: float | None = None,
    ) -> list[RemoteHandle]:
        """Start several requests in one frame; ``on_done(index, request, error)``."""
        flags = wire.FLAG_STRICT if strict else 0
        timeout_ms = -1 if timeout_s is None else max(0, int(timeout_s * 1000))
        records: list[bytes] = []
        handles: list[RemoteHandle] = []
        for index, request in enumerate(requests):
            handle = RemoteHandle(self, next(self._ids), request, _indexed(on_done, index))
            handles.append(handle)
            try:
                entry = self._entry(request)
                offset, length, kind = self._arena.write(request["data"])
            except RequestError as error:
                on_done(index, request, error)
                continue
            handle.offset = offset
            request.pop("result", None)
            records.append(
                wire.SUBMIT_RECORD.pack(
                    handle.request_id, offset, length, kind, flags, entry, timeout_ms
                )
            )
            with self._pending_lock:
                self._pending[handle.request_id] = handle
        if records:
            ids = [handle.request_id for handle in handles if handle.offset >= 0]
            self._post(wire.frame(FrameKind.SUBMIT, b"".join(records)), ids)
        return handles

    # -- answers -----------------------------------------------------------------------------

    def _receive(self, sock: socket.socket) -> None:
        reader = wire.FrameReader()
        try:
            while True:
                data = sock.recv(1 << 20)
                if not data:
                    break
                for kind, body in reader.feed(data):
                    if kind == FrameKind.RESULTS:
                        for rid, has_result, result, error in pickle.loads(body):
                            self._finish(rid, (has_result, result), error and error.rebuild())
                    elif kind == FrameKind.STATS_REPLY and self._stats_reply is not None:
                        self._stats_reply.set_result(pickle.loads(body))
        except (OSError, wire.WireError) as error:
            logger.warning("remote pipeline %s: connection lost: %s", self.address, error)
        self._lost(sock)

    def _finish(
        self, rid: int, outcome: tuple[bool, Any] | None, error: BaseException | None
    ) -> None:
        with self._pending_lock:
            handle = self._pending.pop(rid, None)
        if handle is None:
            return
        self._arena.free(handle.offset)
        request = handle.request
        if error is None and outcome is not None and outcome[0]:
            request["result"] = outcome[1]
        try:
            handle.on_done(request, error)
        except Exception:
            logger.exception("remote pipeline: a request's on_done raised")

    def _lost(self, sock: socket.socket) -> None:
        """The server went away: fail what it held; the next request reconnects."""
        with self._connect_lock:
            if self._sock is sock:
                self._sock = None
            sock.close()
            with self._pending_lock:
                lost, self._pending = self._pending, {}
            self._arena.reset()
            if self._closed:
                self._arena.close()
        if self._stats_reply is not None and not self._stats_reply.done():
            self._stats_reply.set_exception(PipelineUnavailableError("the server went away"))
        error_text = f"the pipeline served at {self.address} went away"
        for handle in lost.values():
            try:
                handle.on_done(handle.request, PipelineUnavailableError(error_text))
            except Exception:
                logger.exception("remote pipeline: a request's on_done raised")

    def _post(self, frame: bytes, request_ids: list[int]) -> None:
        """Queue ``frame`` for the sender thread: while it sends, frames posted meanwhile
        gather, and go in one write that the server reads as one batch of records."""
        with self._outbox_ready:
            self._outbox.append((frame, request_ids))
            if len(self._outbox) == 1:
                self._outbox_ready.notify()

    def _send_frames(self) -> None:
        """The sender thread: writes what ``_post`` queued, everything waiting at once."""
        while True:
            with self._outbox_ready:
                while not self._outbox and not self._closed:
                    self._outbox_ready.wait()
                if not self._outbox:
                    return
                posted, self._outbox = self._outbox, []
            try:
                self._send(b"".join(frame for frame, _ in posted))
            except RequestError as error:
                for _, request_ids in posted:
                    for request_id in request_ids:
                        self._finish(request_id, None, error)

    def _send(self, data: bytes) -> None:
        sock = self._socket()
        try:
            with self._send_lock:
                sock.sendall(data)
        except OSError as error:
            raise PipelineUnavailableError(
                f"the pipeline served at {self.address} went away ({error})"
            ) from error

    def _cancel(self, rid: int) -> None:
        with self._pending_lock:
            if rid not in self._pending:
                return
        # Behind the request's own SUBMIT, so the server always knows the id it cancels.
        self._post(wire.frame(FrameKind.CANCEL, wire.CANCEL_RECORD.pack(rid)), [])

    def _entry(self, request: dict[str, Any]) -> int:
        if not isinstance(request, dict) or "data" not in request:
            raise InvalidRequestError("a request must be a dict with a 'data' key")
        name = request.get("node_name")
        if name is None:
            return wire.DEFAULT_ENTRY
        if name not in self._entries:
            raise InvalidRequestError(f"unknown node_name {name!r}")
        return self._entries[name]

    # -- figures and lifecycle ---------------------------------------------------------------

    def stats(self, timeout_s: float = 10.0) -> dict[str, NodeStats]:
        """The server's per-node figures (all of its clients together)."""
        with self._stats_lock:  # one question at a time
            self._stats_reply = Future()
            self._send(wire.frame(FrameKind.STATS))
            try:
                return self._stats_reply.result(timeout_s)
            finally:
                self._stats_reply = None

    def close(self) -> None:
        """Detach; requests still at the server fail with ``PipelineUnavailableError``."""
        with self._connect_lock:
            if self._closed:
                return
            self._closed = True
            with self._outbox_ready:  # the sender thread sends what is queued, then ends
                self._outbox_ready.notify()
            sock = self._sock
            if sock is None:  # the server went away earlier: nothing pending, no receiver
                self._arena.close()
                return
        with contextlib.suppress(OSError):  # the receiver fails what is pending, then closes
            sock.shutdown(socket.SHUT_RDWR)
        if threading.current_thread() is not self._receiver:  # (an on_done may close)
            self._receiver.join(self._connect_timeout_s)  # so the socket and arena are gone


def _indexed(on_done: Callable[[int, dict, BaseException | None], None], index: int) -> OnDone:
    return lambda request, error: on_done(index, request, error)


__all__ = ["RemoteHandle", "RemotePipeline"]
