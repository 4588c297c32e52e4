"""The loop thread's view of its descriptors: epoll where the kernel has it, else poll.

``selectors`` wraps every ready descriptor in a key object on each wake-up; at tens of
thousands of wake-ups a second that wrapping is a measurable share of the loop thread's
interpreter time, so the loop keeps its own table from descriptor to target instead.
"""

from __future__ import annotations

import select
from typing import Any

READ = select.POLLIN
WRITE = select.POLLOUT
#: Hang-up and error conditions: reported whatever was asked, handled as readable (the read
#: then sees the end of the connection or its error).
BROKEN = select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0)


class Poller:
    """Descriptors, what each one stands for, and a wait for the ready ones."""

    def __init__(self) -> None:
        self._epoll = hasattr(select, "epoll")
        self._poll = select.epoll() if self._epoll else select.poll()
        self._targets: dict[int, Any] = {}

    def watch(self, fd: int, target: Any, events: int = READ) -> None:
        """Report ``fd`` as ready for ``events`` from now on, as ``target``."""
        self._targets[fd] = target
        self._poll.register(fd, self._mask(events))

    def change(self, fd: int, events: int) -> None:
        """Report ``fd`` for ``events`` instead of what it was watched for."""
        self._poll.modify(fd, self._mask(events))

    def forget(self, fd: int) -> None:
        """Stop reporting ``fd`` (call before closing it); a no-op if it is not watched."""
        if self._targets.pop(fd, None) is not None:
            self._poll.unregister(fd)

    def wait(self, timeout_s: float) -> list[tuple[Any, int]]:
        """(target, events) of every ready descriptor, after at most ``timeout_s``."""
        if self._epoll:
            ready = self._poll.poll(timeout_s)
        else:
            ready = self._poll.poll(int(timeout_s * 1000))
        targets = self._targets
        return [(targets[fd], events) for fd, events in ready if fd in targets]

    def close(self) -> None:
        """Release the kernel's side (epoll has a descriptor of its own)."""
        if self._epoll:
            self._poll.close()

    def _mask(self, events: int) -> int:
        if not self._epoll:
            return events
        mask = 0
        if events & READ:
            mask |= select.EPOLLIN
        if events & WRITE:
            mask |= select.EPOLLOUT
        return mask
