"""The calls every client of served pipelines offers, built on ``dispatch_many`` and ``shape``."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

from ..errors import RequestTimeoutError
from .wire import PipelineShape

OnDone = Callable[[dict[str, Any], BaseException | None], None]
_Client = TypeVar("_Client", bound="DispatchCalls")
OnDoneIndexed = Callable[[int, dict[str, Any], BaseException | None], None]


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class DispatchCalls:
    """``dispatch``, ``submit``, ``__call__``, ``run_all``, ``batch_range`` and ``node_names``,
    as a local ``Pipeline`` has them, for a class that defines ``dispatch_many``, ``shape``
    and ``close``."""

    shape: PipelineShape

    def dispatch_many(
        self,
        requests: list[dict[str, Any]],
        on_done: OnDoneIndexed,
        strict: bool = False,
        timeout_s: float | None = None,
    ) -> list[Any]:
        raise NotImplementedError

    def dispatch(
        self,
        request: dict[str, Any],
        on_done: OnDone,
        *,
        strict: bool = False,
        timeout_s: float | None = None,
    ) -> Any:
        """Start ``request``; ``on_done(request, error)`` is called once it has ended, on the
        receiver thread (so quick, never blocking), or at once on this one when refused."""
        return self.dispatch_many([request], lambda _, r, e: on_done(r, e), strict, timeout_s)[0]

    def submit(
        self, request: dict[str, Any], *, strict: bool = False, timeout_s: float | None = None
    ) -> Future:
        """Start ``request``; a future that resolves to the same dict (or raises)."""
        future: Future = Future()
        future.set_running_or_notify_cancel()

        def resolve(item: dict[str, Any], error: BaseException | None) -> None:
            if error is None:
                future.set_result(item)
            else:
                future.set_exception(error)

        self.dispatch(request, resolve, strict=strict, timeout_s=timeout_s)
        return future

    def __call__(
        self,
        request: dict[str, Any] | list[dict[str, Any]],
        timeout_s: float | None = None,
        *,
        strict: bool = False,
    ) -> None:
        """Run one request dict, or a list of them, to completion, as ``Pipeline`` does."""
        requests = request if isinstance(request, list) else [request]
        for error in self.run_all(requests, strict=strict, timeout_s=timeout_s):
            if error is not None:
                raise error

    def run_all(
        self,
        requests: list[dict[str, Any]],
        *,
        strict: bool = False,
        timeout_s: float | None = None,
    ) -> list[BaseException | None]:
        """Run ``requests`` (sent together) to completion: each one's error, or None.
        ``RequestTimeoutError`` when they have not all ended within ``timeout_s`` (the rest
        are cancelled)."""
        errors: list[BaseException | None] = [None] * len(requests)
        remaining = [len(requests)]
        done = threading.Event()
        lock = threading.Lock()

        def ended(index: int, _: dict[str, Any], error: BaseException | None) -> None:
            errors[index] = error
            with lock:
                remaining[0] -= 1
                if remaining[0] == 0:
                    done.set()

        handles: list[Cancellable] = self.dispatch_many(requests, ended, strict, timeout_s)
        if not done.wait(timeout_s):
            for handle in handles:
                handle.cancel()
            raise RequestTimeoutError(f"no answer within {timeout_s} s")
        return errors

    def batch_range(self, node_name: str) -> tuple[int, int]:
        return self.shape.batch_ranges[node_name]

    @property
    def node_names(self) -> list[str]:
        return list(self.shape.node_names)

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _Client) -> _Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
