"""How other threads and signals wake the event loop: two pipes and a list of connections."""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class LoopWaker(Generic[T]):
    """Lets any thread hand the loop thread work (``post``) and wake it from ``epoll``.

    Signals get a pipe of their own (``signal_write_fd`` for ``signal.set_wakeup_fd``): the
    kernel may deliver SIGTERM to any thread, and Python runs the handler only once the main
    thread, blocked in epoll, returns to bytecode.
    """

    def __init__(self) -> None:
        self.wake_read_fd, self._wake_write_fd = os.pipe()
        self.signal_read_fd, self.signal_write_fd = os.pipe()
        for fd in self._fds():
            os.set_blocking(fd, False)
        self._posted: list[T] = []
        self._lock = threading.Lock()

    def post(self, item: T) -> None:
        """Queue ``item`` for the loop thread and wake it (any thread)."""
        with self._lock:
            self._posted.append(item)
        self.wake()

    def wake(self) -> None:
        """Make the loop's next ``epoll`` wait return (any thread; safe after ``close``)."""
        with contextlib.suppress(OSError):  # a full pipe: the loop is awake already
            os.write(self._wake_write_fd, b"x")

    def take_posted(self) -> list[T]:
        """What was posted since the last call, oldest first (the loop thread)."""
        if not self._posted:
            return []
        with self._lock:
            posted, self._posted = self._posted, []
        return posted

    def drain(self, fd: int) -> None:
        """Read one of the two pipes empty, once ``epoll`` reported it readable."""
        with contextlib.suppress(BlockingIOError):
            while os.read(fd, 512):
                pass

    def close(self) -> None:
        """Close the pipes; a later ``wake`` does nothing."""
        for fd in self._fds():
            os.close(fd)
        self._wake_write_fd = -1

    def _fds(self) -> tuple[int, ...]:
        return (self.wake_read_fd, self._wake_write_fd, self.signal_read_fd, self.signal_write_fd)
