"""An inline node (``inline = true``): the stage runs on the thread that delivers the request.

A queued node costs every request a hand-off: a lock, a wake-up, and the wait for the
interpreter lock on the worker's side. For a cheap per-item CPU stage (decode, resize) in a
process whose callers are threads anyway (an RPC server's pool), running the stage right in the
delivering thread is faster, and it parallelises as widely as the callers do (OpenCV releases
the interpreter lock). Each delivering thread gets its own backend instance, created and
initialised on first use, so the backend still never sees two threads at once.

No queue means no batching window, no ``max_queue_size`` and no ``request_timeout``: the keys
are ignored. The requests one thread delivers together run as one batch (split at ``max``).
"""

from __future__ import annotations

import logging
import threading

from ..backends.base import Backend
from ..backends.tree import instantiate
from ..config.schema import NodeConfig
from ..errors import BackendError, BackendInitError, PipelineClosedError
from ..metrics import InstanceCounters
from .node import Job, Node, Router

logger = logging.getLogger(__name__)


class InlineNode(Node):
    """A node with no queue and no threads of its own: ``put`` runs the batch and routes it."""

    def __init__(self, config: NodeConfig, router: Router):
        super().__init__(config, router)
        self._counters = []  # one per thread that has run this stage
        self._placements = []
        self._backends: list[Backend] = []
        self._local = threading.local()
        self._instances_lock = threading.Lock()

    def start(self) -> None:
        """Create one instance on the starting thread: it proves the backend initialises and
        settles the batch range before any request arrives."""
        backend, _ = self._thread_instance()
        self._set_batch_range([backend])
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
        with self._instances_lock:
            index = len(self._counters)
            counters = InstanceCounters()
            self._counters.append(counters)
            self._placements.append(None)
        backend = instantiate(self.config.backend)
        try:
            backend.init(self._instance_params(index))
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
        with self._cond:
            if not self._accepting:
                raise PipelineClosedError(
                    "the pipeline is closed", node=self.name, backend=self.backend_name
                )
            self._in_service += len(jobs)
        try:
            backend, counters = self._thread_instance()
        except BackendInitError as error:
            logger.error("node %s: %s", self.name, error)
            with self._cond:
                self._in_service -= len(jobs)
                self._cond.notify_all()
            for item, handle, _ in jobs:
                handle.end_branch(self.name, item, BackendError(str(error), node=self.name))
            return
        for start in range(0, len(jobs), self.max_batch):
            # _execute gives back the in-service count of each chunk before routing it on.
            self._execute(backend, jobs[start : start + self.max_batch], counters)

    def close(self) -> None:
        """Stop intake and wait for the batches still running on delivering threads."""
        with self._cond:
            self._accepting = False
            self._draining = True
            while self._in_service:
                self._cond.wait()
        with self._instances_lock:
            backends = list(self._backends)
        for backend in backends:  # on the closing thread: their own threads may be gone
            try:
                backend.close()
            except Exception:
                logger.exception("node %s: closing an inline instance failed", self.name)
