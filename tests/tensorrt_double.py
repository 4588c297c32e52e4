"""A test double of the part of TensorRT's Python API that TensorrtTensor uses.

It keeps to the documented contracts that the backend must respect, for TensorRT 10.x or 11.x:

- ``BuilderFlag.FP16`` exists in 10.x and not in 11.x (reading it raises AttributeError, as the
  11.x bindings do); 11.x networks are strongly typed.
- an optimisation profile bounds the shapes a context accepts: ``set_input_shape`` outside it
  returns False;
- a context starts on profile 0, and two live contexts of one engine may not run on the same
  profile (``set_optimization_profile_async`` to a profile another context holds returns
  False, and so does ``execute_async_v3`` on a shared one);
- ``deserialize_cuda_engine`` returns None for bytes that are not an engine of this version.

The parser reads the real ONNX file (with the ``onnx`` package) for its inputs and outputs.
The "model" the engine runs: output[i, j] = mean(input[i]) + j, computed on host memory through
the addresses given (tests run it on CPU tensors), so a test sees which rows went where.
"""

from __future__ import annotations

import ctypes
import json
import types
from typing import Any

import numpy as np


class _Severity:
    WARNING = 2


class Logger:
    WARNING = _Severity.WARNING

    def __init__(self, severity: int = 2):
        self.severity = severity


class _DataType:
    def __init__(self, name: str, numpy_type: Any):
        self.name = name
        self.numpy_type = numpy_type

    def __repr__(self) -> str:
        return f"DataType.{self.name}"


float32 = _DataType("FLOAT", np.float32)
float16 = _DataType("HALF", np.float16)
int32 = _DataType("INT32", np.int32)
_BY_NAME = {dtype.name: dtype for dtype in (float32, float16, int32)}


class TensorIOMode:
    INPUT = "INPUT"
    OUTPUT = "OUTPUT"


class _Flags10:
    FP16 = "FP16"


class _Flags11:
    """TensorRT 11 removed the precision flags."""


class _Tensor:
    def __init__(self, name: str, shape: tuple[int, ...], dtype: _DataType):
        self.name, self.shape, self.dtype = name, shape, dtype


class _Network:
    def __init__(self, flags: int):
        self.flags = flags
        self.inputs: list[_Tensor] = []
        self.outputs: list[_Tensor] = []

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_input(self, index: int) -> _Tensor:
        return self.inputs[index]

    @property
    def num_outputs(self) -> int:
        return len(self.outputs)

    def get_output(self, index: int) -> _Tensor:
        return self.outputs[index]


def _onnx_dtype(code: int) -> _DataType:
    return float16 if code == 10 else float32


class OnnxParser:
    def __init__(self, network: _Network, logger: Logger):
        self.network = network
        self.errors: list[str] = []

    def parse_from_file(self, path: str) -> bool:
        import onnx

        try:
            model = onnx.load(path)
        except Exception as error:
            self.errors.append(str(error))
            return False
        weights = {init.name for init in model.graph.initializer}
        for value, target in ((model.graph.input, "inputs"), (model.graph.output, "outputs")):
            for item in value:
                if item.name in weights:
                    continue
                dims = item.type.tensor_type.shape.dim
                shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims)
                dtype = _onnx_dtype(item.type.tensor_type.elem_type)
                getattr(self.network, target).append(_Tensor(item.name, shape, dtype))
        return True

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, index: int) -> str:
        return self.errors[index]


class _Profile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

    def set_shape(self, name: str, low: Any, opt: Any, high: Any) -> None:
        low, opt, high = tuple(low), tuple(opt), tuple(high)
        if not all(a <= b <= c for a, b, c in zip(low, opt, high, strict=True)):
            raise ValueError(f"profile shapes out of order: {low} {opt} {high}")
        self.shapes[name] = (low, opt, high)


