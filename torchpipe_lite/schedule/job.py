"""What travels through a node's queue: a job, and who is told when its request ends."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

#: A completion's ``deadline_s`` once its caller has cancelled it (before every instant).
CANCELLED = -math.inf


class Completion(Protocol):
    """Who waits for a request: told once per branch that ends, with its error or None.

    A pipeline's callers wait on a ``RequestHandle``; the shared engine answers a client's
    slot. Either way the scheduling core only calls ``end_branch``, and reads ``deadline_s``
    when it forms a batch: a request whose deadline has passed (``math.inf``: none;
    ``CANCELLED``: its caller gave up) is dropped there, unrun.
    """

    deadline_s: float

    def end_branch(self, node: str, item: dict[str, Any], error: BaseException | None) -> None:
        """One branch of the request ended at ``node``: its result is in ``item``, or it
        failed with ``error``."""


@dataclass(slots=True)
class Job:
    """One request's item in one node's queue."""

    item: dict[str, Any]
    completion: Completion
    #: ``time.monotonic()`` when it entered this queue (batching timeout, request timeout).
    enqueued_s: float
    #: The node of the graph the job is at: the queue's own node, or a logical node
    #: (``[rec.2]``) that shares it and routes on by its own ``next``.
    at: str = ""


#: Called with a node's name and the jobs a batch finished successfully, on the thread that ran
#: the batch: the pipeline moves them on to the next node; the shared engine replies.
Router = Callable[[str, list[Job]], None]
