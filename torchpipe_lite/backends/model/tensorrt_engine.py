"""TensorRT engines for TensorrtTensor: checked before the build, built once, cached safely.

Building an engine takes minutes, so everything that can refuse a model is checked first, from
the ONNX file itself: one input whose batch axis can hold ``max``, one output. The engine has
one optimisation profile per instance (TensorRT requires each execution context in concurrent
use to have its own). A cache file (``model::cache``) is reused only when the JSON beside it
says it was built from the same ONNX bytes with the same settings and TensorRT; it is written
to a temporary file and renamed, under a lock file, so processes starting together
(``--workers``) build it once and never read half of it.

Supported: TensorRT 10.x (``precision = "fp16"`` through ``BuilderFlag.FP16``) and 11.x, where
networks are strongly typed: the ONNX's own types decide the precision, so fp16 needs an ONNX
with fp16 weights (the error says how to make one).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from ...errors import ConfigError
from ...values import Precision

logger = logging.getLogger(__name__)

#: The TensorRT major versions this backend is written for.
SUPPORTED_MAJORS = (10, 11)


@dataclass(frozen=True)
class EngineSpec:
    """What one engine is built from; two instances with equal specs share the engine."""

    onnx_path: str
    onnx_sha256: str | None  # None when only the cache file exists
    cache_path: str | None
    precision: Precision
    min_batch: int
    max_batch: int
    chw: tuple[int, int, int]
    profiles: int
    device_index: int
    tensorrt_version: str

    def settings(self) -> dict[str, Any]:
        """What the cache's metadata must match (the paths aside)."""
        fields = asdict(self)
        for local in ("onnx_path", "cache_path"):
            fields.pop(local)
        fields["chw"] = list(self.chw)
        fields["precision"] = str(self.precision)  # the cache's JSON holds the name
        return fields


@dataclass(frozen=True)
class OnnxFacts:
    """What the ONNX file says about its interface, read without TensorRT."""

    input_name: str
    input_shape: tuple[int | None, ...]  # None: a dynamic dimension
    outputs: tuple[str, ...]
    float16_weights: bool


def tensorrt_major(trt: Any) -> int:
    """The imported TensorRT's major version; ImportError outside ``SUPPORTED_MAJORS``."""
    version = str(getattr(trt, "__version__", "0"))
    major = int(version.split(".")[0])
    if major not in SUPPORTED_MAJORS:
        supported = " and ".join(f"{m}.x" for m in SUPPORTED_MAJORS)
        raise ImportError(f"TensorrtTensor supports TensorRT {supported}; found {version}")
    return major


def onnx_facts(path: str) -> OnnxFacts:
    """The input, outputs and weight type of an ONNX model (``ConfigError`` when unreadable)."""
    import onnx

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as error:  # onnx raises several types for a bad file
        raise ConfigError(f"cannot read {path} as ONNX: {error}", key="model") from None
    weights = {init.name for init in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in weights]
    if len(inputs) != 1:
        names = [value.name for value in inputs]
        raise ConfigError(f"{path} has inputs {names}; TensorrtTensor runs one", key="model")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = tuple(dim.dim_value if dim.HasField("dim_value") else None for dim in dims)
    float16 = onnx.TensorProto.FLOAT16
    float16_weights = any(init.data_type == float16 for init in model.graph.initializer)
    outputs = tuple(value.name for value in model.graph.output)
    return OnnxFacts(inputs[0].name, shape, outputs, float16_weights)


def check_before_build(facts: OnnxFacts, spec: EngineSpec, major: int, path: str) -> None:
    """Refuse, before minutes of building, what the engine could not run."""
    if len(facts.outputs) != 1:
        raise ConfigError(
            f"{path} has outputs {list(facts.outputs)}; TensorrtTensor runs models with one",
            key="model",
        )
    if len(facts.input_shape) != 4:
        raise ConfigError(
            f"{path}'s input {facts.input_name} has shape {facts.input_shape}; NxCxHxW expected",
            key="model",
        )
    batch = facts.input_shape[0]
    if batch is not None and batch < spec.max_batch:
        raise ConfigError(
            f"{path} fixes its batch axis at {batch}, but max = {spec.max_batch}: export it "
            f"with a dynamic batch axis, or set max = {batch}",
            key="max",
        )
    if major >= 11 and spec.precision is Precision.FP16 and not facts.float16_weights:
        raise ConfigError(
            f"TensorRT {spec.tensorrt_version} builds strongly typed networks, so fp16 needs an "
            f"ONNX with fp16 weights, and {path} has none: convert it (python -m "
            f'modelopt.onnx.autocast --onnx_path {path}) or set precision = "fp32"',
            key="precision",
        )


def file_sha256(path: str) -> str:
    """The SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class EngineStore:
    """The process's engines, shared by the instances with the same spec and freed with the
    last one; a lock per spec, so one model's build does not hold up another's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._engines: dict[EngineSpec, tuple[Any, int]] = {}
        self._building: dict[EngineSpec, threading.Lock] = {}

    def acquire(self, trt: Any, spec: EngineSpec) -> Any:
        """The engine of ``spec``: shared, loaded from its cache, or built (and cached)."""
        with self._lock:
            held = self._engines.get(spec)
            if held is not None:
                self._engines[spec] = (held[0], held[1] + 1)
                return held[0]
            building = self._building.setdefault(spec, threading.Lock())
        with building:
            with self._lock:
                held = self._engines.get(spec)
                if held is not None:
                    self._engines[spec] = (held[0], held[1] + 1)
                    return held[0]
            engine = load_or_build(trt, spec)
            with self._lock:
                self._engines[spec] = (engine, 1)
            return engine

    def release(self, spec: EngineSpec) -> None:
        """One instance is done with the engine; the last one frees it."""
        with self._lock:
            engine, users = self._engines.get(spec, (None, 0))
            if users <= 1:
                self._engines.pop(spec, None)
                self._building.pop(spec, None)
            else:
                self._engines[spec] = (engine, users - 1)


