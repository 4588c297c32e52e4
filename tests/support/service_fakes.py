"""Stand-in handlers for the server tests: a handler the test holds mid-request."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import torch

from service.handlers.blocking import BlockingHandler
from tests.support.live_service import WAIT_S


class GatedHandler(BlockingHandler):
    """Every classification waits for the test's ``release``; ``entered`` counts arrivals."""

    handler_name = "gated"

    def __init__(self, threads: int = 4) -> None:
        super().__init__(device="cpu", threads=threads)
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()

    def classify(self, images: Sequence[bytes]) -> list[torch.Tensor]:
        self.entered.release()
        assert self.release.wait(WAIT_S), "the test never released the handler"
        return [torch.arange(10, dtype=torch.float32) for _ in images]

    def node_figures(self) -> list:
        return []
