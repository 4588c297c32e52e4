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
from time import monotonic

from ..backend_tree import instantiate
from ..backends.base import Backend
from ..config.schema import NodeConfig
from ..errors import BackendError, BackendInitError, PipelineClosedError
from ..metrics import InstanceCounters
from .execution import run_batch
from .job import Job, Router
from .node import Node, batch_range, instance_params

logger = logging.getLogger(__name__)


class InlineNode(Node):
    """A node with no queue and no threads of its own: ``put`` runs the batch and routes it."""

    def __init__(self, config: NodeConfig, router: Router):
        super().__init__(config, router)
        self._counters = []  # one per thread that has run this stage
        self._placements = []
        self._backends: list[Backend] = []
        self._local = threading.local()
        self._state = threading.Condition(threading.Lock())
        self._accepting = True
        self._in_service = 0

    def start(self) -> None:
        """Create one instance on the starting thread: it proves the backend initialises and
        settles the batch range before any request arrives."""
        backend, _ = self._thread_instance()
        self.queue.min_batch, self.queue.max_batch = batch_range(
            self.config, [backend], self.backend_name
        )
        if self.min_batch > 1:
            raise BackendInitError(
                f"an inline node runs the requests it is given, but min is {self.min_batch}",
                node=self.name,
                backend=self.backend_name,
            )
        logger.info(
            "node %s: %s inline (on the delivering threads), batch %d..%d",
            self.name,
            self.backend_name,
            self.min_batch,
            self.max_batch,
        )

    def _thread_instance(self) -> tuple[Backend, InstanceCounters]:
        local = self._local
        backend = getattr(local, "backend", None)
        if backend is not None:
            return backend, local.counters
        with self._state:
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
        with self._state:
            self._backends.append(backend)
        local.backend, local.counters = backend, counters
        return backend, counters

    def put(self, jobs: list[Job]) -> None:
        """Run ``jobs`` here and now, then route them; refuses them once the node is closed."""
        with self._state:
            if not self._accepting:
                raise PipelineClosedError(
                    "the pipeline is closed", node=self.name, backend=self.backend_name
                )
            self._in_service += len(jobs)
        remaining = len(jobs)
        try:
            try:
                backend, counters = self._thread_instance()
            except BackendInitError as error:
                logger.error("node %s: %s", self.name, error)
                failure = BackendError(str(error), node=self.name)
                self.complete([], [(job, failure) for job in jobs])
                return
            now = monotonic()
            if any(job.completion.deadline_s <= now for job in jobs):
                self.drop([job for job in jobs if job.completion.deadline_s <= now], counters)
                jobs = [job for job in jobs if job.completion.deadline_s > now]
            for start in range(0, len(jobs), self.max_batch):
                chunk = jobs[start : start + self.max_batch]
                ok, failed = run_batch(
                    backend, chunk, counters, node=self.name, backend_name=self.backend_name
                )
                remaining -= len(chunk)
                self._finished(len(chunk))
                self.complete(ok, failed)
        finally:
            if remaining:
                self._finished(remaining)

    def _finished(self, count: int) -> None:
        with self._state:
            self._in_service -= count
            if not self._accepting and self._in_service <= 0:
                self._state.notify_all()

    def pending(self) -> int:
        return self._in_service

    def close(self) -> None:
        """Stop intake and wait for the batches still running on delivering threads."""
        with self._state:
            self._accepting = False
            while self._in_service > 0:
                self._state.wait()
        with self._state:
            backends = list(self._backends)
        for backend in backends:  # on the closing thread: their own threads may be gone
            try:
                backend.close()
            except Exception:
                logger.exception("node %s: closing an inline instance failed", self.name)
