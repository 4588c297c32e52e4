"""What one client may make the server hold, and what the connection layer has seen."""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass, field

from service.gen.inference.ttypes import ConnectionStats

_MIB = 1 << 20


@dataclass(frozen=True)
class TransportLimits:
    """What one client may make the server read, hold and wait for."""

    #: Bytes one request message may span; a longer one is cut off and the connection closed.
    max_message_bytes: int = 64 * _MIB
    #: Elements a list in a request may declare (checked before anything is allocated).
    max_container_items: int = 16 * 1024
    #: Seconds from a message's first byte to its last; a slower message closes its connection.
    message_timeout_s: float = 30.0
    #: Seconds a connection may stay open between messages, sending nothing.
    idle_timeout_s: float = 300.0
    #: Open connections; beyond it a new one is closed at once (counted, logged at a bounded
    #: rate). The server takes fewer when the file limit leaves less room
    #: (``budgets.connection_cap``).
    max_connections: int = 1024
    #: Bytes the unfinished request messages of every connection may hold together; past it
    #: the connections holding the most are closed. None: a share of the machine's memory
    #: (``budgets.default_buffer_budget_bytes``).
    max_buffered_bytes: int | None = None


@dataclass
class ConnectionFigures:
    """What the connection layer has seen since start (the loop thread's, except
    ``replies_undelivered``, counted under ``lock`` by whichever thread replies)."""

    open: int = 0
    accepted: int = 0
    refused_over_cap: int = 0
    closed_idle: int = 0
    closed_slow_message: int = 0
    closed_malformed: int = 0
    closed_over_buffer_budget: int = 0  # held the most bytes when the budget was spent
    replies_undelivered: int = 0  # the client had gone when its answer was ready
    calls_abandoned: int = 0  # the client went away while its call was in progress
    #: Closed because an exception escaped its handling (a server bug; logged at ERROR, at a
    #: bounded rate). Not in ``stats()`` yet: ConnectionStats has no field for it.
    closed_on_error: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def stats(self, max_open: int) -> ConnectionStats:
        """These figures as ``stats()`` sends them."""
        return ConnectionStats(
            open=self.open,
            max_open=max_open,
            accepted=self.accepted,
            refused_over_cap=self.refused_over_cap,
            closed_idle=self.closed_idle,
            closed_slow_message=self.closed_slow_message,
            closed_malformed=self.closed_malformed,
            replies_undelivered=self.replies_undelivered,
            calls_abandoned=self.calls_abandoned,
        )


class Overdue(enum.Enum):
    """Why a connection between calls is closed by the sweep."""

    SLOW_MESSAGE = "slow_message"  # a request message took longer than its deadline to arrive
    IDLE = "idle"  # nothing sent for longer than the idle timeout


def overdue(
    message_started_s: float | None, last_active_s: float, now_s: float, limits: TransportLimits
) -> Overdue | None:
    """The deadline a connection between calls has passed at ``now_s``, if any."""
    if message_started_s is not None:
        if now_s - message_started_s > limits.message_timeout_s:
            return Overdue.SLOW_MESSAGE
        return None
    if now_s - last_active_s > limits.idle_timeout_s:
        return Overdue.IDLE
    return None
