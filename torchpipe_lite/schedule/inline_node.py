"""An inline node (``inline = true``): the stage runs on the thread that delivers the request.

A queued node costs every request a hand-off: a lock, a wake-up, and the wait for the
interpreter lock on the worker's side. For a cheap per-item CPU stage (decode, resize) in a
process whose callers are threads anyway (an RPC server's pool), running the stage right in the
delivering thread is faster, and it parallelises as widely as the callers do (OpenCV releases
the interpreter lock). Each delivering thread gets its own backend instance, created and
initialised on first use, so the backend still never sees two threads at once.

No queue means no batching window, no ``max_queue_size`` and no ``request_timeout`` (the
config loader warns when an inline node sets them). The requests one thread delivers together
run as one batch (split at ``max``), through the same ``run_batch`` as a queued node's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from time import monotonic
from typing import Any

from ..backend_tree import instantiate
from ..backends.base import Backend
from ..config.schema import NodeConfig
from ..errors import BackendError, BackendInitError
from ..metrics import InstanceCounters, NodeStats, add_figures
from .execution import run_batch
from .intake import Endings, Intake
from .job import Job, Router
from .node import instance_params, settle_batch_range

logger = logging.getLogger(__name__)


class InlineNode:
    """A ``Stage`` with no queue and no threads of its own: ``put`` runs the batch and routes it.

    Its figures say so: ``instances`` counts the threads that have run it, and nothing ever
    waits in a queue here (``queue_length`` and ``requests_rejected`` stay 0).
    """

    def __init__(self, config: NodeConfig, router: Router):
        self.config = config
        self.name = config.name
        self.backend_name = str(config.backend)
        self._ends = Endings(self.name, self.backend_name, router)
        self._intake = Intake(self.name, self.backend_name)
        self._min_batch = self._max_batch = 1
        # One instance, counters and placement per thread that has run this stage.
        self._counters: list[InstanceCounters] = []
        self._placements: list[str | None] = []
        self._backends: list[Backend] = []
        self._local = threading.local()
        self._instances_lock = threading.Lock()

    def start(self) -> None:
        """Create one instance on the starting thread: it proves the backend initialises and
        settles the batch range before any request arrives."""
        backend, _ = self._thread_instance()
        self._min_batch, self._max_batch = settle_batch_range(
            self.config, [backend], self.backend_name
        )
        if self._min_batch > 1:
            raise BackendInitError(
                f"an inline node runs the requests it is given, but min is {self._min_batch}",
                node=self.name,
                backend=self.backend_name,
            )
        logger.info(
            "node %s: %s inline (on the delivering threads), batch %d..%d",
            self.name,
            self.backend_name,
            self._min_batch,
            self._max_batch,
        )

    def batch_range(self) -> tuple[int, int]:
        return self._min_batch, self._max_batch

    def feed_from(self, upstream: Sequence[Any] | None) -> None:
        """Nothing to do: no batch waits to fill here."""

    def _thread_instance(self) -> tuple[Backend, InstanceCounters]:
        local = self._local
        backend = getattr(local, "backend", None)
        if backend is not None:
            return backend, local.counters
        with self._instances_lock:
            index = len(self._counters)
            counters = InstanceCounters()
            self._counters.append(counters)
            self._placements.append(None)
        backend = instantiate(self.config.backend)
        try:
            backend.init(instance_params(self.config, index))
        except Exception as error:
            raise BackendInitError(
                f"{type(error).__name__}: {error}", node=self.name, backend=self.backend_name
            ) from error
        self._placements[index] = backend.placement()
        with self._instances_lock:
            self._backends.append(backend)
        local.backend, local.counters = backend, counters
        return backend, counters

    def put(self, jobs: list[Job]) -> None:
        """Run ``jobs`` here and now, then route them; refuses them once the node is closed."""
        self._intake.admit(len(jobs))
        remaining = len(jobs)
        try:
            try:
                backend, counters = self._thread_instance()
            except BackendInitError as error:
                logger.error("node %s: %s", self.name, error)
                failure = BackendError(str(error), node=self.name)
                self._ends.complete([], [(job, failure) for job in jobs])
                return
            now = monotonic()
            if any(job.completion.deadline_s <= now for job in jobs):
                self._ends.drop([job for job in jobs if job.completion.deadline_s <= now], counters)
                jobs = [job for job in jobs if job.completion.deadline_s > now]
            for start in range(0, len(jobs), self._max_batch):
                chunk = jobs[start : start + self._max_batch]
                ok, failed = run_batch(
                    backend, chunk, counters, node=self.name, backend_name=self.backend_name
                )
                remaining -= len(chunk)
                self._intake.release(len(chunk))
                self._ends.complete(ok, failed)
        finally:
            if remaining:
                self._intake.release(remaining)

    def pending(self) -> int:
        return self._intake.in_hand

    def stats(self) -> NodeStats:
        """A snapshot of every delivering thread's counters."""
        with self._instances_lock:
            counters, placements = list(self._counters), list(self._placements)
        stats = NodeStats(
            node=self.name,
            backend=self.backend_name,
            instances=len(counters),
            instance_placements=placements,
        )
        for part in counters:
            add_figures(stats, part)
        return stats

    def close(self) -> None:
        """Stop intake and wait for the batches still running on delivering threads."""
        self._intake.close_and_wait()
        with self._instances_lock:
            backends = list(self._backends)
        for backend in backends:  # on the closing thread: their own threads may be gone
            try:
                backend.close()
            except Exception:
                logger.exception("node %s: closing an inline instance failed", self.name)
