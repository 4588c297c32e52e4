"""A handler's pool threads: where its blocking work runs, so the RPC loop thread never waits.

The RPC layer calls every handler method on its one loop thread. Work that does wait (the
locked baseline's whole request, reading the GPUs for ``stats``) is queued here and runs on one
of ``threads`` threads, which answers the call when it is done.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from service.call_context import CallContext
from service.ops.log_limit import LogLimiter

logger = logging.getLogger(__name__)


class BlockingPool:
    """Threads that run queued work, each item answering its own call. Started on first use."""

    def __init__(self, threads: int, *, name: str = "handler"):
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self._size = threads
        self._name = name
        self._queue: queue.SimpleQueue[tuple[CallContext, Callable[[], None]] | None] = (
            queue.SimpleQueue()
        )
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._log = LogLimiter(logger, every_s=10.0)

    def run(self, call: CallContext, work: Callable[[], None]) -> None:
        """Run ``work`` on a pool thread; what it raises answers ``call``."""
        if not self._threads:
            self._start()
        self._queue.put((call, work))

    def close(self, timeout_s: float = 60.0) -> bool:
        """Let the queued work finish and stop the threads; False if some outlived
        ``timeout_s``."""
        with self._lock:
            threads, self._threads = self._threads, []
        deadline_s = time.monotonic() + timeout_s
        for _ in threads:
            self._queue.put(None)
        for thread in threads:
            thread.join(max(0.0, deadline_s - time.monotonic()))
        return not any(thread.is_alive() for thread in threads)

    def _start(self) -> None:
        with self._lock:
            if self._threads:
                return
            self._threads = [
                threading.Thread(target=self._work, name=f"{self._name}-{index}", daemon=True)
                for index in range(self._size)
            ]
            for thread in self._threads:
                thread.start()

    def _work(self) -> None:
        while True:
            task = self._queue.get()
            if task is None:
                return
            call, work = task
            try:
                work()
            except Exception as error:
                try:
                    call.fail(error)
                except Exception as answering:  # answering failed (a server bug): serve on
                    self._log.log(
                        "answer",
                        logging.ERROR,
                        "answering %s failed",
                        call.method,
                        exc_info=answering,
                    )
