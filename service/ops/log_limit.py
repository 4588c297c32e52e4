"""Log lines a client can cause, at a bounded rate: one line per kind per interval, with a count.

A hostile or broken client can make every request fail; logging each failure would turn its
traffic into disk writes (and the log into noise). Each kind of line (an error code, a refused
connection) is written at most once per ``every_s``; the next one written says how many were
held back since.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class LogLimiter:
    """Rate-limited logging onto ``logger``, per kind. Thread-safe."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._logger = logger
        self._every_s = every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last_s: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def log(
        self,
        kind: str,
        level: int,
        message: str,
        *args: object,
        exc_info: BaseException | None = None,
    ) -> None:
        """Log ``message % args`` unless a line of ``kind`` went out within ``every_s``."""
        if not self._logger.isEnabledFor(level):
            return
        now_s = self._clock()
        with self._lock:
            if now_s - self._last_s.get(kind, -self._every_s) < self._every_s:
                self._held[kind] = self._held.get(kind, 0) + 1
                return
            self._last_s[kind] = now_s
            held = self._held.pop(kind, 0)
        if held:
            message += f" (and {held} more like it in the last {self._every_s:g} s, not logged)"
        self._logger.log(level, message, *args, exc_info=exc_info)
