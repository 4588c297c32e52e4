"""One call as its handler sees it: its deadline, whether its client is still there, its answer.

The RPC layer makes one ``CallContext`` per call it decodes and hands it to the handler's
method (``service.rpc.call_handler``); the handler answers through it, once, from whichever
thread finishes the work. Neither side sees the other's types: the handler never touches a
socket or the codec, and the RPC layer never sees tickets, pipelines or images.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from service.ops.log_limit import LogLimiter

logger = logging.getLogger("service.calls")
#: A cancel hook that fails is a server bug a client could trigger on every call: bounded lines.
_failure_log = LogLimiter(logger)

#: How the RPC layer answers: ``answer(value, None)``, or ``answer(None, error)``.
Answer = Callable[[Any, BaseException | None], None]


class CallContext:
    """A call's deadline, its cancellation and its one answer (``send`` or ``fail``).

    ``deadline_s`` is infinite until the handler admits the call and sets it. When the client
    goes away before its answer, the RPC layer calls ``cancel()``: what the handler registered
    with ``when_cancelled`` runs (drop its waiting work), and ``cancelled`` tells the code that
    would start more of it not to. What it registered with ``when_answered`` runs once, just
    before the answer is handed over (give back what the call held)."""

    __slots__ = (
        "_answer",
        "_answered",
        "_lock",
        "_on_answer",
        "_on_cancel",
        "cancelled",
        "deadline_s",
        "method",
    )

    def __init__(self, method: str, answer: Answer):
        self.method = method
        #: ``time.monotonic()`` instant after which the call's waiting work is dropped.
        self.deadline_s = math.inf
        self.cancelled = False
        self._answer = answer
        self._answered = False
        self._lock = threading.Lock()
        self._on_cancel: list[Callable[[], None]] = []
        self._on_answer: list[Callable[[], None]] = []

    def timeout_s(self) -> float | None:
        """Seconds left until the deadline (at least a millisecond), or None without one."""
        if self.deadline_s == math.inf:
            return None
        return max(0.001, self.deadline_s - time.monotonic())

    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return time.monotonic() > self.deadline_s

    def when_cancelled(self, cancel: Callable[[], None]) -> None:
        """Run ``cancel`` if the client goes away before the answer (now, if it has)."""
        with self._lock:
            if not self.cancelled:
                self._on_cancel.append(cancel)
                return
        cancel()

    def when_answered(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` once, just before the answer is handed over."""
        self._on_answer.append(hook)

    def cancel(self) -> None:
        """The client went away: run the cancel hooks registered so far, and any later."""
        with self._lock:
            self.cancelled = True
            cancels, self._on_cancel = self._on_cancel, []
        for cancel in cancels:
            try:
                cancel()
            except Exception as error:
                _failure_log.log(
                    f"cancel-{self.method}",
                    logging.ERROR,
                    "cancelling the work of %s failed",
                    self.method,
                    exc_info=error,
                )

    def send(self, value: Any = None) -> None:
        """Answer the call with ``value``."""
        self._finish(value, None)

    def fail(self, error: BaseException) -> None:
        """Answer the call with ``error`` (a declared exception reaches the client as itself;
        anything else as an internal error, logged)."""
        self._finish(None, error)

    def _finish(self, value: Any, error: BaseException | None) -> None:
        with self._lock:
            answered, self._answered = self._answered, True
        if answered:
            _failure_log.log(
                f"twice-{self.method}",
                logging.ERROR,
                "%s answered twice; the second is dropped",
                self.method,
            )
            return
        for hook in self._on_answer:
            hook()
        self._answer(value, error)
