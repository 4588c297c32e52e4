"""TensorrtTensor: a TensorRT 10 engine built from ONNX, one execution context per instance.

Not executed on the machines this project is developed and tested on: TensorRT cannot be
installed there (its wheels download from a host that is not reachable). The code follows the
TensorRT 10 Python API; its tests skip where ``tensorrt`` is absent.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .base import Backend
from .model_input import BatchAssembler, instance_stream, split_rows
from .params import (
    MODEL_PARAMS,
    param_batch_range,
    param_device,
    param_input_chw,
    param_mean_std,
    param_precision,
)
from .registry import register_backend

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

_engines: dict[tuple, Any] = {}
_engines_lock = threading.Lock()


def import_tensorrt() -> Any:
    """The ``tensorrt`` module (10 or later), or an ImportError saying how to install it."""
    try:
        import tensorrt
    except ImportError as error:
        raise ImportError(
            "TensorrtTensor needs the NVIDIA TensorRT Python package `tensorrt` (10 or later), "
            "which is not installed: pip install 'torchpipe-lite[trt]' (or pip install tensorrt). "
            "Without TensorRT use SyncTensor[TorchTensor] with the same parameters."
        ) from error
    major = int(str(tensorrt.__version__).split(".")[0])
    if major < 10:
        raise ImportError(
            f"TensorrtTensor needs TensorRT 10 or later, found {tensorrt.__version__}"
        )
    return tensorrt


@register_backend("TensorrtTensor")
class TensorrtTensor(Backend):
    """Runs an ONNX model with TensorRT on CUDA.

    The engine is built once per process (one optimisation profile ``min``..``max`` on the
    batch axis; ``precision`` fp16 sets BuilderFlag.FP16) and serialised to ``model::cache``
    when given (loaded from there when the file exists). Every instance has its own execution
    context and static input buffer; ``mean``/``std`` are applied on the GPU before the engine.
    Results are CPU float32 rows, as with TorchTensor.
    """

    PARAMS = MODEL_PARAMS | {"model::cache"}
    FILE_PARAMS = ("model",)

    def init(self, params: dict[str, Any]) -> None:
        trt = import_tensorrt()
        import torch

        self._torch = torch
        if "model" not in params:
            raise ConfigError("is required (an .onnx file)", key="model")
        self.device = param_device(params, spread=True)
        if self.device.type != "cuda":
            raise ConfigError("TensorrtTensor needs a CUDA device", key="device")
        self.precision = param_precision(params, "fp16")
        self._min, self._max = param_batch_range(params)
        engine = _shared_engine(trt, params, self.precision, self._min, self._max, self.device)
        names = [engine.get_tensor_name(index) for index in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ConfigError(
                f"TensorrtTensor runs models with one input and one output; this engine has "
                f"inputs {inputs} and outputs {outputs}",
                key="model",
            )
        self._input_name, self._output_name = inputs[0], outputs[0]
        self._input_dtype = _torch_dtype(trt, engine.get_tensor_dtype(self._input_name))
        self._output_dtype = _torch_dtype(trt, engine.get_tensor_dtype(self._output_name))
        shape = tuple(engine.get_tensor_shape(self._input_name))[1:]
        chw = param_input_chw(params, tuple(None if dim < 0 else dim for dim in shape))
        mean, std = param_mean_std(params, chw[0])

        self._stream = instance_stream(self.device)
        with torch.cuda.stream(self._stream):
            self._context = engine.create_execution_context()
            self._input = BatchAssembler(
                chw, self._max, self.device, channels_last=False, mean=mean, std=std
            )
        logger.info(
            "TensorrtTensor %s (instance %s): device %s, %s, batch %d..%d, input %s %s",
            params["model"],
            params.get("instance_index", 0),
            self.device,
            self.precision,
            self._min,
            self._max,
            self._input_name,
            "x".join(map(str, chw)),
        )

    def forward(self, batch: list[dict[str, Any]]) -> None:
        torch = self._torch
        rows = self._input.tensors(batch)
        count = len(rows)
        run = max(count, self._min)  # below the profile's minimum: pad
        with torch.cuda.stream(self._stream):
            self._input.load(rows)
            # TensorRT reads a contiguous NCHW buffer in the engine's input type.
            engine_input = self._input.normalized(run).to(self._input_dtype).contiguous()
            context = self._context
            context.set_input_shape(self._input_name, tuple(engine_input.shape))
            output = torch.empty(
                tuple(context.get_tensor_shape(self._output_name)),
                dtype=self._output_dtype,
                device=self.device,
            )
            context.set_tensor_address(self._input_name, engine_input.data_ptr())
            context.set_tensor_address(self._output_name, output.data_ptr())
            if not context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log)")
            host = output[:count].float().to("cpu")  # waits for the stream
        split_rows(host, batch)

    def min(self) -> int:
        return self._min

    def max(self) -> int:
        return self._max

    def placement(self) -> str | None:
        return str(self.device)

    def close(self) -> None:
        self._context = None


def _torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    import torch

    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32}
    for name, torch_type in (("bfloat16", torch.bfloat16), ("int64", torch.int64)):
        if hasattr(trt, name):
            table[getattr(trt, name)] = torch_type
    if dtype not in table:
        raise ConfigError(f"unsupported TensorRT tensor type {dtype}", key="model")
    return table[dtype]


def _shared_engine(
    trt: Any, params: dict[str, Any], precision: str, low: int, high: int, device: torch.device
) -> Any:
    """The process's engine for these parameters: deserialised from ``model::cache`` when that
    file exists, else built (minutes) and saved there."""
    model = os.path.realpath(str(params["model"]))
    cache = params.get("model::cache")
    key = (model, cache, precision, low, high, str(device), params.get("input_shape"))
    with _engines_lock:
        if key in _engines:
            return _engines[key]
        trt_logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(trt_logger)
        engine = None
        if cache and os.path.exists(str(cache)):
            with open(str(cache), "rb") as file:
                engine = runtime.deserialize_cuda_engine(file.read())
            if engine is None:
                logger.warning("%s is not an engine this TensorRT can load: rebuilding", cache)
            else:
                logger.info("loaded TensorRT engine %s", cache)
        if engine is None:
            serialized = _build(trt, trt_logger, model, params, precision, low, high)
            if cache:
                os.makedirs(os.path.dirname(os.path.abspath(str(cache))), exist_ok=True)
                with open(str(cache), "wb") as file:
                    file.write(serialized)
                logger.info("saved TensorRT engine to %s", cache)
            engine = runtime.deserialize_cuda_engine(serialized)
            if engine is None:
                raise RuntimeError("TensorRT could not deserialise the engine it just built")
        _engines[key] = engine
        return engine


def _build(
    trt: Any,
    trt_logger: Any,
    model: str,
    params: dict[str, Any],
    precision: str,
    low: int,
    high: int,
) -> bytes:
    logger.warning(
        "building a TensorRT engine from %s (%s, batch %d..%d): this takes minutes%s",
        model,
        precision,
        low,
        high,
        "" if params.get("model::cache") else "; set model::cache to keep it for next time",
    )
    started_s = time.perf_counter()
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(model):
        errors = "; ".join(str(parser.get_error(index)) for index in range(parser.num_errors))
        raise ConfigError(f"TensorRT could not parse {model}: {errors}", key="model")
    if network.num_inputs != 1:
        raise ConfigError(f"{model} has {network.num_inputs} inputs; one is supported", key="model")
    tensor = network.get_input(0)
    chw = param_input_chw(params, tuple(None if d < 0 else d for d in tuple(tensor.shape)[1:]))
    profile = builder.create_optimization_profile()
    profile.set_shape(tensor.name, (low, *chw), (high, *chw), (high, *chw))
    config = builder.create_builder_config()
    config.add_optimization_profile(profile)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {model} (see its log)")
    logger.info("built the TensorRT engine in %.0f s", time.perf_counter() - started_s)
    return bytes(serialized)
