"""RemotePool: several servers of the same pipeline (one per GPU), called as one pipeline.

``connect([a, b])`` attaches to each address. Each ``dispatch``/``dispatch_many`` goes whole
to the member with the fewest requests outstanding (``least_loaded``; ties rotate). When a
member's server goes away, only the requests it held fail (``PipelineUnavailableError``, from
its ``RemotePipeline``); the member is marked down and the next calls go to the others. A down
member is tried again (one reconnect) no more often than every ``retry_s``, by the call that
finds the retry due; once it attaches it takes requests again. With every member down a call
fails at once with ``PipelineUnavailableError`` naming the addresses.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from ..errors import PipelineClosedError, PipelineUnavailableError, RequestError
from ..metrics import NodeStats
from . import wire
from .calls import DispatchCalls, OnDoneIndexed
from .client import DEFAULT_ARENA_BYTES, RemoteHandle, RemotePipeline

logger = logging.getLogger(__name__)

#: Least time between two reconnects of one down member.
DEFAULT_RETRY_S = 0.5


def least_loaded(outstanding: Sequence[int | None], start: int = 0) -> int | None:
    """The index of the member with the fewest outstanding requests (``None`` marks a member
    that is down); among equals, the first at or after ``start``, cyclically. ``None`` when
    every member is down (or there is none)."""
    count = len(outstanding)
    best: int | None = None
    for step in range(count):
        index = (start + step) % count
        load = outstanding[index]
        if load is not None and (best is None or load < outstanding[best]):
            best = index
    return best


class UnsentHandle:
    """The handle of a request the pool refused at once (every member down, or closed)."""

    __slots__ = ("request",)

    def __init__(self, request: dict[str, Any]):
        self.request = request

    def cancel(self) -> None:
        """Nothing to cancel: the request has already ended."""


@dataclass(eq=False)
class _Member:
    address: str
    #: ``None`` until the first attach succeeds.
    pipeline: RemotePipeline | None
    outstanding: int = 0
    #: While the member is down: when it may be tried again (monotonic seconds).
    retry_at_s: float | None = None
    #: A call is reconnecting it now (others skip it meanwhile).
    probing: bool = False


def _connected(member: _Member) -> bool:
    return member.pipeline is not None and member.pipeline.connected


def _up(member: _Member) -> bool:
    """Whether requests may go to ``member``: attached, not marked down, connection up."""
    return member.retry_at_s is None and _connected(member)


class RemotePool(DispatchCalls):
    """Clients of the ``PipelineServer`` at each of ``addresses``, as one pipeline.
    Thread-safe. Raises ``PipelineUnavailableError`` when none can be attached at first."""

    def __init__(
        self,
        addresses: Sequence[str | Path],
        *,
        arena_bytes: int = DEFAULT_ARENA_BYTES,
        connect_timeout_s: float = 10.0,
        retry_s: float = DEFAULT_RETRY_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not addresses:
            raise ValueError("a pool needs at least one address")
        self.addresses = [str(address) for address in addresses]
        #: The addresses as one string (the ``Remote`` backend's key for a shared pool).
        self.address = ",".join(self.addresses)
        self.retry_s = retry_s
        self._clock = clock  # monotonic seconds (a test may step it)
        self._arena_bytes = arena_bytes
        self._connect_timeout_s = connect_timeout_s
        self._lock = threading.Lock()
        self._turn = 0
        self._closed = False
        self._members = [_Member(address, None, retry_at_s=0.0) for address in self.addresses]
        self._revive_due()
        if not any(member.retry_at_s is None for member in self._members):
            raise PipelineUnavailableError(f"cannot attach to any of {self.address}")

    # -- members -----------------------------------------------------------------------------

    def _revive_due(self) -> None:
        """Mark down each member whose connection is gone; reconnect each down member whose
        retry time has come (one call does each)."""
        now_s = self._clock()
        with self._lock:
            lost = [m for m in self._members if m.retry_at_s is None and not _connected(m)]
            for member in lost:
                member.retry_at_s = now_s + self.retry_s
            due = [
                member
                for member in self._members
                if member.retry_at_s is not None and member.retry_at_s <= now_s
                if not member.probing
            ]
            for member in due:
                member.probing = True
        for member in lost:
            self._log_down(member)
        for member in due:
            attached = self._attach(member)
            with self._lock:
                member.probing = False
                member.retry_at_s = None if attached else self._clock() + self.retry_s
            if attached:
                logger.info("remote pool: %s serves again", member.address)

    def _attach(self, member: _Member) -> bool:
        try:
            if member.pipeline is None:
                member.pipeline = RemotePipeline(
                    member.address,
                    arena_bytes=self._arena_bytes,
                    connect_timeout_s=self._connect_timeout_s,
                )
            else:
                member.pipeline.reattach()
        except PipelineUnavailableError as error:
            logger.debug("remote pool: %s still down: %s", member.address, error)
            return False
        return True

    def _mark_down(self, member: _Member) -> None:
        with self._lock:
            if member.retry_at_s is not None:
                return
            member.retry_at_s = self._clock() + self.retry_s
        self._log_down(member)

    def _log_down(self, member: _Member) -> None:
        logger.warning(
            "remote pool: %s went away; the others take its share, retried every %g s",
            member.address,
            self.retry_s,
        )

    def _choose(self, requests: int) -> _Member | None:
        """The live member with the least outstanding work, charged ``requests`` now."""
        self._revive_due()
        with self._lock:
            loads = [m.outstanding if _up(m) else None for m in self._members]
            index = least_loaded(loads, self._turn)
            if index is None:
                return None
            self._turn = (index + 1) % len(loads)
            member = self._members[index]
            member.outstanding += requests
            return member

    def _live(self) -> list[RemotePipeline]:
        with self._lock:
            return [member.pipeline for member in self._members if _up(member)]

    # -- calling -----------------------------------------------------------------------------

    def dispatch_many(
        self,
        requests: list[dict[str, Any]],
        on_done: OnDoneIndexed,
        strict: bool = False,
        timeout_s: float | None = None,
    ) -> list[RemoteHandle | UnsentHandle]:
        """Start several requests at one member; ``on_done(index, request, error)``."""
        member = None if self._closed else self._choose(len(requests))
        if member is None:
            error: RequestError = (
                PipelineClosedError("the remote pool is closed")
                if self._closed
                else PipelineUnavailableError(
                    f"every server of the pipeline is down: {', '.join(self.addresses)} "
                    f"(each retried every {self.retry_s:g} s)"
                )
            )
            for index, request in enumerate(requests):
                on_done(index, request, error)
            return [UnsentHandle(request) for request in requests]
        pipeline = member.pipeline
        assert pipeline is not None  # a live member has attached

        def ended(index: int, request: dict[str, Any], error: BaseException | None) -> None:
            with self._lock:
                member.outstanding -= 1
            if isinstance(error, PipelineUnavailableError) and not pipeline.connected:
                self._mark_down(member)
            on_done(index, request, error)

        return pipeline.dispatch_many(requests, ended, strict, timeout_s)

    # -- figures and lifecycle ---------------------------------------------------------------

    def outstanding(self) -> dict[str, int | None]:
        """Requests sent to each member and not yet ended, by address (``None``: down)."""
        with self._lock:
            return {m.address: m.outstanding if _up(m) else None for m in self._members}

    def stats(self, timeout_s: float = 10.0) -> dict[str, dict[str, NodeStats]]:
        """Each live member's per-node figures, keyed by its address:
        ``{address: {node_name: NodeStats}}``. A member that is down, or goes away while
        asked, is left out; ``PipelineUnavailableError`` when none answers."""
        figures: dict[str, dict[str, NodeStats]] = {}
        for pipeline in self._live():
            try:
                figures[pipeline.address] = pipeline.stats(timeout_s)
            except PipelineUnavailableError:
                continue
        if not figures:
            raise PipelineUnavailableError(f"no server of {self.address} answered")
        return figures

    @property
    def shape(self) -> wire.PipelineShape:
        """The served pipeline's shape, from the first live member (all serve the same)."""
        live = self._live()
        if live:
            return live[0].shape
        attached = [m.pipeline for m in self._members if m.pipeline is not None]
        return attached[0].shape  # every member down: the last shape seen still holds

    def close(self) -> None:
        """Detach from every member; requests still at a server fail with
        ``PipelineUnavailableError``."""
        self._closed = True
        for member in self._members:
            if member.pipeline is not None:
                member.pipeline.close()


@overload
def connect(address: str | Path, *, arena_bytes: int = ...) -> RemotePipeline: ...
@overload
def connect(
    address: Sequence[str | Path], *, arena_bytes: int = ..., retry_s: float = ...
) -> RemotePool: ...


def connect(
    address: str | Path | Sequence[str | Path],
    *,
    arena_bytes: int = DEFAULT_ARENA_BYTES,
    retry_s: float = DEFAULT_RETRY_S,
) -> RemotePipeline | RemotePool:
    """Attach to the pipeline that ``serve`` serves at ``address``; for a list of addresses
    (servers of the same pipeline), a ``RemotePool`` over them."""
    if isinstance(address, str | Path):
        return RemotePipeline(address, arena_bytes=arena_bytes)
    return RemotePool(address, arena_bytes=arena_bytes, retry_s=retry_s)


__all__ = ["DEFAULT_RETRY_S", "RemotePool", "UnsentHandle", "connect", "least_loaded"]
