"""PipelineServer: a pipeline of this process served to other processes, in batches.

Clients (``RemotePipeline``) write each request's data into their own shared memory and send
small records; the server's intake thread takes every record that has arrived at once, from
every client, and starts them in the pipeline together (one queue operation per entry node,
whatever the batch holds). As requests end, their outcomes gather per client and a sender
thread answers each client with one frame per batch of ends. So the serving process does a few
microseconds of Python per request, and its interpreter is left to the stages: what lets one
process own a GPU for many front processes (vLLM's engine core behind its API servers works
the same way).

Threads: intake (accepts, reads every client with a selector) and sender (answers), beside the
pipeline's own instance threads.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import selectors
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..config.schema import PipelineConfig
from ..schedule.pipeline import Pipeline, pipe
from . import wire
from .arena import read_data
from .wire import FrameKind, WireError

logger = logging.getLogger(__name__)

_READ_BYTES = 1 << 18


@dataclass
class ServeFigures:
    """What a server has exchanged: batches against requests, each way (how well it batches).
    An intake batch is what one read of a client brought: one pipeline call however many
    requests it holds."""

    intake_batches: int = 0
    requests_received: int = 0
    result_frames: int = 0
    requests_answered: int = 0
    clients_open: int = 0
    clients_total: int = 0


class _Client:
    """One attached client: its arena, its requests in flight and its outcomes to send."""

    __slots__ = (
        "handles",
        "handles_lock",
        "memory",
        "name",
        "open",
        "outbox",
        "outbox_lock",
        "reader",
        "send_lock",
        "sock",
    )

    def __init__(self, sock: socket.socket, memory: memoryview, name: str):
        self.sock = sock
        self.memory = memory
        self.name = name
        self.reader = wire.FrameReader()
        self.handles: dict[int, Any] = {}
        self.outbox: list[tuple] = []
        # Re-entrant: a request refused at once ends on the thread that is registering it.
        self.handles_lock = threading.RLock()
        self.outbox_lock = threading.Lock()
        self.send_lock = threading.Lock()
        self.open = True


class PipelineServer:
    """Serves ``pipeline`` on the Unix socket ``address`` (owner-only) until ``close()``.

    ``send_timeout_s`` bounds how long an answer may wait for a client that stopped reading;
    past it the client is dropped (its requests are cancelled).
    """

    def __init__(
        self,
        pipeline: Pipeline,
        address: str | Path,
        *,
        owns_pipeline: bool = False,
        send_timeout_s: float = 30.0,
        handshake_timeout_s: float = 5.0,
    ):
        self.pipeline = pipeline
        self.address = Path(address)
        self._owns_pipeline = owns_pipeline
        self._send_timeout_s = send_timeout_s
        self._handshake_timeout_s = handshake_timeout_s
        config = pipeline.config
        self._entries = list(config.graph.entries)
        self._node_names = tuple(n.name for n in config.nodes if not n.is_logical)
        self.shape = wire.PipelineShape(
            node_names=self._node_names,
            entries=tuple(self._entries),
            batch_ranges={name: pipeline.batch_range(name) for name in pipeline.node_names},
        )
        self._entry_names = [n.name for n in config.nodes]
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._clients: set[_Client] = set()
        self._dirty: list[_Client] = []
        self._dirty_ready = threading.Condition(threading.Lock())
        self._closing = False
        self._threads: list[threading.Thread] = []
        self._figures = ServeFigures()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> PipelineServer:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            self.address.unlink()  # a socket file left by a server that died
        old_umask = os.umask(0o177)  # owner-only: only this user's processes may attach
        try:
            listener.bind(str(self.address))
        except OSError:
            listener.close()
            raise
        finally:
            os.umask(old_umask)
        listener.listen(256)
        self._listener = listener
        for target, name in ((self._intake, "serve-intake"), (self._send, "serve-sender")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        logger.info("serving pipeline %s on %s", " -> ".join(self._node_names), self.address)
        return self

    def close(self) -> None:
        """Stop accepting, drop the clients, and close the pipeline if this server made it."""
        if self._closing:
            return
        self._closing = True
        self._wake_w.send(b"x")
        with self._dirty_ready:
            self._dirty_ready.notify()
        for thread in self._threads:
            thread.join()
        if self._owns_pipeline:
            self.pipeline.close()
        for client in list(self._clients):
            self._drop(client, None)
        if self._listener is not None:
            self._listener.close()
            with contextlib.suppress(FileNotFoundError):
                self.address.unlink()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> PipelineServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def figures(self) -> ServeFigures:
        """The exchange so far (a copy)."""
        return replace(self._figures, clients_open=len(self._clients))

    # -- intake ------------------------------------------------------------------------------

    def _intake(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._listener, selectors.EVENT_READ, None)
        selector.register(self._wake_r, selectors.EVENT_READ, self._wake_r)
        try:
            while True:
                for key, _ in selector.select():
                    if key.data is self._wake_r:
                        return
                    try:
                        if key.data is None:
                            self._accept(selector)
                        else:
                            self._read(selector, key.data)
                    except WireError as error:
                        logger.warning(
                            "serving: a client broke the protocol (%s); dropping it", error
                        )
                        self._drop(key.data, selector)
                    except Exception:  # one client's fault must not stop the others
                        logger.exception("serving: a client failed; dropping it")
                        if key.data is not None:
                            self._drop(key.data, selector)
        finally:
            selector.close()

    def _accept(self, selector: selectors.BaseSelector) -> None:
        sock, _ = self._listener.accept()
        sock.settimeout(self._handshake_timeout_s)
        try:
            memory = self._handshake(sock)
        except (OSError, WireError) as error:
            logger.warning("serving: a client failed its handshake: %s", error)
            sock.close()
            return
        sock.settimeout(self._send_timeout_s)
        self._figures.clients_total += 1
        client = _Client(sock, memory, f"client-{self._figures.clients_total}")
        self._clients.add(client)
        selector.register(sock, selectors.EVENT_READ, client)

    def _handshake(self, sock: socket.socket) -> memoryview:
        """HELLO with the arena's fd in, READY with the pipeline's shape out."""
        body, fds, _, _ = socket.recv_fds(sock, wire.FRAME_HEADER.size + wire.HELLO.size, 1)
        try:
            if len(body) != wire.FRAME_HEADER.size + wire.HELLO.size or len(fds) != 1:
                raise WireError("a HELLO frame with one file descriptor was expected")
            kind, _ = wire.FRAME_HEADER.unpack_from(body)
            magic, version, arena_bytes = wire.HELLO.unpack_from(body, wire.FRAME_HEADER.size)
            if kind != FrameKind.HELLO or magic != wire.MAGIC:
                raise WireError(f"not a torchpipe_lite client (kind {kind}, magic {magic!r})")
            if version != wire.VERSION:
                raise WireError(f"the client speaks version {version}; this server {wire.VERSION}")
            if os.fstat(fds[0]).st_size < arena_bytes:
                raise WireError("the arena is smaller than the client says")
            memory = memoryview(mmap.mmap(fds[0], arena_bytes))
        finally:
            for fd in fds:
                os.close(fd)
        sock.sendall(wire.pickled_frame(FrameKind.READY, self.shape))
        return memory

    def _read(self, selector: selectors.BaseSelector, client: _Client) -> None:
        try:
            data = client.sock.recv(_READ_BYTES)
        except OSError:
            data = b""
        if not data:
            self._drop(client, selector)
            return
        submitted: list[memoryview] = []  # the SUBMITs of one read start as one batch
        for kind, body in client.reader.feed(data):
            if kind == FrameKind.SUBMIT:
                submitted.append(body)
                continue
            if submitted:  # a CANCEL must find the requests sent before it
                self._submit(client, submitted)
                submitted = []
            if kind == FrameKind.CANCEL:
                with client.handles_lock:
                    handles = [client.handles.get(rid) for (rid,) in _records(body, kind)]
                for handle in handles:
                    if handle is not None:
                        handle.cancel()
            elif kind == FrameKind.STATS:
                reply = wire.pickled_frame(FrameKind.STATS_REPLY, self.pipeline.stats())
                with client.send_lock:
                    client.sock.sendall(reply)
            else:
                raise WireError(f"unexpected frame kind {kind}")
        if submitted:
            self._submit(client, submitted)

    def _submit(self, client: _Client, bodies: list[memoryview]) -> None:
        """Start every request of these SUBMIT frames, in one pipeline call per strictness."""
        body = bodies[0] if len(bodies) == 1 else b"".join(bodies)
        self._figures.intake_batches += 1
        self._figures.requests_received += len(body) // wire.SUBMIT_RECORD.size
        groups: dict[bool, tuple[list[int], list[dict], list[float | None]]] = {}
        memory = client.memory
        names = self._entry_names
        for rid, offset, length, kind, flags, entry, timeout_ms in _records(body, FrameKind.SUBMIT):
            request: dict[str, Any] = {"data": read_data(memory, offset, length, kind)}
            if entry != wire.DEFAULT_ENTRY:
                request["node_name"] = names[entry] if entry < len(names) else f"#{entry}"
            ids, requests, timeouts = groups.setdefault(
                bool(flags & wire.FLAG_STRICT), ([], [], [])
            )
            ids.append(rid)
            requests.append(request)
            timeouts.append(None if timeout_ms < 0 else timeout_ms / 1000.0)
        for strict, (ids, requests, timeouts) in groups.items():

            def ended(index: int, item: dict, error: BaseException | None, ids=ids) -> None:
                self._ended(client, ids[index], item, error)

            with client.handles_lock:  # an end must not find its id not yet registered
                handles = self.pipeline.dispatch_many(
                    requests, ended, strict=strict, timeouts_s=timeouts
                )
                for rid, handle in zip(ids, handles, strict=True):
                    client.handles.setdefault(rid, handle)

    # -- answers -----------------------------------------------------------------------------

    def _ended(self, client: _Client, rid: int, item: dict, error: BaseException | None) -> None:
        """A request ended (on whichever thread ended it): queue its outcome for the sender."""
        if error is None:
            has_result = "result" in item
            outcome = (rid, has_result, _portable(item["result"]) if has_result else None, None)
        else:
            outcome = (rid, False, None, wire.ErrorRecord.of(error))
        with client.handles_lock:
            client.handles.pop(rid, None)
        with client.outbox_lock:
            first = not client.outbox
            client.outbox.append(outcome)
        if first:
            with self._dirty_ready:
                self._dirty.append(client)
                self._dirty_ready.notify()

    def _send(self) -> None:
        while True:
            with self._dirty_ready:
                while not self._dirty and not self._closing:
                    self._dirty_ready.wait()
                if self._closing:
                    return
                dirty, self._dirty = self._dirty, []
            for client in dict.fromkeys(dirty):
                with client.outbox_lock:
                    outcomes, client.outbox = client.outbox, []
                if not outcomes or not client.open:
                    continue
                try:
                    data = wire.pickled_frame(FrameKind.RESULTS, outcomes)
                except Exception as error:  # a result that cannot travel fails its batch alone
                    logger.warning("serving: results that cannot be pickled: %s", error)
                    record = wire.ErrorRecord(
                        "BackendError", f"unpicklable result: {error}", None, None
                    )
                    data = wire.pickled_frame(
                        FrameKind.RESULTS, [(o[0], False, None, record) for o in outcomes]
                    )
                self._figures.result_frames += 1
                self._figures.requests_answered += len(outcomes)
                try:
                    with client.send_lock:
                        client.sock.sendall(data)
                except OSError as error:
                    logger.warning(
                        "serving: %s stopped reading (%s); dropping it", client.name, error
                    )
                    client.open = False
                    with contextlib.suppress(OSError):
                        client.sock.shutdown(socket.SHUT_RDWR)  # the intake thread drops it

    def _drop(self, client: _Client, selector: selectors.BaseSelector | None) -> None:
        """The client went away: cancel what it has in flight; the arena stays mapped until
        the stages let go of its records."""
        if selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                selector.unregister(client.sock)
        client.open = False
        self._clients.discard(client)
        with client.handles_lock:
            handles = list(client.handles.values())
        for handle in handles:
            handle.cancel()
        client.sock.close()


def _records(body: memoryview, kind: int) -> Any:
    record = wire.SUBMIT_RECORD if kind == FrameKind.SUBMIT else wire.CANCEL_RECORD
    if len(body) % record.size:
        raise WireError(f"a frame of kind {kind} with {len(body)} bytes of records")
    return record.iter_unpack(body)


def _portable(result: Any) -> Any:
    """A result that can travel: a view of the arena as bytes, a device tensor on the CPU."""
    if isinstance(result, memoryview):
        return bytes(result)
    device = getattr(result, "device", None)
    if device is not None and getattr(device, "type", "cpu") != "cpu":
        return result.cpu()
    return result


def serve(
    pipeline: Pipeline | str | Path | Mapping[str, Any] | PipelineConfig, address: str | Path
) -> PipelineServer:
    """Serve ``pipeline`` (a running one, or a config to build one from, then owned and closed
    with the server) to other processes on the Unix socket ``address``; ``connect(address)``
    gives them the same calls. Returns the started server."""
    owns = not isinstance(pipeline, Pipeline)
    built = pipe(pipeline) if owns else pipeline
    try:
        return PipelineServer(built, address, owns_pipeline=owns).start()
    except BaseException:
        if owns:
            built.close()
        raise


__all__ = ["PipelineServer", "serve"]
