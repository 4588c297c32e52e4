"""One stage's queue and every policy on it: admission, expiry, batch forming, draining.

This is the scheduling core. A queued node's instance threads (``Node``) take their batches
from a ``StageQueue``; callers and upstream nodes put jobs into it. The batch-forming decision
itself is ``batching.decide_batch``, a pure function; this class feeds it the queue's state
and acts on what it says.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from time import monotonic

from ..errors import OverloadedError
from .batching import decide_batch
from .intake import Intake
from .job import Job


@dataclass(slots=True)
class Taken:
    """What ``StageQueue.take`` hands an instance: a batch to run, jobs whose request timeout
    passed (fail them), jobs whose own deadline passed or whose caller cancelled them (fail
    them), or, once the queue is closed and drained, the jobs too few to ever form a batch
    (fail them; ``closed`` is then set and the instance stops)."""

    batch: list[Job] = field(default_factory=list)
    expired: list[Job] = field(default_factory=list)
    abandoned: list[Job] = field(default_factory=list)
    leftovers: list[Job] = field(default_factory=list)
    closed: bool = False


class StageQueue:
    """Jobs waiting for one stage, and the instances' view of them.

    ``min_batch`` and ``max_batch`` are set once the backends are known (before the first
    ``take``). ``upstream`` lists the queues whose jobs will reach this one (``None`` for an
    entry node, whose callers cannot be counted): while nothing is pending there, waiting
    cannot fill a batch, so none is waited for.
    """

    def __init__(
        self,
        name: str,
        backend_name: str,
        *,
        batching_timeout_ms: float = 0.0,
        request_timeout_ms: float = 0.0,
        max_queue_size: int = 0,
    ):
        self.name = name
        self.backend_name = backend_name
        self.batching_timeout_s = batching_timeout_ms / 1000.0
        self.request_timeout_ms = request_timeout_ms
        self._request_timeout_s = request_timeout_ms / 1000.0
        self.max_queue_size = max_queue_size
        self.min_batch = 1
        self.max_batch = 1
        self.upstream: Sequence[StageQueue] | None = None
        #: Requests refused at intake because the queue was full.
        self.rejected = 0
        self._jobs: deque[Job] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._busy = 0  # instances running a batch
        self._timed_waiters = 0  # instances waiting, with a deadline, for a batch to fill
        # Its door, and the jobs in hand: taken by an instance and not yet finished.
        self._intake = Intake(name, backend_name, self._cond)

    # -- intake --------------------------------------------------------------------------------

    def put(self, jobs: list[Job]) -> None:
        """Queue ``jobs``, all or none: ``PipelineClosedError`` once closed, ``OverloadedError``
        when they would take the queue past ``max_queue_size``."""
        cond = self._cond
        with cond:
            self._intake.refuse_if_closed_locked()
            queue = self._jobs
            before = len(queue)
            limit = self.max_queue_size
            if limit and before + len(jobs) > limit:
                self.rejected += len(jobs)
                raise OverloadedError(
                    f"queue full ({before} of {limit} requests waiting)",
                    node=self.name,
                    backend=self.backend_name,
                )
            queue.extend(jobs)
            after = before + len(jobs)
            # Wake an instance only when the decision can change: the queue was empty (start
            # the batching timer), it reached the minimum, or it holds a full batch. An
            # instance waiting for its batch to fill is woken too: the arrival may be the last
            # one upstream, after which waiting cannot fill the batch any more.
            if (
                before == 0
                or after >= self.max_batch
                or before < self.min_batch <= after
                or self._timed_waiters
            ):
                cond.notify()

    # -- the instances' side -------------------------------------------------------------------

    def take(self) -> Taken:
        """Block until there is something for an instance to do (see ``Taken``)."""
        cond, queue, intake = self._cond, self._jobs, self._intake
        with cond:
            while True:
                now = monotonic()
                if self._request_timeout_s and queue:
                    deadline = now - self._request_timeout_s
                    expired = []
                    while queue and queue[0].enqueued_s < deadline:
                        expired.append(queue.popleft())
                    if expired:
                        return Taken(expired=expired)
                decision = decide_batch(
                    queued=len(queue),
                    oldest_wait_s=now - queue[0].enqueued_s if queue else 0.0,
                    busy_instances=self._busy,
                    min_batch=self.min_batch,
                    max_batch=self.max_batch,
                    batching_timeout_s=self.batching_timeout_s,
                    draining=not intake.open,
                    upstream_pending=self._upstream_pending(),
                )
                if decision.size:
                    batch = [queue.popleft() for _ in range(decision.size)]
                    if any(job.completion.deadline_s <= now for job in batch):
                        batch, abandoned = self._without_abandoned(batch, now)
                        if not batch:
                            return Taken(abandoned=abandoned)
                    else:
                        abandoned = []
                    self._busy += 1
                    intake.take_locked(len(batch))
                    if queue:
                        cond.notify()  # more work: let another idle instance look
                    return Taken(batch=batch, abandoned=abandoned)
                if not intake.open:
                    leftovers = list(queue)  # fewer than min_batch: they can never run
                    queue.clear()
                    return Taken(leftovers=leftovers, closed=True)
                if decision.wait_s is None:
                    cond.wait()
                else:
                    self._timed_waiters += 1
                    cond.wait(decision.wait_s)
                    self._timed_waiters -= 1

    def _without_abandoned(self, batch: list[Job], now: float) -> tuple[list[Job], list[Job]]:
        """(the jobs still wanted, the ones whose deadline passed); the wanted ones go back to
        the head of the queue when they are now too few for a batch."""
        live = [job for job in batch if job.completion.deadline_s > now]
        abandoned = [job for job in batch if job.completion.deadline_s <= now]
        if len(live) < self.min_batch:
            self._jobs.extendleft(reversed(live))
            live = []
        return live, abandoned

    def finish(self, count: int) -> None:
        """A batch of ``count`` jobs taken from here has run (before it is routed on, so that
        downstream sees the jobs leave here as they arrive there)."""
        with self._cond:
            self._busy -= 1
            self._intake.release_locked(count)  # wakes wait_idle() after the last

    def pending(self) -> int:
        """Jobs queued or running here (a racy, cheap read, for downstream decisions)."""
        return len(self._jobs) + self._intake.in_hand

    def _upstream_pending(self) -> int | None:
        if self.upstream is None:
            return None
        return sum(queue.pending() for queue in self.upstream)

    # -- closing -------------------------------------------------------------------------------

    def close(self) -> None:
        """Refuse new jobs; instances run what is queued, then ``take`` returns ``closed``."""
        with self._cond:
            self._intake.close_locked()

    def wait_idle(self) -> None:
        """After ``close``: block until every taken job has finished."""
        with self._cond:
            self._intake.wait_empty_locked()

    def __len__(self) -> int:
        return len(self._jobs)
