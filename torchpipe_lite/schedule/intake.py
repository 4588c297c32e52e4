"""What every stage kind shares: its door (open until closed), the jobs it has in hand, and
how it ends jobs (route the ones that ran, tell the failed, drop the unwanted unrun).

A queued stage's ``StageQueue`` keeps its ``Intake`` under the queue's own lock (in hand:
taken by an instance and not yet finished); an inline or jump stage under its own (in hand:
put and not yet ended). Either way ``close`` shuts the door and the stage waits until nothing
is in hand.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ..errors import (
    BackendError,
    PipelineClosedError,
    RequestCancelledError,
    RequestTimeoutError,
)
from ..metrics import InstanceCounters
from .job import CANCELLED, Job, Router

logger = logging.getLogger(__name__)


class Intake:
    """A stage's door and its count of jobs in hand, guarded by ``cond``.

    The ``*_locked`` methods are for a caller that already holds ``cond`` (a queue that keeps
    its own state under the same lock); the others take it.
    """

    def __init__(
        self, node: str, backend_name: str, cond: threading.Condition | None = None
    ) -> None:
        self.node = node
        self.backend_name = backend_name
        self.cond = cond if cond is not None else threading.Condition(threading.Lock())
        self.open = True
        self.in_hand = 0

    def refuse_if_closed_locked(self) -> None:
        """``PipelineClosedError`` once the stage is closed."""
        if not self.open:
            raise PipelineClosedError(
                "the pipeline is closed", node=self.node, backend=self.backend_name
            )

    def take_locked(self, count: int) -> None:
        """``count`` more jobs are in hand."""
        self.in_hand += count

    def release_locked(self, count: int) -> None:
        """``count`` jobs in hand have ended; wakes ``close`` when they were the last."""
        self.in_hand -= count
        if not self.open and self.in_hand <= 0:
            self.cond.notify_all()

    def admit(self, count: int) -> None:
        """Take ``count`` jobs in hand, or refuse them all once closed."""
        with self.cond:
            self.refuse_if_closed_locked()
            self.in_hand += count

    def release(self, count: int) -> None:
        with self.cond:
            self.release_locked(count)

    def close_locked(self) -> None:
        """Shut the door and wake every waiter (they see the stage is closing)."""
        self.open = False
        self.cond.notify_all()

    def wait_empty_locked(self) -> None:
        """Block until nothing is in hand (after ``close_locked``)."""
        while self.in_hand > 0:
            self.cond.wait()

    def close_and_wait(self) -> None:
        """Shut the door and wait for the jobs in hand to end."""
        with self.cond:
            self.close_locked()
            self.wait_empty_locked()


class Endings:
    """How one stage ends its jobs: those that ran go to ``router``, the rest are told."""

    def __init__(self, node: str, backend_name: str, router: Router) -> None:
        self.node = node
        self.backend_name = backend_name
        self._router = router

    def complete(self, ok: list[Job], failed: list[tuple[Job, BaseException]]) -> None:
        """Tell the failed jobs' completions, route the rest on."""
        for job, error in failed:
            job.completion.end_branch(self.node, job.item, error)
        if not ok:
            return
        try:
            self._router(self.node, ok)
        except Exception:  # a router bug must not kill the worker or strand callers
            logger.exception("node %s: routing failed", self.node)
            for job in ok:
                job.completion.end_branch(
                    self.node, job.item, BackendError("internal routing error", node=self.node)
                )

    def drop(self, jobs: list[Job], counters: InstanceCounters) -> None:
        """End jobs whose deadline passed or whose caller cancelled them, unrun."""
        for job in jobs:
            if job.completion.deadline_s == CANCELLED:
                counters.requests_cancelled += 1
                error: BaseException = RequestCancelledError(
                    "cancelled by its caller", node=self.node, backend=self.backend_name
                )
            else:
                counters.requests_timed_out += 1
                error = RequestTimeoutError(
                    "its deadline passed before it ran", node=self.node, backend=self.backend_name
                )
            job.completion.end_branch(self.node, job.item, error)

    def fail(self, jobs: list[Job], error: Callable[[], BaseException]) -> None:
        """End ``jobs``, each with an error of its own made by ``error()``."""
        for job in jobs:
            job.completion.end_branch(self.node, job.item, error())
