"""TensorrtTensor: a TensorRT engine built from ONNX, one execution context and profile per
instance.

Not executed on the machines this project is developed and tested on: TensorRT cannot be
installed there (its wheels download from a host that is not reachable). The code follows the
TensorRT 10.x and 11.x Python APIs (``tensorrt_engine`` has the build and the cache); CI runs
its call sequence against a test double that keeps to those APIs' documented contracts, and
its real-TensorRT tests skip where ``tensorrt`` is absent.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any

from ...errors import BackendError, ConfigError
from ...values import Precision
from ..base import Backend
from ..cuda_wait import wait_for_stream
from ..params import (
    MODEL_PARAMS,
    param_batch_range,
    param_device,
    param_input_chw,
    param_int,
    param_mean_std,
    param_precision,
)
from ..registry import register_backend
from .model_input import BatchAssembler, instance_stream, split_rows
from .tensorrt_engine import (
    EngineSpec,
    EngineStore,
    check_before_build,
    file_sha256,
    onnx_facts,
    tensorrt_major,
)

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

_store = EngineStore()


def import_tensorrt() -> Any:
    """The ``tensorrt`` module (10.x or 11.x), or an ImportError saying how to install it."""
    try:
        import tensorrt
    except ImportError as error:
        raise ImportError(
            "TensorrtTensor needs the NVIDIA TensorRT Python package `tensorrt` (10.x or 11.x), "
            "which is not installed: pip install 'torchpipe-lite[trt]' (or pip install tensorrt). "
            "Without TensorRT use SyncTensor[TorchTensor] with the same parameters."
        ) from error
    tensorrt_major(tensorrt)
    return tensorrt


@register_backend("TensorrtTensor")
class TensorrtTensor(Backend):
    """Runs an ONNX model with TensorRT on CUDA.

    The engine is built once per process, on the instance's GPU, with one optimisation profile
    ``min``..``max`` per instance (``instance_num``), and kept in ``model::cache`` when given
    (see ``tensorrt_engine``). Each instance has its own execution context on its own profile,
    its own stream and static input (zeroed, so padding rows are zeros); ``mean``/``std`` are
    applied on the GPU before the engine. Every TensorRT call is checked: a refused shape or
    address fails the batch with a ``BackendError`` naming the node. Results are CPU float32
    rows, as with TorchTensor, copied back through a pinned buffer the instance waits for
    without spinning.
    """

    PARAMS = MODEL_PARAMS | {"model::cache"}

    def init(self, params: dict[str, Any]) -> None:
        trt = import_tensorrt()
        import torch

        self._torch = torch
        self._trt = trt
        if "model" not in params:
            raise ConfigError("is required (an .onnx file)", key="model")
        self.device = self._open_device(params)
        self.precision = param_precision(params, Precision.FP16)
        self._min, self._max = param_batch_range(params)
        profiles = param_int(params, "instance_num", 1)
        self._profile = param_int(params, "instance_index", 0) % max(profiles, 1)
        self._spec = _engine_spec(
            trt, params, self.precision, (self._min, self._max), profiles, self.device.index or 0
        )
        with self._on_device():
            engine = _store.acquire(trt, self._spec)
        self._engine = engine
        self._input_name, self._output_name = _io_names(trt, engine)
        self._input_dtype = _torch_dtype(trt, engine.get_tensor_dtype(self._input_name))
        self._output_dtype = _torch_dtype(trt, engine.get_tensor_dtype(self._output_name))
        low, _, high = engine.get_tensor_profile_shape(self._input_name, self._profile)
        if low[0] > self._min or high[0] < self._max:
            raise ConfigError(
                f"the engine's profile {self._profile} covers batches {low[0]}..{high[0]}, "
                f"not {self._min}..{self._max}",
                key="max",
            )
        chw = self._spec.chw
        mean, std = param_mean_std(params, chw[0])
        self._stream = self._open_stream()
        with self._on_stream():
            self._context = engine.create_execution_context()
            if self._context is None:
                raise RuntimeError("TensorRT could not create an execution context")
            self._check(
                self._context.set_optimization_profile_async(self._profile, self._stream_handle()),
                f"select optimisation profile {self._profile}",
            )
            self._input = BatchAssembler(
                chw, self._max, self.device, channels_last=False, mean=mean, std=std
            )
            self._input.static_input.zero_()
            self._output = None
            self._host_output = None
        logger.info(
            "TensorrtTensor %s (instance %s, profile %d): device %s, %s, batch %d..%d, input %s %s",
            params["model"],
            params.get("instance_index", 0),
            self._profile,
            self.device,
            self.precision,
            self._min,
            self._max,
            self._input_name,
            "x".join(map(str, chw)),
        )

    def forward(self, batch: list[dict[str, Any]]) -> None:
        rows = self._input.tensors(batch)
        count = len(rows)
        run = max(count, self._min)  # below the profile's minimum: padded with zero rows
        context = self._context
        with self._on_stream():
            self._input.load(rows)
            # TensorRT reads a contiguous NCHW buffer in the engine's input type.
            engine_input = self._input.normalized(run).to(self._input_dtype).contiguous()
            self._check(
                context.set_input_shape(self._input_name, tuple(engine_input.shape)),
                f"set the input shape {tuple(engine_input.shape)}",
            )
            output = self._output_buffer(tuple(context.get_tensor_shape(self._output_name)))
            self._check(
                context.set_tensor_address(self._input_name, engine_input.data_ptr()),
                "bind the input",
            )
            self._check(
                context.set_tensor_address(self._output_name, output.data_ptr()), "bind the output"
            )
            self._check(context.execute_async_v3(self._stream_handle()), "run the engine")
            host = self._download(output[:count])
        split_rows(host, batch)

    def min(self) -> int:
        return self._min

    def max(self) -> int:
        return self._max

    def placement(self) -> str | None:
        return str(self.device)

    def close(self) -> None:
        """Drop this instance's context and buffers; the last instance frees the engine."""
        if getattr(self, "_engine", None) is None:
            return
        self._context = None
        self._output = None
        self._host_output = None
        self._engine = None
        _store.release(self._spec)

    # -- the device, one seam each (a test double runs them on the CPU) ------------------------

    def _open_device(self, params: dict[str, Any]) -> torch.device:
        device = param_device(params, spread=True)
        if device.type != "cuda":
            raise ConfigError("TensorrtTensor needs a CUDA device", key="device")
        return device

    def _on_device(self) -> contextlib.AbstractContextManager:
        return self._torch.cuda.device(self.device)

    def _open_stream(self) -> Any:
        with self._on_device():
            return instance_stream(self.device)

    def _on_stream(self) -> contextlib.AbstractContextManager:
        return self._torch.cuda.stream(self._stream)

    def _stream_handle(self) -> int:
        return self._stream.cuda_stream

    def _download(self, output: torch.Tensor) -> torch.Tensor:
        """The output rows as CPU float32, through a pinned buffer (a sleeping wait)."""
        torch = self._torch
        staged = self._host_output
        if staged is None or staged.shape[0] < self._max or staged.shape[1:] != output.shape[1:]:
            shape = (self._max, *output.shape[1:])
            staged = self._host_output = torch.empty(shape, dtype=output.dtype, pin_memory=True)
        view = staged[: output.shape[0]]
        view.copy_(output, non_blocking=True)
        wait_for_stream(self._stream)
        return view.float().clone()

    # -- helpers -------------------------------------------------------------------------------

    def _output_buffer(self, shape: tuple[int, ...]) -> torch.Tensor:
        if any(dim < 0 for dim in shape):
            raise BackendError(f"TensorRT left the output shape unresolved: {shape}")
        output = self._output
        if output is None or output.shape[0] < shape[0] or tuple(output.shape[1:]) != shape[1:]:
            full = (self._max, *shape[1:])
            output = self._output = self._torch.empty(
                full, dtype=self._output_dtype, device=self.device
            )
        return output[: shape[0]]

    @staticmethod
    def _check(ok: Any, what: str) -> None:
        if not ok:
            raise BackendError(f"TensorRT refused to {what} (see the TensorRT log)")


