"""Completion state of one caller request as its item travels through the nodes."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

from ..errors import NoResultError
from .job import CANCELLED

_allocate_lock = threading.Lock


class RequestHandle:
    """Tracks one request until every branch it took has ended, then wakes its caller once.

    A caller that waits gets a plain lock, held from creation and released on completion:
    the cheapest blocking primitive CPython has (an Event costs a Condition and two more
    locks). A caller that gives ``on_done`` instead is called back and needs no lock.

    ``deadline_s`` (a ``time.monotonic()`` instant; ``math.inf``: none) travels with the
    request: a stage that finds it passed drops the request unrun. ``cancel()`` drops it
    wherever it waits next, for a caller that has gone away.
    """

    __slots__ = (
        "_branch_lock",
        "_done",
        "_on_done",
        "_pending",
        "_strict",
        "branch_results",
        "deadline_s",
        "error",
        "item",
    )

    def __init__(
        self,
        item: dict[str, Any],
        on_done: Callable[[RequestHandle], None] | None = None,
        *,
        strict: bool = False,
        deadline_s: float = math.inf,
    ):
        self.item = item
        self._strict = strict
        self.deadline_s = deadline_s
        self.error: BaseException | None = None
        self.branch_results: dict[str, Any] | None = None
        self._on_done = on_done
        self._pending = 1
        self._branch_lock: threading.Lock | None = None
        self._done: threading.Lock | None = None
        if on_done is None:
            self._done = _allocate_lock()
            self._done.acquire()

    def cancel(self) -> None:
        """Drop the request at the next stage it reaches (one already running finishes);
        it then ends with ``RequestCancelledError``. Safe from any thread, and after the end."""
        self.deadline_s = CANCELLED

    @property
    def cancelled(self) -> bool:
        return self.deadline_s == CANCELLED

    def fork(self, extra_branches: int) -> None:
        """The request splits: ``extra_branches`` more branches must end before it completes."""
        if self._branch_lock is None:
            self._branch_lock = _allocate_lock()
            self.branch_results = {}
        with self._branch_lock:
            self._pending += extra_branches

    def end_branch(self, node: str, item: dict[str, Any], error: BaseException | None) -> None:
        """One branch ended at ``node`` (with its result in ``item``, or with ``error``)."""
        if self._branch_lock is None:  # the common, unbranched case: no lock needed
            if error is None and self._strict and "result" not in item:
                error = _no_result(node)
            self.error = error
            self._complete()
            return
        with self._branch_lock:
            if error is not None and self.error is None:
                self.error = error
            elif error is None and "result" in item:
                self.branch_results[node] = item["result"]
            self._pending -= 1
            if self._pending:
                return
        if self.error is None and self.branch_results:
            self.item["result"] = dict(self.branch_results)
        elif self.error is None and self._strict:
            self.error = _no_result(node)
        self._complete()

    def _complete(self) -> None:
        if self._done is None:
            self._on_done(self)
        else:
            self._done.release()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the request completed; False if ``timeout_s`` passed first (only for
        handles made without ``on_done``)."""
        if self._done is None:
            raise RuntimeError("a request handle with a callback cannot be waited for")
        acquired = self._done.acquire(timeout=-1 if timeout_s is None else timeout_s)
        if acquired:
            self._done.release()  # let any later wait() return at once
        return acquired


def _no_result(node: str) -> NoResultError:
    return NoResultError(
        "the request ended without a result (the stage produced nothing for its input, "
        "e.g. bytes that are not an image)",
        node=node,
    )
