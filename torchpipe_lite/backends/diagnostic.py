"""TorchPipe's built-in diagnostic backends, which its users' tests name: Sleep, RuntimeError
and C10Exception. They are registered with the library, as TorchPipe's are."""

from __future__ import annotations

import time
from typing import Any

from .base import Backend
from .registry import register_backend


@register_backend("Sleep")
class Sleep(Backend):
    """``result = data`` after sleeping ``sleep_ms`` (TorchPipe's key: ``Sleep::time``) per
    batch, 10 ms by default: a stand-in for compute."""

    PARAMS = frozenset({"sleep_ms", "Sleep::time"})

    def init(self, params: dict[str, Any]) -> None:
        self.sleep_s = float(params.get("sleep_ms", params.get("Sleep::time", 10))) / 1000.0

    def forward(self, batch: list[dict[str, Any]]) -> None:
        time.sleep(self.sleep_s)
        for item in batch:
            item["result"] = item["data"]


@register_backend("RuntimeError")
class RaiseRuntimeError(Backend):
    """Raises ``RuntimeError`` for every request (TorchPipe's test backend of that name)."""

    PARAMS = frozenset()

    def forward(self, batch: list[dict[str, Any]]) -> None:
        raise RuntimeError("RuntimeError backend: raised as asked")


@register_backend("C10Exception")
class C10Exception(Backend):
    """Fails as TorchPipe's does, by asking a tensor for a dimension it lacks: libtorch's
    ``IndexError`` (TorchPipe's test backend for errors raised inside torch)."""

    PARAMS = frozenset()

    def forward(self, batch: list[dict[str, Any]]) -> None:
        import torch

        torch.empty((2, 2, 2)).size(-19090)


@register_backend("CopySplit")
class CopySplit(Backend):
    """``result`` = a list of ``split_size`` (default 2) references to ``data``: fans one
    request out for a ``MapReduce`` node (TorchPipe's test backend of that name)."""

    PARAMS = frozenset({"split_size"})

    def init(self, params: dict[str, Any]) -> None:
        self.split_size = int(params.get("split_size", 2))
        if self.split_size < 1:
            raise ValueError(f"split_size must be at least 1, got {self.split_size}")

    def forward(self, batch: list[dict[str, Any]]) -> None:
        for item in batch:
            item["result"] = [item["data"]] * self.split_size
