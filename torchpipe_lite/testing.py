"""Fake backends for tests (the project's and users' own): Sleep, Fail, NoResult.

They register when this module is imported (``import torchpipe_lite.testing``), not with
``import torchpipe_lite``: a production pipeline never has them among its backends.
"""

from __future__ import annotations

import time
from typing import Any

from .backends.base import Backend
from .backends.registry import register_backend


def _matches(item: dict[str, Any], trigger: Any) -> bool:
    return trigger is None or item.get("data") == trigger


@register_backend("Sleep")
class Sleep(Backend):
    """``result = data`` after sleeping ``sleep_ms`` per batch (a stand-in for compute)."""

    PARAMS = frozenset({"sleep_ms"})

    def init(self, params: dict[str, Any]) -> None:
        self.sleep_s = float(params.get("sleep_ms", 10)) / 1000.0

    def forward(self, batch: list[dict[str, Any]]) -> None:
        time.sleep(self.sleep_s)
        for item in batch:
            item["result"] = item["data"]


@register_backend("Fail")
class Fail(Backend):
    """Raises ``RuntimeError`` for a batch holding an item whose ``data`` equals ``fail_on``
    (every batch when ``fail_on`` is not set); otherwise ``result = data``."""

    PARAMS = frozenset({"fail_on"})

    def init(self, params: dict[str, Any]) -> None:
        self.fail_on = params.get("fail_on")

    def forward(self, batch: list[dict[str, Any]]) -> None:
        for item in batch:
            if _matches(item, self.fail_on):
                raise RuntimeError(f"Fail backend refused data {item.get('data')!r}")
        for item in batch:
            item["result"] = item["data"]


@register_backend("NoResult")
class NoResult(Backend):
    """Writes no ``result`` for items whose ``data`` equals ``drop_on`` (all when unset)."""

    PARAMS = frozenset({"drop_on"})

    def init(self, params: dict[str, Any]) -> None:
        self.drop_on = params.get("drop_on")

    def forward(self, batch: list[dict[str, Any]]) -> None:
        for item in batch:
            if not _matches(item, self.drop_on):
                item["result"] = item["data"]