def load_or_build(trt: Any, spec: EngineSpec) -> Any:
    """Deserialise the cache when its metadata matches ``spec``, else build (and cache)."""
    trt_logger = trt.Logger(trt.Logger.WARNING)
    runtime = trt.Runtime(trt_logger)
    cache = spec.cache_path
    if cache is None:
        return _deserialize(runtime, build_serialized(trt, trt_logger, spec), spec)
    with _file_lock(cache + ".lock"):  # another process may be building this very file
        engine = _load_cache(runtime, spec)
        if engine is not None:
            return engine
        if spec.onnx_sha256 is None:
            raise ConfigError(
                f"{spec.onnx_path} does not exist and the cache {cache} does not match "
                f"the settings: nothing to build from",
                key="model",
            )
        serialized = build_serialized(trt, trt_logger, spec)
        _write_atomically(cache, serialized)
        _write_atomically(_metadata_path(cache), json.dumps(spec.settings()).encode())
        logger.info("saved the TensorRT engine to %s", cache)
        return _deserialize(runtime, serialized, spec)


def _load_cache(runtime: Any, spec: EngineSpec) -> Any | None:
    cache = spec.cache_path
    if not os.path.exists(cache):
        return None
    try:
        with open(_metadata_path(cache), "rb") as file:
            built_with = json.loads(file.read())
    except (OSError, ValueError):
        built_with = None
    wanted = spec.settings()
    if spec.onnx_sha256 is None and isinstance(built_with, dict):
        # No ONNX file: accept the cache for what it says it is, if that is what is asked.
        wanted["onnx_sha256"] = built_with.get("onnx_sha256")
        logger.warning(
            "%s is missing: using the cache %s built from ONNX %s",
            spec.onnx_path,
            cache,
            wanted["onnx_sha256"],
        )
    if built_with != wanted:
        logger.warning(
            "the TensorRT cache %s was built with other settings (%s); rebuilding",
            cache,
            _differences(built_with, wanted),
        )
        return None
    with open(cache, "rb") as file:
        engine = runtime.deserialize_cuda_engine(file.read())
    if engine is None:
        logger.warning("%s is not an engine this TensorRT can load: rebuilding", cache)
        return None
    if engine.num_optimization_profiles < spec.profiles:
        logger.warning("%s has too few optimisation profiles: rebuilding", cache)
        return None
    logger.info("loaded the TensorRT engine %s", cache)
    return engine


def _differences(found: Any, wanted: dict[str, Any]) -> str:
    if not isinstance(found, dict):
        return "no readable metadata"
    keys = sorted(key for key in wanted if found.get(key) != wanted[key])
    return ", ".join(f"{key}: {found.get(key)!r} -> {wanted[key]!r}" for key in keys) or "?"


def _deserialize(runtime: Any, serialized: bytes, spec: EngineSpec) -> Any:
    engine = runtime.deserialize_cuda_engine(serialized)
    if engine is None:
        raise RuntimeError(f"TensorRT could not deserialise the engine built from {spec.onnx_path}")
    return engine


def build_serialized(trt: Any, trt_logger: Any, spec: EngineSpec) -> bytes:
    """Parse the ONNX and build a serialised engine with ``spec.profiles`` identical profiles."""
    logger.warning(
        "building a TensorRT engine from %s (%s, batch %d..%d, %d profile(s)): this takes "
        "minutes%s",
        spec.onnx_path,
        spec.precision,
        spec.min_batch,
        spec.max_batch,
        spec.profiles,
        "" if spec.cache_path else "; set model::cache to keep it for next time",
    )
    started_s = time.perf_counter()
    major = tensorrt_major(trt)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)  # explicit batch (10.x), strongly typed (11.x)
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(spec.onnx_path):
        errors = "; ".join(str(parser.get_error(index)) for index in range(parser.num_errors))
        raise ConfigError(f"TensorRT could not parse {spec.onnx_path}: {errors}", key="model")
    tensor = network.get_input(0)
    low, high = (spec.min_batch, *spec.chw), (spec.max_batch, *spec.chw)
    config = builder.create_builder_config()
    for _ in range(spec.profiles):
        profile = builder.create_optimization_profile()
        profile.set_shape(tensor.name, low, high, high)
        config.add_optimization_profile(profile)
    if spec.precision is Precision.FP16 and major == 10:
        config.set_flag(trt.BuilderFlag.FP16)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {spec.onnx_path} (its log)")
    logger.info("built the TensorRT engine in %.0f s", time.perf_counter() - started_s)
    return bytes(serialized)


def _metadata_path(cache: str) -> str:
    return cache + ".json"


def _write_atomically(path: str, data: bytes) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def _file_lock(path: str) -> Iterator[None]:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a+b") as file:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(file.fileno(), fcntl.LOCK_UN)
