"""What the whole server may take from the machine: descriptors for connections, memory for
requests still arriving. Pure decisions, and the few reads of the machine they are made from.

Per-connection limits (``limits.TransportLimits``) bound what one client makes the server
hold; these bound the sum over every client. A thousand connections within their own limits
can still hold more memory than the machine has, or need more descriptors than the process
may open (and once ``accept()`` fails for want of descriptors, the operations port cannot
accept its liveness probe either).
"""

from __future__ import annotations

import logging
import os
import resource
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from .limits import TransportLimits

logger = logging.getLogger("service.rpc")

#: Descriptors kept free for everything but client connections, on top of those already open
#: when the server is built: its own listener, poller and wake-up pipes, the operations port's
#: connections (capped by ``service.ops.ops_http``), log files, model files opened late, pipes
#: and sockets to worker or engine processes.
RESERVED_FDS = 64
#: The buffer budget's share of the machine's (or container's) memory, by default: the rest
#: is for the model, the images in flight (bounded by the admission budget) and the heap.
BUFFER_SHARE_OF_MEMORY = 1 / 8
_CGROUP_MEMORY_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)
#: cgroup v1 writes "no limit" as a huge number (the largest page-aligned 64-bit value).
_NO_LIMIT_ABOVE_BYTES = 1 << 60

Holder = TypeVar("Holder")


class BudgetError(ValueError):
    """A budget leaves no room for what the server must hold (set by the command line)."""


# -- descriptors --------------------------------------------------------------------------


@dataclass(frozen=True)
class FileLimit:
    """The process's descriptor limits (``RLIMIT_NOFILE``; None: unlimited) and how many
    descriptors it has open."""

    soft: int | None
    hard: int | None
    in_use: int


