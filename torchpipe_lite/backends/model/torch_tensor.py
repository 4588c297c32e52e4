"""TorchTensor: runs a model with PyTorch, batched; on a GPU with one CUDA graph per batch size.

Each request carries one 1xCxHxW tensor (uint8 pixels, or float in the same 0..255 units).
Its ``result`` is its own row of the model's output: a CPU float32 tensor of shape 1 x ...
(1x1000 logits for ResNet50), copied back once per batch, so downstream stages and RPC
handlers need no device synchronisation.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from ...errors import ConfigError
from ...values import Precision
from ..base import Backend
from ..cuda_wait import wait_for_stream
from ..params import (
    MODEL_PARAMS,
    param_batch_range,
    param_bool,
    param_device,
    param_input_chw,
    param_mean_std,
    param_precision,
)
from ..registry import register_backend
from .model_input import BatchAssembler, instance_stream, split_rows
from .torch_models import SharedModel, shared_model

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# One capture at a time in the process: torch.cuda.graph() synchronises the device and empties
# the allocator cache on entry, which must not happen while another thread is capturing.
_capture_lock = threading.Lock()


def running_precision(params: dict[str, Any], *, on_gpu: bool) -> Precision:
    """The precision ``TorchTensor`` runs with these parameters: ``precision`` (fp16 by default
    on CUDA, fp32 on the CPU), and always fp32 on the CPU, where half precision is slow or
    unsupported."""
    precision = param_precision(params, Precision.FP16 if on_gpu else Precision.FP32)
    return precision if on_gpu else Precision.FP32


@register_backend("TorchTensor")
class TorchTensor(Backend):
    """A model file (.onnx, converted once per process, or TorchScript) run with PyTorch.

    On CUDA: fp16 (``precision``, default fp16), channels-last (``channels_last``, default on),
    ``mean``/``std`` fused into the graph, each Conv -> [Add ->] ReLU chain of an ONNX model run
    as one cuDNN kernel (``fuse_conv``, default on), and one CUDA graph per batch size
    ``min``..``max`` (``cuda_graph``, default on) captured at init on the instance's stream,
    with this instance's own static buffers; the weights are shared by every instance. On the
    CPU: fp32, plain eager PyTorch. Batches smaller than ``min`` are padded up to it.
    """

    PARAMS = MODEL_PARAMS | {"channels_last", "cuda_graph", "fuse_conv"}
    FILE_PARAMS = ("model",)

    def init(self, params: dict[str, Any]) -> None:
        import torch

        self._torch = torch
        if "model" not in params:
            raise ConfigError("is required (an .onnx or TorchScript file)", key="model")
        self.device = param_device(params, spread=True)
        on_gpu = self.device.type == "cuda"
        self.precision = running_precision(params, on_gpu=on_gpu)
        if param_precision(params, Precision.FP32) is Precision.FP16 and not on_gpu:
            logger.warning(
                "precision fp16 asked on the CPU: running fp32 instead "
                "(half precision on the CPU is slow or unsupported)"
            )
        self._min, self._max = param_batch_range(params)
        channels_last = param_bool(params, "channels_last", on_gpu)
        self._channels_last = channels_last
        self.uses_cuda_graphs = param_bool(params, "cuda_graph", on_gpu)
        if self.uses_cuda_graphs and not on_gpu:
            logger.info("cuda_graph ignored: the model runs on the CPU")
            self.uses_cuda_graphs = False
        fuse_conv = param_bool(params, "fuse_conv", on_gpu)
        self._dtype = torch.float16 if self.precision is Precision.FP16 else torch.float32
        model = self._load_model(str(params["model"]), channels_last, fuse_conv)
        self.module = model.module
        chw = param_input_chw(params, model.input_chw)
        mean, std = param_mean_std(params, chw[0])

        self._stream = instance_stream(self.device) if on_gpu else None
        self._graphs: dict[int, tuple[Any, torch.Tensor]] = {}
        self.graph_replays = 0
        started_s = time.perf_counter()
        with self._on_stream(), torch.inference_mode():
            self._input = BatchAssembler(
                chw, self._max, self.device, channels_last=channels_last, mean=mean, std=std
            )
            self._input.static_input.zero_()
            full_output = self._first_run(model.fused_convolutions)
            self._check_output(full_output)
            # Results come back through one pinned buffer: an asynchronous copy the instance
            # then waits for without spinning a core (see cuda_wait).
            self._host_output = (
                torch.empty(full_output.shape, dtype=full_output.dtype, pin_memory=True)
                if on_gpu
                else None
            )
            if self.uses_cuda_graphs:
                self._capture()
        if self._stream is not None:
            wait_for_stream(self._stream)
        logger.info(
            "TorchTensor %s (instance %s): device %s, %s, batch %d..%d, input %s, "
            "channels_last %s, CUDA graphs %s; ready in %.1f s",
            params["model"],
            params.get("instance_index", 0),
            self.device,
            self.precision,
            self._min,
            self._max,
            "x".join(map(str, chw)),
            channels_last,
            f"yes ({len(self._graphs)} captured)" if self.uses_cuda_graphs else "no",
            time.perf_counter() - started_s,
        )

    def forward(self, batch: list[dict[str, Any]]) -> None:
        rows = self._input.tensors(batch)
        count = len(rows)
        run = max(count, self._min)
        with self._on_stream(), self._torch.inference_mode():
            self._input.load(rows)
            if self._graphs:
                graph, output = self._graphs[run]
                graph.replay()
                self.graph_replays += 1
            else:
                output = self._compute(run)
            if self._host_output is None:
                host = output[:count]
            else:
                # One device-to-host copy per batch. Once the wait returns the stream is idle,
                # so the pinned input rows are free for the next batch too.
                staged = self._host_output[:count]
                staged.copy_(output[:count], non_blocking=True)
                wait_for_stream(self._stream)
                host = staged.clone()  # the pinned buffer is overwritten by the next batch
        split_rows(host, batch)

    def min(self) -> int:
        return self._min

    def placement(self) -> str | None:
        return str(self.device)

    def max(self) -> int:
        return self._max

    def close(self) -> None:
        self._graphs.clear()

    def _load_model(self, path: str, channels_last: bool, fuse_conv: bool) -> SharedModel:
        """The shared, converted model of ``path`` in this instance's dtype and device."""
        return shared_model(path, self._dtype, self.device, channels_last, fuse_conv)

    def _on_stream(self) -> contextlib.AbstractContextManager:
        if self._stream is None:
            return contextlib.nullcontext()
        return self._torch.cuda.stream(self._stream)

    def _compute(self, count: int) -> torch.Tensor:
        batch = self._input.normalized(count).to(self._dtype)
        if self._channels_last:  # a no-op when the fused multiply-add kept the layout
            batch = batch.contiguous(memory_format=self._torch.channels_last)
        output = self.module(batch)
        if not isinstance(output, self._torch.Tensor):
            return output  # refused by _check_output at init
        return output.float()

    def _first_run(self, fused_convolutions: int) -> torch.Tensor:
        """The model at ``max`` rows; a fused model the cuDNN here cannot run is a ConfigError."""
        try:
            return self._compute(self._max)
        except RuntimeError as error:
            if not fused_convolutions:
                raise
            raise ConfigError(
                f"the model with {fused_convolutions} fused convolutions failed on "
                f"{self.device} ({error}); set fuse_conv = false to run it unfused",
                key="fuse_conv",
            ) from error

    def _check_output(self, output: Any) -> None:
        if not isinstance(output, self._torch.Tensor):
            raise ConfigError(
                f"the model returns {type(output).__name__}; TorchTensor runs models with one "
                f"tensor output",
                key="model",
            )
        if output.dim() == 0 or output.shape[0] != self._max:
            raise ConfigError(
                f"the model's output {tuple(output.shape)} has no batch axis of {self._max}",
                key="model",
            )

    def _capture(self) -> None:
        """One graph per batch size, largest first so it sizes the pool the others share.

        Sharing one memory pool is safe here: replays never overlap (one instance thread, one
        stream) and every graph's output stays referenced, so no capture reuses it.
        """
        torch = self._torch
        with _capture_lock:
            pool = torch.cuda.graph_pool_handle()
            for count in range(self._max, self._min - 1, -1):
                for _ in range(2):  # warm-up at this shape: cuDNN loads and picks its kernels
                    self._compute(count)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(
                    graph, pool=pool, stream=self._stream, capture_error_mode="thread_local"
                ):
                    output = self._compute(count)
                self._graphs[count] = (graph, output)
