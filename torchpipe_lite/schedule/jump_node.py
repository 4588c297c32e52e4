"""Jump and MapReduce nodes: a request goes through another graph of the pipeline, and on.

Neither has a queue or instances: ``put`` sends each request (Jump) or each element of its
list (MapReduce) into the graph at ``jump`` as sub-requests, which queue and batch with every
other request there; the last one to end routes the request on from this node. No thread
waits meanwhile. A sub-request shares its parent's deadline and cancellation.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from ..config.schema import NodeConfig
from ..errors import InvalidInputError, RequestError
from ..metrics import InstanceCounters, NodeStats, add_figures
from .intake import Endings, Intake
from .job import Job, Router
from .request import RequestHandle, SubRequestHandle

#: Starts requests at a root of the pipeline: ``enter(root, handles)`` (raises when refused).
Enter = Callable[[str, list[RequestHandle]], None]


class JumpNode:
    """A ``Stage`` whose backend is ``Jump`` or ``MapReduce`` (see the module docstring)."""

    def __init__(self, config: NodeConfig, router: Router, enter: Enter):
        self.config = config
        self.name = config.name
        self.backend_name = str(config.backend)
        self._ends = Endings(self.name, self.backend_name, router)
        self._enter = enter
        self._target = config.jump
        self._map_reduce = config.backend.name == "MapReduce"
        self._split = _keys(config.params.get("split", "data"))
        self._merge = _keys(config.params.get("merge", "result"))
        self._counters = InstanceCounters()
        self._counters_lock = threading.Lock()  # requests end on many threads here
        self._intake = Intake(self.name, self.backend_name)

    def start(self) -> None:
        """Nothing to start: the graph it jumps to has its own nodes."""

    def batch_range(self) -> tuple[int, int]:
        return 1, 1

    def feed_from(self, upstream: Sequence[Any] | None) -> None:
        """Nothing to do: no batch waits to fill here."""

    def put(self, jobs: list[Job]) -> None:
        """Start each job's sub-requests; the job routes on once they have all ended."""
        self._intake.admit(len(jobs))
        for job in jobs:
            try:
                parts = self._split_of(job.item) if self._map_reduce else [dict(job.item)]
            except InvalidInputError as error:
                error.node, error.backend = self.name, self.backend_name
                self._end(job, error)
                continue
            _Gather(self, job, parts).start()

    def _split_of(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        """One dict per element of the ``split`` lists (all of one length)."""
        lengths = set()
        for key in self._split:
            value = item.get(key)
            if not isinstance(value, list | tuple):
                raise InvalidInputError(
                    f"split key {key!r} holds {type(value).__name__}, not a list"
                )
            lengths.add(len(value))
        if len(lengths) > 1:
            raise InvalidInputError(f"the split lists differ in length: {sorted(lengths)}")
        count = lengths.pop() if lengths else 0
        return [
            {**item, **{key: item[key][index] for key in self._split}} for index in range(count)
        ]

    def _gathered(self, job: Job, parts: list[dict[str, Any]], errors: list) -> None:
        """Every sub-request of ``job`` has ended: merge, or fail with the first failure."""
        failed = next((index for index, error in enumerate(errors) if error is not None), None)
        if failed is not None:
            error = errors[failed]
            if self._map_reduce:
                wrapped = RequestError(
                    f"element {failed} of {len(parts)} failed: {error}",
                    node=self.name,
                    backend=self.backend_name,
                )
                wrapped.__cause__ = error
                error = wrapped
            self._end(job, error)
            return
        if not self._map_reduce:
            (done,) = parts
            job.item.pop("result", None)
            if "result" in done:
                job.item["result"] = done["result"]
            self._end(job, None)
            return
        for key in self._merge:
            missing = next((index for index, part in enumerate(parts) if key not in part), None)
            if missing is not None:
                self._end(job, RequestError(
                    f"element {missing} of {len(parts)} has no {key!r} to merge",
                    node=self.name,
                    backend=self.backend_name,
                ))  # fmt: skip
                return
            job.item[key] = [part[key] for part in parts]
        self._end(job, None)

    def _end(self, job: Job, error: BaseException | None) -> None:
        with self._counters_lock:
            self._counters.record_batch(
                size=1, compute_s=0.0, queue_s=0.0, failed=int(error is not None)
            )
        try:
            if error is None:
                self._ends.complete([job], [])
            else:
                self._ends.complete([], [(job, error)])
        finally:
            self._intake.release(1)

    def pending(self) -> int:
        return self._intake.in_hand

    def close(self) -> None:
        """Refuse new requests and wait for those whose sub-requests are still running."""
        self._intake.close_and_wait()

    def stats(self) -> NodeStats:
        """Its requests, each counted as a batch of one (it has no instances)."""
        stats = NodeStats(node=self.name, backend=self.backend_name, instances=0)
        with self._counters_lock:
            add_figures(stats, self._counters)
        return stats


class _Gather:
    """The sub-requests of one job, and the count of those still running."""

    def __init__(self, node: JumpNode, job: Job, parts: list[dict[str, Any]]):
        self._node = node
        self._job = job
        self._parts = parts
        self._errors: list[BaseException | None] = [None] * len(parts)
        self._lock = threading.Lock()
        self._left = len(parts)

    def start(self) -> None:
        if not self._parts:
            self._node._gathered(self._job, self._parts, self._errors)
            return
        parent = self._job.completion
        handles = [
            SubRequestHandle(part, lambda handle, at=index: self._one_done(at, handle), parent)
            for index, part in enumerate(self._parts)
        ]
        try:
            self._node._enter(self._node._target, handles)
        except RequestError as error:  # refused at the target's door: none of them runs
            self._node._end(self._job, error)

    def _one_done(self, index: int, handle: RequestHandle) -> None:
        self._errors[index] = handle.error
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            self._node._gathered(self._job, self._parts, self._errors)


def _keys(value: Any) -> tuple[str, ...]:
    return tuple(part.strip() for part in str(value).split(",") if part.strip())
