"""EngineServer: one model stage served to other processes, batching across all of them.

Several server processes on one GPU (``--workers``) each batch only their own share of the
clients, so their model batches stay near 1 and the GPU pays its per-batch cost for every
request. An engine process runs the model stage once for all of them: the workers write each
request's pixels into shared-memory slots and send four-byte slot numbers (``protocol``); the
engine queues them in a pipeline ``Node`` — the same scheduling core, batch rule, limits,
per-request re-run and counters as in-process stages — whose instances write each result back
into its slot and reply. Its per-request Python is a few small socket reads and writes, never
a copy of the image through a socket or a pickle.

Threads: one intake thread (accepts, reads slot numbers from every connection with a selector)
and the node's instance threads (form a batch, run it, reply).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.schema import NodeConfig
from ..errors import BackendInitError, RequestError
from ..schedule.job import Job
from ..schedule.node import Node
from . import protocol
from .connection import EngineConnection, accept_client
from .protocol import EngineProtocolError, SlotLayout

logger = logging.getLogger(__name__)

_READ_BYTES = 1 << 16
_PROBE_TIMEOUT_S = 600.0


@dataclass
class EngineFigures:
    """What the engine has done so far (the probe at start excluded)."""

    requests: int = 0
    failed: int = 0
    batches: int = 0
    compute_time_s: float = 0.0
    connections_open: int = 0
    connections_total: int = 0
    #: Requests received and not yet taken into a batch.
    queued: int = 0

    @property
    def mean_batch(self) -> float:
        return self.requests / self.batches if self.batches else 0.0


class _SlotCompletion:
    """A client's request: answered in its slot (results) or on its socket (errors)."""

    __slots__ = ("connection", "slot")
    deadline_s = math.inf  # the client's own node keeps the deadline

    def __init__(self, connection: EngineConnection, slot: int):
        self.connection = connection
        self.slot = slot

    def end_branch(self, node: str, item: dict[str, Any], error: BaseException | None) -> None:
        if error is None:  # not reached: successes go through the node's router
            status, message = self.connection.store(self.slot, item.get("result"))
        else:
            status, message = protocol.status_for(error), protocol.failure_text(error)
        self.connection.in_flight[self.slot] = 0
        self.connection.reply(_reply(self.slot, status, message))


class _ProbeCompletion:
    """The start-up probe's request: its result, when it has one."""

    deadline_s = math.inf

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def end_branch(self, node: str, item: dict[str, Any], error: BaseException | None) -> None:
        self.result, self.error = item.get("result"), error
        self.done.set()


