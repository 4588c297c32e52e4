"""Fake backends for tests (the project's and users' own): Fail, NoResult.

They register when this module is imported (``import torchpipe_lite.testing``), not with
``import torchpipe_lite``: a production pipeline never has them among its backends. ``Sleep``
(with TorchPipe's other diagnostic backends) is registered with the library, as in TorchPipe;
it is re-exported here for the tests that import it from this module.
"""

from __future__ import annotations

from typing import Any

from .backends.base import Backend
from .backends.diagnostic import Sleep
from .backends.registry import register_backend

__all__ = ["Fail", "NoResult", "Sleep"]


def _matches(item: dict[str, Any], trigger: Any) -> bool:
    return trigger is None or item.get("data") == trigger


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
