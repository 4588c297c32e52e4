"""The structural built-in backends: Identity and Sequential (alias S)."""

from __future__ import annotations

from typing import Any

from .base import Backend
from .registry import register_backend


@register_backend("Identity")
class Identity(Backend):
    """``result = data``: a stage that only passes requests on."""

    PARAMS = frozenset()

    def forward(self, batch: list[dict[str, Any]]) -> None:
        for item in batch:
            item["result"] = item["data"]


@register_backend("Sequential")
class Sequential(Backend):
    """Runs its children in order within one stage, each child's ``result`` becoming the next
    child's ``data``. An item that a child leaves without result skips the remaining children.

    Its batch range is the intersection of its children's: the largest ``min``, the smallest
    ``max`` (per-item children accept any size, so the one batching child decides).
    """

    PARAMS = frozenset()
    MAX_CHILDREN = None

    def init(self, params: dict[str, Any]) -> None:
        if not self.children:
            raise ValueError("Sequential needs at least one child backend")
        super().init(params)

    def forward(self, batch: list[dict[str, Any]]) -> None:
        active = batch
        last = len(self.children) - 1
        for position, child in enumerate(self.children):
            child.forward(active)
            if position == last:
                return
            survivors = []
            for item in active:
                if "result" in item:
                    item["data"] = item.pop("result")
                    survivors.append(item)
            if not survivors:
                return
            active = survivors

    def min(self) -> int:
        return max(child.min() for child in self.children)

    def max(self) -> int:
        return min(child.max() for child in self.children)

    def close(self) -> None:
        for child in self.children:
            child.close()