class EngineServer:
    """Serves the model stage ``node`` on the Unix socket ``path`` to ``EngineTensor`` clients.

    ``input_hwc`` is the pixel geometry every request carries (uint8, height x width x
    channels). ``start()`` starts the node (its instances initialise on their threads, as in a
    pipeline), runs one probe request through it to learn the result size, and only then
    creates the socket, so a client that connects finds a ready engine. ``close()`` finishes
    the requests already received, then closes the instances.
    """

    def __init__(
        self,
        node: NodeConfig,
        path: str | Path,
        *,
        input_hwc: tuple[int, int, int],
        handshake_timeout_s: float = 5.0,
        reply_timeout_s: float = 10.0,
    ):
        self.node = node
        self.path = Path(path)
        self.input_hwc = input_hwc
        self.handshake_timeout_s = handshake_timeout_s
        self.reply_timeout_s = reply_timeout_s
        self.layout: SlotLayout | None = None
        self.min_batch = 1
        self.max_batch = 1
        self._stage = Node(node, self._reply_batch)
        self._probe_counts = (0, 0, 0.0)
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._intake_thread: threading.Thread | None = None
        self._connections: set[EngineConnection] = set()
        self._connections_lock = threading.Lock()
        self._connections_total = 0
        self._closed = False

    # -- start and stop -----------------------------------------------------------------

    def start(self) -> EngineServer:
        """Start the node, probe the result size, listen; returns self."""
        try:
            self._stage.start()
        except BaseException:
            self._wake_r.close()
            self._wake_w.close()
            raise
        self.min_batch, self.max_batch = self._stage.min_batch, self._stage.max_batch
        try:
            self.layout = self._probe()
            self._listen()
        except BaseException as error:
            self._stage.close()
            self._wake_r.close()
            self._wake_w.close()
            if isinstance(error, OSError | BackendInitError):
                raise
            raise BackendInitError(
                f"the probe request failed: {type(error).__name__}: {error}",
                node=self.node.name,
                backend=str(self.node.backend),
            ) from error
        self._intake_thread = threading.Thread(
            target=self._intake, name="engine-intake", daemon=True
        )
        self._intake_thread.start()
        logger.info(
            "engine %s: %s x%d, batch %d..%d, batching_timeout %.3g ms, input %s uint8, "
            "%d result values; serving on %s",
            self.node.name,
            self.node.backend,
            self.node.instance_num,
            self.min_batch,
            self.max_batch,
            self.node.batching_timeout_ms,
            "x".join(map(str, self.input_hwc)),
            self.layout.result_values,
            self.path,
        )
        return self

    def close(self) -> None:
        """Stop accepting, run what was received, close the instances and the socket."""
        if self._closed:
            return
        self._closed = True
        self._wake_w.send(b"x")
        if self._intake_thread is not None:
            self._intake_thread.join()
        self._stage.close()
        for connection in list(self._connections):
            connection.close()
            connection.sock.close()
        if self._listener is not None:
            self._listener.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self._wake_r.close()
        self._wake_w.close()

    def figures(self) -> EngineFigures:
        """The engine's counters (from its node's, less the start-up probe)."""
        stats = self._stage.stats()
        probe_requests, probe_batches, probe_compute_ms = self._probe_counts
        with self._connections_lock:
            open_now, total = len(self._connections), self._connections_total
        return EngineFigures(
            requests=stats.inferences - probe_requests,
            failed=stats.requests_failed + stats.requests_timed_out + stats.requests_rejected,
            batches=stats.executions - probe_batches,
            compute_time_s=(stats.compute_time_ms_total - probe_compute_ms) / 1000.0,
            connections_open=open_now,
            connections_total=total,
            queued=stats.queue_length,
        )

    def _probe(self) -> SlotLayout:
        """Run one black image through the node to learn how many values a result holds."""
        import torch

        height, width, channels = self.input_hwc
        completion = _ProbeCompletion()
        pixels = torch.zeros((1, channels, height, width), dtype=torch.uint8)
        self._stage.put([Job({"data": pixels}, completion, time.monotonic())])
        if not completion.done.wait(_PROBE_TIMEOUT_S):
            raise TimeoutError(f"the engine's probe request took over {_PROBE_TIMEOUT_S} s")
        if completion.error is not None:
            raise completion.error
        result = completion.result
        if not isinstance(result, torch.Tensor) or result.numel() == 0:
            raise TypeError(
                "the engine needs a tensor result per request; the probe got "
                f"{type(result).__name__}"
            )
        stats = self._stage.stats()
        self._probe_counts = (stats.inferences, stats.executions, stats.compute_time_ms_total)
        return SlotLayout(height, width, channels, result_values=result.numel())

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a socket file left by an engine that died
        old_umask = os.umask(0o177)  # owner-only: only this user's processes may attach
        try:
            listener.bind(str(self.path))
        except OSError:
            listener.close()
            raise
        finally:
            os.umask(old_umask)
        listener.listen(128)
        self._listener = listener

    # -- intake: accept clients, read slot numbers ------------------------------------------

    def _intake(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._listener, selectors.EVENT_READ, "listener")
        selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while True:
                for key, _ in selector.select():
                    if key.data == "wake":
                        return
                    if key.data == "listener":
                        self._accept(selector)
                    else:
                        self._read(selector, key.data)
        finally:
            selector.close()

    def _accept(self, selector: selectors.BaseSelector) -> None:
        sock, _ = self._listener.accept()
        # The handshake blocks the intake briefly: clients are this user's own processes
        # (the socket is owner-only) and answer at once.
        sock.settimeout(self.handshake_timeout_s)
        try:
            connection = accept_client(sock, self.layout, self.max_batch)
        except (OSError, EngineProtocolError) as error:
            logger.warning("engine: a client failed its handshake: %s", error)
            sock.close()
            return
        sock.settimeout(self.reply_timeout_s)
        selector.register(sock, selectors.EVENT_READ, connection)
        with self._connections_lock:
            self._connections.add(connection)
            self._connections_total += 1

    def _read(self, selector: selectors.BaseSelector, connection: EngineConnection) -> None:
        try:
            data = connection.sock.recv(_READ_BYTES)
        except OSError:
            data = b""
        if not data or not connection.open:
            self._forget(selector, connection)
            return
        data = connection.pending_bytes + data
        whole = len(data) - len(data) % protocol.SUBMIT.size
        connection.pending_bytes = data[whole:]
        slots = struct.unpack_from(f"<{whole // protocol.SUBMIT.size}I", data)
        arrived_s = time.monotonic()
        in_flight = connection.in_flight
        jobs = []
        for slot in slots:
            if slot >= connection.slot_count or in_flight[slot]:
                logger.warning(
                    "engine: a client sent slot %d (of %d, in flight: %s); closing it",
                    slot,
                    connection.slot_count,
                    slot < connection.slot_count and bool(in_flight[slot]),
                )
                connection.close()
                break
            in_flight[slot] = 1
            item = {"data": connection.rows[slot]}
            jobs.append(Job(item, _SlotCompletion(connection, slot), arrived_s))
        if jobs:
            try:
                self._stage.put(jobs)
            except RequestError as error:  # the queue is full or closing: refused, unrun
                for job in jobs:
                    job.completion.end_branch(self.node.name, job.item, error)
        if not connection.open:
            self._forget(selector, connection)

    def _forget(self, selector: selectors.BaseSelector, connection: EngineConnection) -> None:
        selector.unregister(connection.sock)
        connection.close()
        connection.sock.close()
        with self._connections_lock:
            self._connections.discard(connection)

    # -- replies (the node's instance threads) -----------------------------------------------

    def _reply_batch(self, node: str, jobs: list[Job]) -> None:
        """The node's router: each result into its slot, one send per client for the batch."""
        by_connection: dict[EngineConnection, list[bytes]] = {}
        for job in jobs:
            completion = job.completion
            if not isinstance(completion, _SlotCompletion):  # the start-up probe
                completion.end_branch(node, job.item, None)
                continue
            connection, slot = completion.connection, completion.slot
            status, message = connection.store(slot, job.item.get("result"))
            connection.in_flight[slot] = 0
            by_connection.setdefault(connection, []).append(_reply(slot, status, message))
        for connection, replies in by_connection.items():
            connection.reply(b"".join(replies))


def _reply(slot: int, status: protocol.Status, message: str) -> bytes:
    encoded = message.encode()[: protocol.MAX_MESSAGE_BYTES]
    return protocol.REPLY.pack(slot, status, len(encoded)) + encoded
