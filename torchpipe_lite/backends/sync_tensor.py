"""SyncTensor[X]: gives its instance thread a CUDA stream of its own, runs X on it, syncs after."""

from __future__ import annotations

import logging
from typing import Any

from .base import UNBOUNDED_BATCH, Backend, param_int
from .cuda_wait import deferred_waits, wait_for_current_stream, wait_for_stream
from .params import default_gpu_index
from .registry import register_backend

logger = logging.getLogger(__name__)

_warned_no_cuda = False


@register_backend("SyncTensor")
class SyncTensor(Backend):
    """Wraps one child. With CUDA, it creates a stream on device ``device_id`` (default: the
    instances spread over every visible GPU, as the model stages do), initialises the child on
    it (so CUDA graphs are captured there) and runs every ``forward`` on it, waiting for the
    stream once before returning (the child's own waits are deferred to that one): the batch's
    tensors are ready when the request moves on. Without CUDA it logs that once and runs the
    child plainly. Its batch range is the child's. ``stream_priority`` (default 0) is the
    stream's CUDA priority: -1 lets the stage that sets a pipeline's pace go first on the GPU.

    Without a child, as the last step of a ``Sequential`` (TorchPipe's
    ``Sequential[ResizeMat,cvtColorMat,Mat2Tensor,SyncTensor]``), it waits for the thread's
    current stream, so the steps before it have finished, and passes each item's data on.
    """

    PARAMS = frozenset({"device_id", "stream_priority"})
    MAX_CHILDREN = 1

    def init(self, params: dict[str, Any]) -> None:
        global _warned_no_cuda

        import torch

        self._torch = torch
        self.stream = None
        # CUDA's convention: lower runs first (0: the default; -1: ahead of default streams).
        priority = param_int(params, "stream_priority", 0)
        if not self.children:
            return
        if not torch.cuda.is_available():
            if not _warned_no_cuda:
                _warned_no_cuda = True
                logger.warning("SyncTensor: no CUDA device here; running its child plainly")
            self.children[0].init(params)
            return
        device_id = param_int(params, "device_id", default_gpu_index(params))
        # The current device is per thread; the instance thread keeps this one.
        torch.cuda.set_device(device_id)
        self.stream = torch.cuda.Stream(device=device_id, priority=priority)
        with torch.cuda.stream(self.stream):
            self.children[0].init(params)
        self.stream.synchronize()

    def forward(self, batch: list[dict[str, Any]]) -> None:
        if not self.children:  # a synchronisation point: the data moves on as it is
            if self._torch.cuda.is_available():
                wait_for_current_stream()
            for item in batch:
                item["result"] = item["data"]
            return
        if self.stream is None:
            self.children[0].forward(batch)
            return
        try:
            # The child's own per-step waits are deferred to the one below.
            with self._torch.cuda.stream(self.stream), deferred_waits():
                self.children[0].forward(batch)
        finally:
            wait_for_stream(self.stream)

    def min(self) -> int:
        return self.children[0].min() if self.children else 1

    def max(self) -> int:
        return self.children[0].max() if self.children else UNBOUNDED_BATCH

    def close(self) -> None:
        for child in self.children:
            child.close()
