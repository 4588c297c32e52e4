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
        "_ends",
        "_finished",
        "_joins",
        "_on_done",
        "_pending",
        "_strict",
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
        self._on_done = on_done
        # Set up by the first fork: the branches that ended, and the joins half arrived.
        self._ends: list[tuple[str, dict[str, Any]]] = []
        self._joins: dict[str, dict[str, dict[str, Any]]] | None = None
        self._finished = False
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
            self._ends = []
        with self._branch_lock:
            self._pending += extra_branches

    def end_branch(self, node: str, item: dict[str, Any], error: BaseException | None) -> None:
        """One branch ended at ``node`` (with its result in ``item``, or with ``error``)."""
        if self._branch_lock is None:  # the common, unbranched case: no lock needed
            if item is not self.item and error is None:  # a map built the last node's input
                self.item.pop("result", None)
                self.item.update(item)
            if error is None and self._strict and "result" not in item:
                error = _no_result(node)
            self.error = error
            self._complete()
            return
        with self._branch_lock:
            if self._finished:
                return  # a Break ended the request already
            if error is not None and self.error is None:
                self.error = error
            elif error is None:
                self._ends.append((node, item))
            self._pending -= 1
            if self._pending:
                return
            self._finished = True
        self._finish_branched(node)

    def end_request(self, node: str, item: dict[str, Any]) -> None:
        """A filter said Break at ``node``: the request ends now, ``item`` its final state,
        whatever its other branches are doing (what they do next is ignored)."""
        if self._branch_lock is None:
            self.end_branch(node, item, None)
            return
        with self._branch_lock:
            if self._finished:
                return
            self._finished = True
            self._ends = [(node, item)]
        self._finish_branched(node)

    def join(
        self, node: str, source: str, item: dict[str, Any], expected: int
    ) -> dict[str, dict[str, Any]] | None:
        """Branch ``source`` reached the join ``node`` with ``item``: every predecessor's dict
        once all ``expected`` have arrived (the branches become one), else None (this branch
        ends here, and waits for nothing)."""
        assert self._branch_lock is not None, "a join is only reached after a fork"
        with self._branch_lock:
            if self._finished:
                return None  # a Break ended the request already
            if self._joins is None:
                self._joins = {}
            arrived = self._joins.setdefault(node, {})
            arrived[source] = item
            if len(arrived) == expected:
                return self._joins.pop(node)
            self._pending -= 1  # this branch merges into the one that arrives last
            if self._pending or self._finished:
                return None
            self._finished = True  # the others failed: nothing will arrive any more
        self._finish_branched(node)
        return None

    def _finish_branched(self, node: str) -> None:
        """The last branch has ended: one end gives the caller's dict its keys, several give
        ``result`` = {node: result} of each that has one."""
        ends = self._ends
        if self.error is None and len(ends) == 1:
            final = ends[0][1]
            if final is not self.item:
                self.item.pop("result", None)  # an earlier node's, from before the fork
                self.item.update(final)
        elif self.error is None:
            self.item.pop("result", None)
            results = {end: branch["result"] for end, branch in ends if "result" in branch}
            if results:
                self.item["result"] = results
        if self.error is None and self._strict and "result" not in self.item:
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


class SubRequestHandle(RequestHandle):
    """A request a Jump or MapReduce node sends through another graph on behalf of
    ``parent``: it shares the parent's deadline (and cancellation) as it changes."""

    __slots__ = ("_parent",)

    def __init__(
        self,
        item: dict[str, Any],
        on_done: Callable[[RequestHandle], None],
        parent: RequestHandle,
    ):
        self._parent = parent
        super().__init__(item, on_done)

    @property  # type: ignore[override]
    def deadline_s(self) -> float:
        return self._parent.deadline_s

    @deadline_s.setter
    def deadline_s(self, value: float) -> None:
        if value == CANCELLED:
            self._parent.cancel()