def reserved_fds(soft_limit: int | None) -> int:
    """Descriptors kept from client connections under ``soft_limit``: ``RESERVED_FDS``, or a
    quarter of a very small limit (a test's) so that some connections remain possible."""
    if soft_limit is None:
        return RESERVED_FDS
    return min(RESERVED_FDS, soft_limit // 4)


def wanted_soft_limit(requested_connections: int, limit: FileLimit) -> int | None:
    """The soft limit to raise to so that ``requested_connections`` fit, as far as the hard
    limit allows; None when the soft limit is already enough (or unlimited)."""
    if limit.soft is None:
        return None
    needed = requested_connections + limit.in_use + RESERVED_FDS
    wanted = needed if limit.hard is None else min(needed, limit.hard)
    return wanted if wanted > limit.soft else None


def connection_cap(requested_connections: int, limit: FileLimit) -> int:
    """The most client connections the process can hold open: ``requested_connections``,
    or fewer when the soft file limit leaves less room (each takes a descriptor; the
    reserve and those in use are not theirs). Raises ``BudgetError`` when none fit."""
    if limit.soft is None:
        return requested_connections
    room = limit.soft - limit.in_use - reserved_fds(limit.soft)
    if room < 1:
        raise BudgetError(
            f"the file limit (ulimit -n {limit.soft}) leaves no descriptor for client "
            f"connections: {limit.in_use} are open and {reserved_fds(limit.soft)} are kept "
            "in reserve; raise the limit"
        )
    return min(requested_connections, room)


def read_file_limit() -> FileLimit:
    """This process's ``RLIMIT_NOFILE`` and the descriptors it has open."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    def finite(value: int) -> int | None:
        return None if value == resource.RLIM_INFINITY else value

    return FileLimit(finite(soft), finite(hard), _open_descriptors())


def _open_descriptors() -> int:
    for listing in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(listing)) - 1  # less the listing's own descriptor
        except OSError:
            continue
    logger.warning("cannot count open descriptors; counting none beyond the reserve")
    return 0


def fit_connections_to_file_limit(requested_connections: int) -> tuple[int, FileLimit]:
    """Raise the soft file limit towards what ``requested_connections`` need (as far as the
    hard limit allows), then the connection cap it leaves, and the limit it was computed
    from."""
    limit = read_file_limit()
    wanted = wanted_soft_limit(requested_connections, limit)
    if wanted is not None:
        try:
            hard = resource.RLIM_INFINITY if limit.hard is None else limit.hard
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            limit = FileLimit(wanted, limit.hard, limit.in_use)
        except (ValueError, OSError) as exc:
            logger.warning("cannot raise the file limit to %d: %s", wanted, exc)
    return connection_cap(requested_connections, limit), limit


# -- memory -------------------------------------------------------------------------------


def parse_cgroup_memory_limit(text: str) -> int | None:
    """A cgroup memory limit file's content in bytes; None when it sets no limit."""
    text = text.strip()
    if text == "max":
        return None
    value = int(text)
    return None if value >= _NO_LIMIT_ABOVE_BYTES else value


def default_buffer_budget_bytes(memory_bytes: int, max_message_bytes: int) -> int:
    """The budget for bytes held in unfinished messages: a share of ``memory_bytes``, and
    never less than one whole message of the largest size allowed."""
    return max(max_message_bytes, int(memory_bytes * BUFFER_SHARE_OF_MEMORY))


def machine_memory_bytes() -> int:
    """The memory this process may use: the machine's, or its container's limit if lower."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in _CGROUP_MEMORY_LIMITS:
        try:
            limit = parse_cgroup_memory_limit(path.read_text())
        except (OSError, ValueError):
            continue
        if limit is not None:
            return min(physical, limit)
    return physical


def holders_to_cut(held: Iterable[tuple[int, Holder]], over_bytes: int) -> list[Holder]:
    """Which holders (``(bytes held, holder)``) to drop so that at least ``over_bytes`` are
    freed: the largest first, as few as that takes. A stalled sender and a large upload look
    alike until the message deadline; the largest is the one that costs the most, and small
    requests (good clients' calls) are never the largest while the budget is spent."""
    cut: list[Holder] = []
    if over_bytes <= 0:
        return cut
    for size, holder in sorted(held, key=lambda pair: pair[0], reverse=True):
        if size <= 0:
            break
        cut.append(holder)
        over_bytes -= size
        if over_bytes <= 0:
            break
    return cut


class BufferLedger:
    """Bytes held in unfinished request messages by every connection together, against the
    budget (the loop thread's: each ``Connection`` adds and removes its own)."""

    __slots__ = ("budget_bytes", "held_bytes", "peak_bytes")

    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self.held_bytes = 0
        #: The most held at once since start (over the budget by at most one read: the
        #: connections to close are chosen once the bytes that passed it have arrived).
        self.peak_bytes = 0

    def add(self, delta_bytes: int) -> None:
        """A connection now holds ``delta_bytes`` more (or fewer, when negative)."""
        self.held_bytes += delta_bytes
        if self.held_bytes > self.peak_bytes:
            self.peak_bytes = self.held_bytes

    @property
    def over_bytes(self) -> int:
        """How far the bytes held are over the budget (0 or less: within it)."""
        return self.held_bytes - self.budget_bytes


@dataclass(frozen=True)
class ServerBudgets:
    """What a server may hold in all: the connections it accepts, the bytes it buffers."""

    max_connections: int
    max_buffered_bytes: int


def server_budgets(limits: TransportLimits) -> ServerBudgets:
    """The budgets of a server starting now in this process (logged): the connection cap
    that its file limit allows for ``limits.max_connections``, and the buffer budget
    (``limits.max_buffered_bytes``, or sized from the memory when None)."""
    requested_connections = limits.max_connections
    max_buffered_bytes = limits.max_buffered_bytes
    max_message_bytes = limits.max_message_bytes
    connections, limit = fit_connections_to_file_limit(requested_connections)
    if max_buffered_bytes is None:
        memory_bytes = machine_memory_bytes()
        buffered = default_buffer_budget_bytes(memory_bytes, max_message_bytes)
        sized = f"{BUFFER_SHARE_OF_MEMORY:.3g} of {memory_bytes / (1 << 30):.1f} GiB of memory"
    elif max_buffered_bytes < max_message_bytes:
        raise BudgetError(
            f"the buffer budget ({max_buffered_bytes} bytes) is smaller than one message of "
            f"the largest size allowed ({max_message_bytes} bytes)"
        )
    else:
        buffered, sized = max_buffered_bytes, "as set"
    logger.info(
        "accepting at most %d connections (%d asked; file limit %s, %d descriptors open, "
        "%d kept in reserve); unfinished requests may hold %.0f MiB in all (%s)",
        connections,
        requested_connections,
        "unlimited" if limit.soft is None else limit.soft,
        limit.in_use,
        reserved_fds(limit.soft),
        buffered / (1 << 20),
        sized,
    )
    return ServerBudgets(connections, buffered)
