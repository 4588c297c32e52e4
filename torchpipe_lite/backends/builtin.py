"""The structural built-in backends: Identity, Sequential (alias S), Python and Parallel."""

from __future__ import annotations

from typing import Any

from ..filters import SWAP, Status, filter_function
from .base import Backend
from .registry import register_backend


@register_backend("Identity")
class Identity(Backend):
    """``result = data``: a stage that only passes requests on (a node's default backend)."""

    PARAMS = frozenset()

    def forward(self, batch: list[dict[str, Any]]) -> None:
        for item in batch:
            item["result"] = item["data"]


@register_backend("Sequential")
class Sequential(Backend):
    """Runs its children in order within one stage, each child's ``result`` becoming the next
    child's ``data``. An item that a child leaves without result skips the remaining children.

    As in TorchPipe, that is the ``swap`` filter, the default before every child but the first
    (which gets ``Run``); a child may name another, ``S[A,(or)B]``: ``Run`` runs the child,
    ``Skip`` passes the item to the next child unrun, ``Break`` (and ``SerialSkip``,
    ``SubGraphSkip``) makes it leave the Sequential as it is, ``Error`` fails it.

    Its batch range is the intersection of its children's: the largest ``min``, the smallest
    ``max`` (per-item children accept any size, so the one batching child decides).
    """

    PARAMS = frozenset()
    MAX_CHILDREN = None

    def init(self, params: dict[str, Any]) -> None:
        if not self.children:
            raise ValueError("Sequential needs at least one child backend")
        super().init(params)
        written = self.child_filters or [None] * len(self.children)
        self._filters = None
        if any(written):
            names = [
                name or ("Run" if position == 0 else SWAP) for position, name in enumerate(written)
            ]
            self._filters = [filter_function(name, params) for name in names]

    def forward(self, batch: list[dict[str, Any]]) -> None:
        if self._filters is not None:
            self._forward_filtered(batch)
            return
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

    def _forward_filtered(self, batch: list[dict[str, Any]]) -> None:
        active = batch
        for child, decide in zip(self.children, self._filters, strict=True):
            staying, running = [], []
            for item in active:
                status = decide(item)
                if status is Status.RUN:
                    item.pop("result", None)  # the child's own result, or none
                    running.append(item)
                    staying.append(item)
                elif status is Status.SKIP:
                    staying.append(item)
                elif status is Status.ERROR:
                    raise RuntimeError(f"the filter before {type(child).__name__} said Error")
            if running:
                child.forward(running)
            if not staying:
                return
            active = staying

    def min(self) -> int:
        return max(child.min() for child in self.children)

    def max(self) -> int:
        return min(child.max() for child in self.children)

    def close(self) -> None:
        for child in self.children:
            child.close()


@register_backend("Python")
class Python(Backend):
    """TorchPipe's ``Python[name]``: runs the backend registered as ``name`` (a class given to
    ``register_backend(cls, name)``), exactly as ``name`` alone would."""

    PARAMS = None
    MAX_CHILDREN = 1

    def init(self, params: dict[str, Any]) -> None:
        if len(self.children) != 1:
            raise ValueError("Python needs the registered backend's name: Python[name]")
        super().init(params)

    def forward(self, batch: list[dict[str, Any]]) -> None:
        self.children[0].forward(batch)

    def min(self) -> int:
        return self.children[0].min()

    def max(self) -> int:
        return self.children[0].max()

    def close(self) -> None:
        self.children[0].close()


@register_backend("Parallel")
class Parallel(Backend):
    """TorchPipe's ``Parallel[X]``: accepts a batch of any size for a child whose own ``max``
    is smaller, handing it pieces of at most the child's ``max`` (the child's ``min`` must be
    1). TorchPipe runs the pieces on threads at once; here they run in turn, because a backend
    instance is called by one thread at a time. A child that takes any size gets the batch."""

    PARAMS = frozenset()
    MAX_CHILDREN = 1

    def init(self, params: dict[str, Any]) -> None:
        if len(self.children) != 1:
            raise ValueError("Parallel needs one child backend: Parallel[X]")
        super().init(params)
        if self.children[0].min() != 1:
            raise ValueError(
                f"Parallel's child must accept one request (its min is {self.children[0].min()})"
            )

    def forward(self, batch: list[dict[str, Any]]) -> None:
        child = self.children[0]
        piece = child.max()
        for start in range(0, len(batch), piece):
            child.forward(batch[start : start + piece])

    def close(self) -> None:
        self.children[0].close()