class _Config:
    def __init__(self) -> None:
        self.profiles: list[_Profile] = []
        self.flags: set[str] = set()

    def add_optimization_profile(self, profile: _Profile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def set_flag(self, flag: str) -> None:
        self.flags.add(flag)


class Builder:
    def __init__(self, logger: Logger):
        self.logger = logger

    def create_network(self, flags: int = 0) -> _Network:
        return _Network(flags)

    def create_optimization_profile(self) -> _Profile:
        return _Profile()

    def create_builder_config(self) -> _Config:
        return _Config()

    def build_serialized_network(self, network: _Network, config: _Config) -> bytes | None:
        _state.builds += 1
        (tensor,) = network.inputs
        output = network.outputs[0]
        plan = {
            "version": __version__,
            "input": [tensor.name, tensor.dtype.name, list(tensor.shape)],
            "output": [output.name, output.dtype.name, list(output.shape)],
            "profiles": [[list(s) for s in p.shapes[tensor.name]] for p in config.profiles],
            "flags": sorted(config.flags),
        }
        return ("TRTDOUBLE" + json.dumps(plan)).encode()


class Runtime:
    def __init__(self, logger: Logger):
        self.logger = logger

    def deserialize_cuda_engine(self, data: bytes) -> _Engine | None:
        text = bytes(data).decode(errors="replace")
        if not text.startswith("TRTDOUBLE"):
            return None
        plan = json.loads(text[len("TRTDOUBLE") :])
        if plan["version"].split(".")[0] != __version__.split(".")[0]:
            return None
        return _Engine(plan)


class _Engine:
    def __init__(self, plan: dict[str, Any]):
        self.plan = plan
        self.contexts: list[_Context] = []
        name, dtype, shape = plan["input"]
        self._tensors = {name: (TensorIOMode.INPUT, _BY_NAME[dtype], tuple(shape))}
        name, dtype, shape = plan["output"]
        self._tensors[name] = (TensorIOMode.OUTPUT, _BY_NAME[dtype], tuple(shape))
        self.input_name, self.output_name = plan["input"][0], plan["output"][0]

    @property
    def num_io_tensors(self) -> int:
        return len(self._tensors)

    @property
    def num_optimization_profiles(self) -> int:
        return len(self.plan["profiles"])

    @property
    def flags(self) -> list[str]:
        return self.plan["flags"]

    def get_tensor_name(self, index: int) -> str:
        return list(self._tensors)[index]

    def get_tensor_mode(self, name: str) -> str:
        return self._tensors[name][0]

    def get_tensor_dtype(self, name: str) -> _DataType:
        return self._tensors[name][1]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self._tensors[name][2]

    def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple[int, ...]]:
        return [tuple(shape) for shape in self.plan["profiles"][profile]]

    def create_execution_context(self) -> _Context:
        context = _Context(self)
        self.contexts.append(context)
        return context


class _Context:
    def __init__(self, engine: _Engine):
        self.engine = engine
        self.profile = 0
        self.input_shape: tuple[int, ...] | None = None
        self.addresses: dict[str, int] = {}
        self.last_input: np.ndarray | None = None

    def _profile_taken(self, profile: int) -> bool:
        return any(other.profile == profile for other in self.engine.contexts if other is not self)

    def set_optimization_profile_async(self, profile: int, stream: int) -> bool:
        if not 0 <= profile < self.engine.num_optimization_profiles or self._profile_taken(profile):
            return False
        self.profile = profile
        self.input_shape = None
        return True

    def set_input_shape(self, name: str, shape: Any) -> bool:
        shape = tuple(shape)
        low, _, high = self.engine.get_tensor_profile_shape(name, self.profile)
        if len(shape) != len(low) or not all(
            a <= s <= b for a, s, b in zip(low, shape, high, strict=True)
        ):
            return False
        self.input_shape = shape
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if name == self.engine.input_name:
            return self.input_shape or self.engine.get_tensor_shape(name)
        classes = self.engine.get_tensor_shape(name)[1]
        return (self.input_shape[0] if self.input_shape else -1, classes)

    def set_tensor_address(self, name: str, address: int) -> bool:
        if name not in (self.engine.input_name, self.engine.output_name) or not address:
            return False
        self.addresses[name] = address
        return True

    def execute_async_v3(self, stream: int) -> bool:
        engine = self.engine
        if (
            self.input_shape is None
            or len(self.addresses) != 2
            or self._profile_taken(self.profile)
        ):
            return False
        in_type = engine.get_tensor_dtype(engine.input_name).numpy_type
        out_type = engine.get_tensor_dtype(engine.output_name).numpy_type
        rows = self.input_shape[0]
        classes = engine.get_tensor_shape(engine.output_name)[1]
        inputs = _host_array(self.addresses[engine.input_name], in_type, self.input_shape)
        self.last_input = inputs.astype(np.float32).copy()
        outputs = _host_array(self.addresses[engine.output_name], out_type, (rows, classes))
        means = inputs.reshape(rows, -1).astype(np.float32).mean(axis=1, keepdims=True)
        outputs[:] = means + np.arange(classes, dtype=np.float32)[None, :]
        return True


def _host_array(address: int, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
    count = int(np.prod(shape))
    buffer = (ctypes.c_byte * (count * np.dtype(dtype).itemsize)).from_address(address)
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


class _State:
    builds = 0


_state = _State()
__version__ = "10.16.0"
BuilderFlag: Any = _Flags10


def module(version: str) -> types.ModuleType:
    """A fresh ``tensorrt`` module of ``version`` ("10.16.0", "11.4.0"...)."""
    double = types.ModuleType("tensorrt")
    for name in (
        "Logger",
        "Builder",
        "Runtime",
        "OnnxParser",
        "TensorIOMode",
        "float32",
        "float16",
        "int32",
    ):
        setattr(double, name, globals()[name])
    double.__version__ = version
    double.BuilderFlag = _Flags10 if version.startswith("10.") else _Flags11
    double.state = _State()
    globals()["__version__"] = version
    globals()["_state"] = double.state
    return double