def _engine_spec(
    trt: Any,
    params: dict[str, Any],
    precision: Precision,
    batch_range: tuple[int, int],
    profiles: int,
    device_index: int,
) -> EngineSpec:
    """What the engine is built from, checked against the ONNX file before any build."""
    low, high = batch_range
    onnx_path = os.path.realpath(str(params["model"]))
    cache = params.get("model::cache")
    cache_path = os.path.realpath(str(cache)) if cache else None
    major = tensorrt_major(trt)
    if os.path.exists(onnx_path):
        facts = onnx_facts(onnx_path)
        shape = facts.input_shape[1:] if len(facts.input_shape) == 4 else None
        chw = param_input_chw(params, shape)
        digest = file_sha256(onnx_path)
    elif cache_path and os.path.exists(cache_path):
        facts, digest = None, None
        chw = param_input_chw(params, None)  # without the ONNX, input_shape says it
    else:
        raise ConfigError(f"{onnx_path} does not exist (and no model::cache does)", key="model")
    spec = EngineSpec(
        onnx_path=onnx_path,
        onnx_sha256=digest,
        cache_path=cache_path,
        precision=precision,
        min_batch=low,
        max_batch=high,
        chw=chw,
        profiles=profiles,
        device_index=device_index,
        tensorrt_version=str(trt.__version__),
    )
    if facts is not None:
        check_before_build(facts, spec, major, onnx_path)
    return spec


def _io_names(trt: Any, engine: Any) -> tuple[str, str]:
    names = [engine.get_tensor_name(index) for index in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ConfigError(
            f"TensorrtTensor runs engines with one input and one output; this one has inputs "
            f"{inputs} and outputs {outputs}",
            key="model",
        )
    return inputs[0], outputs[0]


def _torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    import torch

    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32}
    for name, torch_type in (("bfloat16", torch.bfloat16), ("int64", torch.int64)):
        if hasattr(trt, name):
            table[getattr(trt, name)] = torch_type
    if dtype not in table:
        raise ConfigError(f"unsupported TensorRT tensor type {dtype}", key="model")
    return table[dtype]
