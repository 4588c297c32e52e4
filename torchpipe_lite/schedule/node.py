"""One pipeline node: a ``StageQueue`` and ``instance_num`` backend instances, each on a thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from ..backend_tree import instantiate
from ..backends.base import UNBOUNDED_BATCH, Backend, param_device_ids
from ..config.schema import NodeConfig
from ..errors import BackendInitError, PipelineClosedError, RequestTimeoutError
from ..metrics import InstanceCounters, NodeStats, add_figures
from .execution import run_batch
from .intake import Endings
from .job import Job, Router
from .stage_queue import StageQueue

logger = logging.getLogger(__name__)


class Node:
    """Queues requests for one stage and runs them in dynamically formed batches (a ``Stage``).

    Each instance thread takes a batch from the node's queue, runs it, and calls ``router``
    with the jobs that succeeded, on its own thread, so a request moves into the next node's
    queue with no extra thread hop; a failed request's completion is told at once.
    """

    def __init__(self, config: NodeConfig, router: Router):
        self.config = config
        self.name = config.name
        self.backend_name = str(config.backend)
        self._ends = Endings(self.name, self.backend_name, router)
        self.queue = StageQueue(
            self.name,
            self.backend_name,
            batching_timeout_ms=config.batching_timeout_ms,
            request_timeout_ms=config.request_timeout_ms,
            max_queue_size=config.max_queue_size,
        )
        self._counters = [InstanceCounters() for _ in range(config.instance_num)]
        self._placements: list[str | None] = [None] * config.instance_num
        self._threads: list[threading.Thread] = []
        self._go = threading.Event()

    def batch_range(self) -> tuple[int, int]:
        return self.queue.min_batch, self.queue.max_batch

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Create and initialise every instance on its own thread; raise if any fails."""
        count = self.config.instance_num
        backends: list[Backend | None] = [None] * count
        errors: list[BaseException | None] = [None] * count
        ready = threading.Semaphore(0)
        for index in range(count):
            thread = threading.Thread(
                target=self._instance_main,
                args=(index, backends, errors, ready),
                name=f"tp-{self.name}-{index}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()
        for _ in range(count):
            ready.acquire()
        failure = next((error for error in errors if error is not None), None)
        if failure is None:
            try:
                self._set_batch_range([backend for backend in backends if backend is not None])
            except BackendInitError as error:
                failure = error
        if failure is not None:
            self._abort_start()
            if isinstance(failure, BackendInitError):
                raise failure
            raise BackendInitError(
                f"{type(failure).__name__}: {failure}", node=self.name, backend=self.backend_name
            ) from failure
        places = sorted({str(place) for place in self._placements if place is not None})
        logger.info(
            "node %s: %s x%d, batch %d..%d, batching_timeout %.3g ms%s",
            self.name,
            self.backend_name,
            count,
            *self.batch_range(),
            self.config.batching_timeout_ms,
            f", on {', '.join(places)}" if places else "",
        )
        self._go.set()

    def _set_batch_range(self, backends: Sequence[Backend]) -> None:
        self.queue.min_batch, self.queue.max_batch = settle_batch_range(
            self.config, backends, self.backend_name
        )

    def _abort_start(self) -> None:
        self.queue.close()
        self._go.set()
        for thread in self._threads:
            thread.join()

    def close(self) -> None:
        """Stop intake, run everything queued, and join the workers."""
        self.queue.close()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()

    # -- intake and workers --------------------------------------------------------------------

    def put(self, jobs: list[Job]) -> None:
        """Queue ``jobs``; raises ``OverloadedError``/``PipelineClosedError`` for all of them."""
        self.queue.put(jobs)

    def pending(self) -> int:
        """Requests queued or running here (for the batching decisions of the nodes it feeds)."""
        return self.queue.pending()

    def feed_from(self, upstream: Sequence[Any] | None) -> None:
        self.queue.upstream = tuple(upstream) if upstream else None

    def _instance_main(self, index: int, backends: list, errors: list, ready) -> None:
        backend = None
        try:
            backend = instantiate(self.config.backend)
            backend.init(instance_params(self.config, index))
            self._placements[index] = backend.placement()
            backends[index] = backend
        except BaseException as error:  # reported to start(), which raises it in the caller
            errors[index] = error
        finally:
            ready.release()
        if backends[index] is None:
            return
        self._go.wait()
        try:
            self._serve(backend, self._counters[index])
        finally:
            try:
                backend.close()
            except Exception:
                logger.exception("node %s: closing instance %d failed", self.name, index)

    def _serve(self, backend: Backend, counters: InstanceCounters) -> None:
        queue, ends = self.queue, self._ends
        while True:
            taken = queue.take()
            if taken.batch:
                ok, failed = run_batch(
                    backend, taken.batch, counters, node=self.name, backend_name=self.backend_name
                )
                queue.finish(len(taken.batch))
                ends.complete(ok, failed)
            if taken.abandoned:
                ends.drop(taken.abandoned, counters)
            if taken.expired:
                counters.requests_timed_out += len(taken.expired)
                ends.fail(taken.expired, self._timeout_error)
            if taken.closed:
                counters.requests_failed += len(taken.leftovers)
                ends.fail(taken.leftovers, self._leftover_error)
                return

    def _timeout_error(self) -> RequestTimeoutError:
        return RequestTimeoutError(
            f"waited over request_timeout = {self.config.request_timeout_ms:g} ms",
            node=self.name,
            backend=self.backend_name,
        )

    def _leftover_error(self) -> PipelineClosedError:
        return PipelineClosedError(
            f"closed with fewer than min = {self.queue.min_batch} requests queued",
            node=self.name,
            backend=self.backend_name,
        )

    # -- figures -------------------------------------------------------------------------------

    def stats(self) -> NodeStats:
        """A snapshot of this node's counters."""
        stats = NodeStats(
            node=self.name,
            backend=self.backend_name,
            instances=len(self._counters),
            requests_rejected=self.queue.rejected,
            queue_length=len(self.queue),
            instance_placements=list(self._placements),
        )
        for counters in self._counters:
            add_figures(stats, counters)
        return stats


def settle_batch_range(config: NodeConfig, backends: Sequence[Backend], backend_name: str) -> tuple:
    """The (min, max) batch a node runs: its configured bounds within what every instance's
    backend accepts (``BackendInitError`` when they do not fit)."""
    backend_min = max(backend.min() for backend in backends)
    backend_max = min(backend.max() for backend in backends)
    configured_min, configured_max = config.min_batch, config.max_batch
    if configured_max is not None and configured_max > backend_max:
        raise BackendInitError(
            f"max = {configured_max} exceeds what the backend accepts ({backend_max})",
            node=config.name,
            backend=backend_name,
        )
    if configured_min is not None and configured_min < backend_min:
        raise BackendInitError(
            f"min = {configured_min} is below what the backend accepts ({backend_min})",
            node=config.name,
            backend=backend_name,
        )
    if configured_max is not None:
        max_batch = configured_max
    else:
        max_batch = backend_max if backend_max != UNBOUNDED_BATCH else backend_min
    min_batch = configured_min if configured_min is not None else backend_min
    if min_batch > max_batch:
        raise BackendInitError(
            f"batch range {min_batch}..{max_batch} is empty", node=config.name, backend=backend_name
        )
    return min_batch, max_batch


def instance_params(config: NodeConfig, index: int) -> dict[str, Any]:
    """The parameters instance ``index`` of a node is initialised with: the node's own, its
    index and count, and its GPU when ``device_id`` lists several (round-robin)."""
    params = {**config.params, "instance_index": index, "instance_num": config.instance_num}
    device_ids = param_device_ids(params)
    if device_ids is not None:
        params["device_id"] = device_ids[index % len(device_ids)]
    return params
