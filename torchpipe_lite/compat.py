"""TorchPipe's Python names that are not elsewhere: ``parse_toml``, ``Event``, and the filters
its core registers beside the statuses (``result2other``, ``result2key_1``, ``Target``).

With these, the constants of ``keys`` and the two call forms of ``register_backend`` and
``register_filter``, a program written for ``import torchpipe`` runs against this package
(docs/torchpipe.md lists what maps to what, and what does not).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from time import monotonic
from typing import Any

from .config.loader import read_toml
from .errors import ConfigError
from .filters import Status, register_filter
from .keys import TASK_DATA_KEY, TASK_RESULT_KEY


def parse_toml(path: str | Path) -> dict[str, dict[str, Any]]:
    """A TOML configuration as TorchPipe's ``parse_toml`` gives it: one flat table per node
    (``[rec.2]`` as the key ``"rec.2"``) and the top-level keys under ``"global"``, ready to
    change and hand to ``pipe``. ``ConfigError`` when the file cannot be read."""
    raw = read_toml(path)
    flat: dict[str, dict[str, Any]] = {}
    shared = {key: value for key, value in raw.items() if not isinstance(value, Mapping)}
    if shared:
        flat["global"] = shared
    for name, table in raw.items():
        if isinstance(table, Mapping):
            _flatten(name, table, flat)
    return flat


def _flatten(name: str, table: Mapping[str, Any], flat: dict[str, dict[str, Any]]) -> None:
    flat[name] = {key: value for key, value in table.items() if not isinstance(value, Mapping)}
    for key, value in table.items():
        if isinstance(value, Mapping):
            _flatten(f"{name}.{key}", value, flat)


class Event:
    """TorchPipe's ``Event``: put one in a request under ``TASK_EVENT_KEY`` (``"event"``) and
    the call returns at once; ``Wait()`` blocks until the request has ended and raises its
    error, if it failed. ``num`` requests may share one event: it is set when all have ended."""

    def __init__(self, num: int = 1):
        if num < 1:
            raise ValueError(f"an Event waits for at least one request, got {num}")
        self._started_s = monotonic()
        self._lock = threading.Lock()
        self._remaining = num
        self._error: BaseException | None = None
        self._done = threading.Event()

    def notify(self, error: BaseException | None = None) -> None:
        """One request has ended (with ``error`` when it failed)."""
        with self._lock:
            if error is not None and self._error is None:
                self._error = error
            self._remaining -= 1
            finished = self._remaining <= 0
        if finished:
            self._done.set()

    def Wait(self, timeout_s: float | None = None) -> None:
        """Block until every request has ended; raise the first one's error, if any
        (``TimeoutError`` when ``timeout_s`` passes first)."""
        if not self._done.wait(timeout_s):
            raise TimeoutError(f"the requests did not end within {timeout_s} s")
        if self._error is not None:
            raise self._error

    def time_passed(self) -> float:
        """Milliseconds since the event was made."""
        return (monotonic() - self._started_s) * 1000.0


def _result_to(extra_key: str | None):
    """A filter that, as ``swap`` does, runs the node on the predecessor's ``result`` (Break
    without one), and also keeps that result under ``extra_key``."""

    def move(item: dict[str, Any]) -> Status:
        if TASK_RESULT_KEY not in item:
            return Status.BREAK
        item[TASK_DATA_KEY] = item[TASK_RESULT_KEY]
        if extra_key is not None:
            item[extra_key] = item[TASK_RESULT_KEY]
        return Status.RUN

    return move


register_filter(_result_to("other"), "result2other")
register_filter(_result_to("key_1"), "result2key_1")


class TargetFilter:
    """TorchPipe's ``Target``: the node runs (as after ``swap``) only for requests whose
    ``target`` (the node's ``target`` parameter when the request has none) equals the node's;
    the others skip it."""

    def init(self, params: dict[str, str], shared: Any) -> None:
        if "target" not in params:
            raise ConfigError("the node's filter Target needs this parameter", key="target")
        self.target = params["target"]
        self.move = _result_to(None)

    def forward(self, item: dict[str, Any]) -> Status:
        if str(item.get("target", self.target)) != self.target:
            return Status.SKIP
        return self.move(item)


register_filter(TargetFilter, "Target")
