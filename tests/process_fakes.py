"""Backends for the Process[X] tests, in a module a child process can import."""

from __future__ import annotations

import os
import sys
from typing import Any

import torchpipe_lite as tp
from torchpipe_lite import Backend, register_backend


@register_backend("TestWhere")
class Where(Backend):
    """result = (data, the pid that ran it); removes the key ``drop_me``; replaces ``data``."""

    def forward(self, batch: list[dict[str, Any]]) -> None:
        for item in batch:
            item["result"] = (item["data"], os.getpid())
            item.pop("drop_me", None)
            item["data"] = "rewritten in the child"


@register_backend("TestRefuse")
class Refuse(Backend):
    """Invalid input for data "bad", a RuntimeError for "boom", os._exit for "die"."""

    def forward(self, batch: list[dict[str, Any]]) -> None:
        for item in batch:
            if item["data"] == "bad":
                raise tp.InvalidInputError("not a good one")
            if item["data"] == "boom":
                raise RuntimeError("exploded")
            if item["data"] == "die":
                os._exit(3)
        for item in batch:
            item["result"] = item["data"]


@register_backend("TestInitFails")
class InitFails(Backend):
    """Cannot initialise."""

    def init(self, params: dict[str, Any]) -> None:
        raise RuntimeError("no model here")


@register_backend("TestTorchLoaded")
class TorchLoaded(Backend):
    """result = whether this process has imported torch."""

    def forward(self, batch: list[dict[str, Any]]) -> None:
        for item in batch:
            item["result"] = "torch" in sys.modules
