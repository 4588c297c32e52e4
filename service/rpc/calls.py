"""Runs decoded calls on a handler: asynchronously where it can, else on a pool of threads.

A handler method ``name`` is called as ``handler.name(*args)`` on one of the pool's threads,
which blocks until it returns (the thread-pool server's model, and the locked baseline's). A
handler that lists ``name`` in ``async_methods`` instead provides ``name_async(*args, reply)``:
it is called on the loop thread, must return at once, and answers later through ``reply``
from whichever thread finishes the work, so no thread waits per request.

Before either, a handler with ``admit(method, args)`` decides on the loop thread whether the
call may run at all: it returns the call's ticket (kept on the reply, released with the answer)
or raises the error to answer at once. A blocking call whose client has gone away, or whose
ticket's deadline has passed, by the time a pool thread is free is answered without running,
with what its handler's ``abandoned(method, images)`` or ``expired(method, ticket)`` gives.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from thrift.Thrift import TApplicationException

from service.ops.log_limit import LogLimiter

from .connection import Reply

logger = logging.getLogger("service.rpc")

#: The answer to a call whose client went away before it ran (it reaches no one).
_GONE = TApplicationException(TApplicationException.UNKNOWN, "the client went away")


@dataclass(frozen=True, slots=True)
class _BlockingCall:
    function: Any
    args: tuple[Any, ...]
    reply: Reply


class CallRunner:
    """Dispatches calls to ``handler``; ``threads`` pool threads run the blocking ones."""

    def __init__(self, handler: Any, *, threads: int):
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self._handler = handler
        self._async = frozenset(getattr(handler, "async_methods", ()))
        self._admit = getattr(handler, "admit", None)
        #: Blocking calls dropped unrun because their client went away while they waited.
        self.abandoned_unrun = 0
        self._queue: queue.SimpleQueue[_BlockingCall | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"rpc-worker-{index}", daemon=True)
            for index in range(threads)
        ]
        self._started = False
        self._log = LogLimiter(logger, every_s=10.0)

    def start(self) -> None:
        """Start the pool's threads."""
        self._started = True
        for thread in self._threads:
            thread.start()

    def run(self, reply: Reply) -> None:
        """Start ``reply.call``; its answer goes through ``reply``. Called on the loop thread."""
        call = reply.call
        name = call.method.name
        if self._admit is not None:
            try:
                reply.ticket = self._admit(name, call.args)
            except Exception as error:  # refused: answered at once, never run
                reply.fail(error)
                return
        if name in self._async:
            try:
                getattr(self._handler, f"{name}_async")(*call.args, reply)
            except Exception as error:  # a failure before the work started
                reply.fail(error)
            return
        self._queue.put(_BlockingCall(getattr(self._handler, name), call.args, reply))

    def stop(self, deadline_s: float) -> bool:
        """Let the queued calls finish and stop the threads; False if some outlived
        ``deadline_s`` (a ``time.monotonic()`` instant)."""
        if not self._started:
            return True
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(max(0.0, deadline_s - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def _work(self) -> None:
        while True:
            task = self._queue.get()
            if task is None:
                return
            try:
                self._run(task)
            except Exception as error:  # answering failed (a server bug): serve on
                name = task.reply.call.method.name
                self._log.log("answer", logging.ERROR, "answering %s failed", name, exc_info=error)

    def _run(self, task: _BlockingCall) -> None:
        reply = task.reply
        ticket = reply.ticket
        if reply.abandoned:  # nobody reads the answer; it ends the call
            self.abandoned_unrun += 1
            name = reply.call.method.name
            reply.fail(_GONE if ticket is None else self._handler.abandoned(name, ticket.images))
            return
        if ticket is not None and time.monotonic() > ticket.deadline_s:
            reply.fail(self._handler.expired(reply.call.method.name, ticket))
            return
        try:
            value = task.function(*task.args)
        except Exception as error:
            reply.fail(error)
        else:
            reply.send(value)
