"""One pipeline node: a queue, ``instance_num`` backend instances each on its own worker thread."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from time import monotonic
from typing import Any

from ..backends.base import UNBOUNDED_BATCH, Backend, param_device_ids
from ..backends.tree import instantiate
from ..config.schema import NodeConfig
from ..errors import (
    BackendError,
    BackendInitError,
    OverloadedError,
    PipelineClosedError,
    RequestError,
    RequestTimeoutError,
)
from ..metrics import InstanceCounters, NodeStats
from .batching import decide_batch
from .request import RequestHandle

logger = logging.getLogger(__name__)

#: A queued request: (item dict, its handle, monotonic time it entered this queue).
Job = tuple[dict[str, Any], RequestHandle, float]
#: Called by a worker with the jobs a batch finished successfully (routing to the next node).
Router = Callable[["Node", list[Job]], None]


class Node:
    """Queues requests for one stage and runs them in dynamically formed batches.

    Workers call ``router`` with the jobs of each finished batch, on their own thread, so a
    request moves into the next node's queue with no extra thread hop.
    """

    def __init__(self, config: NodeConfig, router: Router):
        self.config = config
        self.name = config.name
        self.backend_name = str(config.backend)
        self._router = router
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._busy = 0
        self._in_service = 0  # items taken from the queue whose batch has not finished yet
        self._timed_waiters = 0  # workers waiting for a batch to fill, with a deadline
        #: Every node whose requests will reach this one (set by the pipeline); ``None`` for an
        #: entry node, whose callers cannot be counted.
        self.upstream: tuple[Node, ...] | None = None
        self._accepting = True
        self._draining = False
        self._rejected = 0
        self._request_timeout_s = config.request_timeout_ms / 1000.0
        self._batching_timeout_s = config.batching_timeout_ms / 1000.0
        self.min_batch = 1
        self.max_batch = 1
        self._counters = [InstanceCounters() for _ in range(config.instance_num)]
        self._placements: list[str | None] = [None] * config.instance_num
        self._threads: list[threading.Thread] = []
        self._go = threading.Event()

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
            self.min_batch,
            self.max_batch,
            self.config.batching_timeout_ms,
            f", on {', '.join(places)}" if places else "",
        )
        self._go.set()

    def _set_batch_range(self, backends: Sequence[Backend]) -> None:
        backend_min = max(backend.min() for backend in backends)
        backend_max = min(backend.max() for backend in backends)
        configured_min, configured_max = self.config.min_batch, self.config.max_batch
        if configured_max is not None and configured_max > backend_max:
            raise BackendInitError(
                f"max = {configured_max} exceeds what the backend accepts ({backend_max})",
                node=self.name,
                backend=self.backend_name,
            )
        if configured_min is not None and configured_min < backend_min:
            raise BackendInitError(
                f"min = {configured_min} is below what the backend accepts ({backend_min})",
                node=self.name,
                backend=self.backend_name,
            )
        if configured_max is not None:
            self.max_batch = configured_max
        else:
            self.max_batch = backend_max if backend_max != UNBOUNDED_BATCH else backend_min
        self.min_batch = configured_min if configured_min is not None else backend_min
        if self.min_batch > self.max_batch:
            raise BackendInitError(
                f"batch range {self.min_batch}..{self.max_batch} is empty",
                node=self.name,
                backend=self.backend_name,
            )

    def _abort_start(self) -> None:
        with self._cond:
            self._accepting = False
            self._draining = True
        self._go.set()
        for thread in self._threads:
            thread.join()

    def close(self) -> None:
        """Stop intake, run everything queued, and join the workers."""
        with self._cond:
            self._accepting = False
            self._draining = True
            self._cond.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()

    # -- intake --------------------------------------------------------------------------------

    def put(self, jobs: list[Job]) -> None:
        """Queue ``jobs``; raises ``OverloadedError``/``PipelineClosedError`` for all of them."""
        cond = self._cond
        with cond:
            if not self._accepting:
                raise PipelineClosedError(
                    "the pipeline is closed", node=self.name, backend=self.backend_name
                )
            queue = self._queue
            before = len(queue)
            limit = self.config.max_queue_size
            if limit and before + len(jobs) > limit:
                self._rejected += len(jobs)
                raise OverloadedError(
                    f"queue full ({before} of {limit} requests waiting)",
                    node=self.name,
                    backend=self.backend_name,
                )
            queue.extend(jobs)
            after = before + len(jobs)
            # Wake a worker only when the decision can change: the queue was empty (start the
            # batching timer), it reached the minimum, or it holds a full batch.
            # A worker waiting for its batch to fill is woken too: the arrival may be the last
            # one upstream, after which waiting cannot fill the batch any more.
            if (
                before == 0
                or after >= self.max_batch
                or before < self.min_batch <= after
                or self._timed_waiters
            ):
                cond.notify()

    # -- workers -------------------------------------------------------------------------------

    def _instance_main(self, index: int, backends: list, errors: list, ready) -> None:
        backend = None
        try:
            backend = instantiate(self.config.backend)
            backend.init(self._instance_params(index))
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

    def _instance_params(self, index: int) -> dict[str, Any]:
        return instance_params(self.config, index)

    def _serve(self, backend: Backend, counters: InstanceCounters) -> None:
        cond, queue = self._cond, self._queue
        ran_batch = False
        while True:
            expired: list[Job] = []
            leftovers: list[Job] = []
            jobs: list[Job] = []
            with cond:
                if ran_batch:
                    self._busy -= 1
                while True:
                    now = monotonic()
                    if self._request_timeout_s and queue:
                        deadline = now - self._request_timeout_s
                        while queue and queue[0][2] < deadline:
                            expired.append(queue.popleft())
                        if expired:
                            break
                    decision = decide_batch(
                        queued=len(queue),
                        oldest_wait_s=now - queue[0][2] if queue else 0.0,
                        busy_instances=self._busy,
                        min_batch=self.min_batch,
                        max_batch=self.max_batch,
                        batching_timeout_s=self._batching_timeout_s,
                        draining=self._draining,
                        upstream_pending=self._upstream_pending(),
                    )
                    if decision.size:
                        jobs = [queue.popleft() for _ in range(decision.size)]
                        self._busy += 1
                        self._in_service += decision.size
                        if queue:
                            cond.notify()  # more work: let another idle instance look
                        break
                    if self._draining:
                        leftovers = list(queue)  # fewer than min_batch: they can never run
                        queue.clear()
                        break
                    if decision.wait_s is None:
                        cond.wait()
                    else:
                        self._timed_waiters += 1
                        cond.wait(decision.wait_s)
                        self._timed_waiters -= 1
            ran_batch = bool(jobs)
            if expired:
                self._fail_expired(expired, counters)
            elif jobs:
                self._execute(backend, jobs, counters)
            else:
                self._fail_leftovers(leftovers, counters)
                return

    def _upstream_pending(self) -> int | None:
        """Requests queued or running in the stages that feed this one (a racy, cheap read)."""
        if self.upstream is None:
            return None
        return sum(len(node._queue) + node._in_service for node in self.upstream)

    def _fail_expired(self, jobs: list[Job], counters: InstanceCounters) -> None:
        counters.requests_timed_out += len(jobs)
        for item, handle, _ in jobs:
            handle.end_branch(
                self.name,
                item,
                RequestTimeoutError(
                    f"waited over request_timeout = {self.config.request_timeout_ms:g} ms",
                    node=self.name,
                    backend=self.backend_name,
                ),
            )

    def _fail_leftovers(self, jobs: list[Job], counters: InstanceCounters) -> None:
        counters.requests_failed += len(jobs)
        for item, handle, _ in jobs:
            handle.end_branch(
                self.name,
                item,
                PipelineClosedError(
                    f"closed with fewer than min = {self.min_batch} requests queued",
                    node=self.name,
                    backend=self.backend_name,
                ),
            )

    def _execute(self, backend: Backend, jobs: list[Job], counters: InstanceCounters) -> None:
        items = [job[0] for job in jobs]
        start = monotonic()
        failures = self._forward(backend, items, counters)
        end = monotonic()
        with self._cond:  # before routing, so downstream sees them leave here as they arrive
            self._in_service -= len(jobs)
            if self._draining and not self._in_service:
                self._cond.notify_all()  # an inline node's close() waits for this
        counters.compute_time_s += end - start
        counters.request_compute_time_s += (end - start) * len(jobs)
        counters.queue_time_s += sum(start - job[2] for job in jobs)
        counters.inferences += len(jobs)
        counters.batch_sizes[len(jobs)] += 1
        if failures:
            counters.requests_failed += len(failures)
            for position, error in failures.items():
                item, handle, _ = jobs[position]
                handle.end_branch(self.name, item, error)
            jobs = [job for position, job in enumerate(jobs) if position not in failures]
        counters.requests_ok += len(jobs)
        if jobs:
            try:
                self._router(self, jobs)
            except Exception:  # a router bug must not kill the worker or strand callers
                logger.exception("node %s: routing failed", self.name)
                for item, handle, _ in jobs:
                    handle.end_branch(
                        self.name, item, BackendError("internal routing error", node=self.name)
                    )

    def _forward(
        self, backend: Backend, items: list[dict[str, Any]], counters: InstanceCounters
    ) -> dict[int, RequestError]:
        """Run the batch; on failure run each item alone so only the culprits fail."""
        inputs = [item.get("data") for item in items]
        counters.executions += 1
        try:
            backend.forward(items)
            return {}
        except Exception as error:
            if len(items) == 1:
                return {0: self._request_error(error)}
            logger.debug("node %s: batch of %d failed, retrying alone", self.name, len(items))
        failures: dict[int, RequestError] = {}
        for position, (item, data) in enumerate(zip(items, inputs, strict=True)):
            item["data"] = data  # undo whatever the failed batch did to the item
            item.pop("result", None)
            counters.executions += 1
            try:
                backend.forward([item])
            except Exception as error:
                failures[position] = self._request_error(error)
        return failures

    def _request_error(self, error: Exception) -> RequestError:
        if isinstance(error, RequestError):
            if error.node is None:
                error.node, error.backend = self.name, self.backend_name
            return error
        wrapped = BackendError(
            f"{type(error).__name__}: {error}", node=self.name, backend=self.backend_name
        )
        wrapped.__cause__ = error
        return wrapped

    # -- figures -------------------------------------------------------------------------------

    def stats(self) -> NodeStats:
        """A snapshot of this node's counters."""
        stats = NodeStats(
            node=self.name,
            backend=self.backend_name,
            instances=len(self._counters),
            requests_rejected=self._rejected,
            queue_length=len(self._queue),
            instance_placements=list(self._placements),
        )
        for counters in self._counters:
            counters.add_to(stats)
        return stats


def instance_params(config: NodeConfig, index: int) -> dict[str, Any]:
    """The parameters instance ``index`` of a node is initialised with: the node's own, its
    index and count, and its GPU when ``device_id`` lists several (round-robin)."""
    params = {**config.params, "instance_index": index, "instance_num": config.instance_num}
    device_ids = param_device_ids(params)
    if device_ids is not None:
        params["device_id"] = device_ids[index % len(device_ids)]
    return params
