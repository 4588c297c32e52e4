"""EngineServer: one model stage served to other processes, batching across all of them.

Several server processes on one GPU (``--workers``) each batch only their own share of the
clients, so their model batches stay near 1 and the GPU pays its per-batch cost for every
request. An engine process runs the model stage once for all of them: the workers write each
request's pixels into shared-memory slots and send four-byte slot numbers
(``protocol``); the engine forms batches from every worker's requests with the scheduler's own
rule (``decide_batch``), runs them on its instances and writes the results back into the
slots. Its per-request Python is a few small socket reads and writes, never a copy of the image
through a socket or a pickle.

Threads: one intake thread (accepts, reads slot numbers from every connection with a selector)
and one thread per instance (forms a batch, runs it, replies).
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..backends.base import Backend
from ..backends.tree import instantiate
from ..config.schema import NodeConfig
from ..errors import BackendInitError
from ..schedule.batching import decide_batch
from ..schedule.node import instance_params
from . import protocol
from .connection import EngineConnection, accept_client
from .protocol import EngineProtocolError, SlotLayout

logger = logging.getLogger(__name__)

#: The engine never runs larger batches than this, whatever the backend accepts.
MAX_ENGINE_BATCH = 1024
_READ_BYTES = 1 << 16


@dataclass
class EngineFigures:
    """What the engine has done so far."""

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


class EngineServer:
    """Serves the model stage ``node`` on the Unix socket ``path`` to ``EngineTensor`` clients.

    ``input_hwc`` is the pixel geometry every request carries (uint8, height x width x
    channels). ``start()`` initialises ``node.instance_num`` backend instances (each on its own
    thread, as a pipeline would), runs one probe batch to learn the result size, and only then
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
        self._figures = EngineFigures()
        self._cond = threading.Condition()
        self._pending: deque[tuple[EngineConnection, int, float]] = deque()
        self._busy = 0
        self._closing = False
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._intake_thread: threading.Thread | None = None
        self._connections: set[EngineConnection] = set()

    # -- start and stop -----------------------------------------------------------------

    def start(self) -> EngineServer:
        """Initialise the instances, probe the result size, listen; returns self."""
        count = self.node.instance_num
        backends: list[Backend | None] = [None] * count
        failures: list[BaseException | None] = [None] * count
        ready = threading.Barrier(count + 1)
        for index in range(count):
            thread = threading.Thread(
                target=self._instance_main,
                args=(index, backends, failures, ready),
                name=f"engine-{self.node.name}-{index}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        ready.wait()  # every instance initialised (or failed), and instance 0 probed
        failure = next((error for error in failures if error is not None), None)
        if failure is not None:
            self._stop_instances()
            self._wake_r.close()
            self._wake_w.close()
            raise BackendInitError(
                f"{type(failure).__name__}: {failure}",
                node=self.node.name,
                backend=str(self.node.backend),
            ) from failure
        live = [backend for backend in backends if backend is not None]
        self.min_batch = max(backend.min() for backend in live)
        self.max_batch = min(MAX_ENGINE_BATCH, *(backend.max() for backend in live))
        if self.node.max_batch is not None:
            self.max_batch = min(self.max_batch, self.node.max_batch)
        try:
            self._listen()
        except OSError:
            self._stop_instances()
            raise
        self._intake_thread = threading.Thread(
            target=self._intake, name="engine-intake", daemon=True
        )
        self._intake_thread.start()
        logger.info(
            "engine %s: %s x%d, batch %d..%d, batching_timeout %.3g ms, input %s uint8, "
            "%d result values; serving on %s",
            self.node.name,
            self.node.backend,
            count,
            self.min_batch,
            self.max_batch,
            self.node.batching_timeout_ms,
            "x".join(map(str, self.input_hwc)),
            self.layout.result_values if self.layout else 0,
            self.path,
        )
        return self

    def close(self) -> None:
        """Stop accepting, run what was received, close the instances and the socket."""
        if self._closing:
            return
        self._wake_w.send(b"x")
        if self._intake_thread is not None:
            self._intake_thread.join()
        self._stop_instances()
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
        """A copy of the engine's counters."""
        with self._cond:
            return EngineFigures(**{**vars(self._figures), "queued": len(self._pending)})

    def _stop_instances(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a socket file left by an engine that died
        old_umask = os.umask(0o177)  # owner-only: only this user's processes may attach
        try:
            listener.bind(str(self.path))
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
        with self._cond:
            self._connections.add(connection)
            self._figures.connections_open += 1
            self._figures.connections_total += 1

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
        arrived_s = time.perf_counter()
        in_flight = connection.in_flight
        with self._cond:
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
                self._pending.append((connection, slot, arrived_s))
            self._cond.notify()
        if not connection.open:
            self._forget(selector, connection)

    def _forget(self, selector: selectors.BaseSelector, connection: EngineConnection) -> None:
        selector.unregister(connection.sock)
        connection.close()
        connection.sock.close()
        with self._cond:
            self._connections.discard(connection)
            self._figures.connections_open -= 1

    # -- instances: form batches, run them, reply --------------------------------------------

    def _instance_main(
        self,
        index: int,
        backends: list[Backend | None],
        failures: list[BaseException | None],
        ready: threading.Barrier,
    ) -> None:
        backend = None
        try:
            backend = instantiate(self.node.backend)
            backend.init(instance_params(self.node, index))
            backends[index] = backend
            if index == 0:
                self.layout = self._probe(backend)
        except BaseException as error:  # reported to start(), which raises it
            failures[index] = error
        ready.wait()
        if backend is None:
            return
        try:
            if not any(failures):
                self._serve(backend)
        finally:
            try:
                backend.close()
            except Exception:
                logger.exception("engine: closing instance %d failed", index)

    def _probe(self, backend: Backend) -> SlotLayout:
        """Run one black image to learn how many values a result holds."""
        import torch

        height, width, channels = self.input_hwc
        item: dict[str, Any] = {
            "data": torch.zeros((1, channels, height, width), dtype=torch.uint8)
        }
        backend.forward([item])
        result = item.get("result")
        if not isinstance(result, torch.Tensor) or result.numel() == 0:
            raise TypeError(
                "the engine needs a tensor result per request; the probe got "
                f"{type(result).__name__}"
            )
        return SlotLayout(height, width, channels, result_values=result.numel())

    def _serve(self, backend: Backend) -> None:
        batching_timeout_s = self.node.batching_timeout_ms / 1000.0
        cond, pending = self._cond, self._pending
        while True:
            with cond:
                while True:
                    queued = len(pending)
                    # Draining runs whatever is left, however few (backends pad to their min).
                    if self._closing and not queued:
                        return
                    decision = decide_batch(
                        queued=queued,
                        oldest_wait_s=time.perf_counter() - pending[0][2] if queued else 0.0,
                        busy_instances=self._busy,
                        min_batch=1 if self._closing else self.min_batch,
                        max_batch=self.max_batch,
                        batching_timeout_s=batching_timeout_s,
                        draining=self._closing,
                    )
                    if decision.size:
                        jobs = [pending.popleft() for _ in range(decision.size)]
                        self._busy += 1
                        break
                    cond.wait(decision.wait_s)
            started_s = time.perf_counter()
            try:
                outcomes = self._run(backend, jobs)
            finally:
                with cond:
                    self._busy -= 1
                    self._figures.batches += 1
                    self._figures.requests += len(jobs)
                    self._figures.compute_time_s += time.perf_counter() - started_s
                    cond.notify_all()  # an idle instance may now take a partial batch
            self._reply(jobs, outcomes)

    def _run(
        self, backend: Backend, jobs: list[tuple[EngineConnection, int, float]]
    ) -> list[tuple[int, str]]:
        """Run ``jobs`` as one batch and write each result into its slot; each job's status.

        A failed batch of several is run again one job at a time, so only a job that fails
        alone gets the error (the scheduler's rule).
        """
        items = [{"data": connection.rows[slot]} for connection, slot, _ in jobs]
        try:
            backend.forward(items)
        except Exception as error:
            if len(jobs) == 1:
                return [(protocol.STATUS_ERROR, f"{type(error).__name__}: {error}")]
            return [outcome for job in jobs for outcome in self._run(backend, [job])]
        return [
            connection.store(slot, item.get("result"))
            for item, (connection, slot, _) in zip(items, jobs, strict=True)
        ]

    def _reply(
        self, jobs: list[tuple[EngineConnection, int, float]], outcomes: list[tuple[int, str]]
    ) -> None:
        by_connection: dict[EngineConnection, list[bytes]] = {}
        failed = 0
        for (connection, slot, _), (status, message) in zip(jobs, outcomes, strict=True):
            encoded = message.encode()[: protocol.MAX_MESSAGE_BYTES]
            failed += status == protocol.STATUS_ERROR
            connection.in_flight[slot] = 0
            by_connection.setdefault(connection, []).append(
                protocol.REPLY.pack(slot, status, len(encoded)) + encoded
            )
        if failed:
            with self._cond:
                self._figures.failed += failed
        for connection, replies in by_connection.items():
            connection.reply(b"".join(replies))
