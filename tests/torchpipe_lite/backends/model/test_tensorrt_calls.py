"""TensorrtTensor's call sequence against a TensorRT test double (10.x and 11.x), on the CPU.

Real TensorRT cannot be installed here; ``tests/tensorrt_double.py`` keeps to the documented
contracts the backend must respect, so these tests exercise the build, the per-instance
profiles, the checked calls and the engine cache.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

import torchpipe_lite as tp
from tests import tensorrt_double
from torchpipe_lite.backends.model import tensorrt_engine, tensorrt_tensor
from torchpipe_lite.backends.model.tensorrt_engine import EngineStore
from torchpipe_lite.backends.model.tensorrt_tensor import TensorrtTensor
from torchpipe_lite.errors import BackendError, ConfigError


@tp.register_backend("CpuTensorrtTensor")
class CpuTensorrtTensor(TensorrtTensor):
    """TensorrtTensor with its device seams on the CPU (the double runs on host memory)."""

    def _open_device(self, params: dict[str, Any]) -> torch.device:
        return torch.device("cpu")

    def _on_device(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def _open_stream(self) -> None:
        return None

    def _on_stream(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def _stream_handle(self) -> int:
        return 0

    def _download(self, output: torch.Tensor) -> torch.Tensor:
        return output.float().clone()


def write_onnx(
    path: Path, *, batch: int | str = "N", outputs: int = 1, weights: int = TensorProto.FLOAT
) -> Path:
    """A tiny model: (input * w) pooled to N x 3 (and a second output when asked)."""
    image = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 8, 8])
    scale = helper.make_tensor("w", weights, [1], [1.0])
    nodes = [
        helper.make_node("Cast", ["w"], ["w32"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["input", "w32"], ["scaled"]),
        helper.make_node("GlobalAveragePool", ["scaled"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["logits"]),
    ]
    results = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 3])]
    if outputs == 2:
        nodes.append(helper.make_node("Identity", ["logits"], ["copy"]))
        results.append(helper.make_tensor_value_info("copy", TensorProto.FLOAT, [batch, 3]))
    graph = helper.make_graph(nodes, "tiny", [image], results, initializer=[scale])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture(params=["10.16.0", "11.4.0"])
def trt(request, monkeypatch):
    double = tensorrt_double.module(request.param)
    monkeypatch.setitem(sys.modules, "tensorrt", double)
    monkeypatch.setattr(tensorrt_tensor, "_store", EngineStore())
    return double


@pytest.fixture
def trt10(monkeypatch):
    double = tensorrt_double.module("10.16.0")
    monkeypatch.setitem(sys.modules, "tensorrt", double)
    monkeypatch.setattr(tensorrt_tensor, "_store", EngineStore())
    return double


def params(model: Path, **extra: Any) -> dict[str, Any]:
    return {"model": str(model), "precision": "fp32", "min": 1, "max": 4, **extra}


def instance(settings: dict[str, Any], index: int = 0, count: int = 1) -> CpuTensorrtTensor:
    return tp.create_backend(
        "CpuTensorrtTensor", {**settings, "instance_index": index, "instance_num": count}
    )


def rows(*values: float) -> list[dict[str, Any]]:
    return [{"data": torch.full((1, 3, 8, 8), value)} for value in values]


def test_results_come_back_row_by_row(trt, tmp_path):
    backend = instance(params(write_onnx(tmp_path / "m.onnx"), mean="0", std="1"))
    batch = rows(1.0, 2.0, 3.0)
    backend.forward(batch)
    for item, value in zip(batch, (1.0, 2.0, 3.0), strict=True):
        np.testing.assert_allclose(item["result"].numpy(), [[value, value + 1, value + 2]])


def test_tensorrt_11_builds_fp16_from_an_fp16_onnx_without_the_removed_flag(tmp_path, monkeypatch):
    double = tensorrt_double.module("11.4.0")
    monkeypatch.setitem(sys.modules, "tensorrt", double)
    monkeypatch.setattr(tensorrt_tensor, "_store", EngineStore())
    assert not hasattr(double.BuilderFlag, "FP16")  # reading it raises, as in 11.x
    model = write_onnx(tmp_path / "m16.onnx", weights=TensorProto.FLOAT16)
    backend = instance(params(model, precision="fp16"))
    assert backend._engine.flags == []  # strongly typed: the ONNX's types decide


def test_tensorrt_11_refuses_fp16_for_an_fp32_onnx_before_building(tmp_path, monkeypatch):
    double = tensorrt_double.module("11.4.0")
    monkeypatch.setitem(sys.modules, "tensorrt", double)
    monkeypatch.setattr(tensorrt_tensor, "_store", EngineStore())
    with pytest.raises(ConfigError, match=r"strongly typed.*modelopt.*fp32"):
        instance(params(write_onnx(tmp_path / "m.onnx"), precision="fp16"))
    assert double.state.builds == 0


def test_tensorrt_10_sets_the_fp16_flag(trt10, tmp_path):
    backend = instance(params(write_onnx(tmp_path / "m.onnx"), precision="fp16"))
    assert backend._engine.flags == ["FP16"]


def test_each_instance_runs_on_its_own_profile(trt, tmp_path):
    settings = params(write_onnx(tmp_path / "m.onnx"))
    first, second = instance(settings, 0, 2), instance(settings, 1, 2)
    assert first._engine is second._engine and first._engine.num_optimization_profiles == 2
    assert (first._context.profile, second._context.profile) == (0, 1)
    for backend in (first, second):  # the double refuses two contexts on one profile
        batch = rows(5.0)
        backend.forward(batch)
        assert batch[0]["result"][0, 0] == 5.0
    assert trt.state.builds == 1


def test_a_refused_shape_is_a_backend_error(trt, tmp_path):
    backend = instance(params(write_onnx(tmp_path / "m.onnx")))
    backend._context.set_input_shape = lambda name, shape: False
    with pytest.raises(BackendError, match="refused to set the input shape"):
        backend.forward(rows(1.0))


def test_a_refused_address_is_a_backend_error(trt, tmp_path):
    backend = instance(params(write_onnx(tmp_path / "m.onnx")))
    backend._context.set_tensor_address = lambda name, address: False
    with pytest.raises(BackendError, match="refused to bind the input"):
        backend.forward(rows(1.0))


def test_padding_rows_are_zeros(trt, tmp_path):
    backend = instance(params(write_onnx(tmp_path / "m.onnx"), min=3, mean="0", std="1"))
    backend.forward(rows(7.0))
    seen = backend._context.last_input
    assert seen.shape[0] == 3 and (seen[0] == 7.0).all() and (seen[1:] == 0).all()


def test_input_shape_as_a_toml_list_is_accepted(trt, tmp_path):
    model = write_onnx(tmp_path / "m.onnx")
    instance(params(model, input_shape=[3, 8, 8]))


def test_a_fixed_batch_onnx_with_a_larger_max_is_refused_before_building(trt, tmp_path):
    with pytest.raises(ConfigError, match="fixes its batch axis at 1"):
        instance(params(write_onnx(tmp_path / "m.onnx", batch=1)))
    assert trt.state.builds == 0


def test_a_model_with_two_outputs_is_refused_before_building(trt, tmp_path):
    with pytest.raises(ConfigError, match="outputs"):
        instance(params(write_onnx(tmp_path / "m.onnx", outputs=2)))
    assert trt.state.builds == 0


def test_the_cache_is_reused_only_for_the_same_onnx_and_settings(trt, tmp_path, monkeypatch):
    model, cache = write_onnx(tmp_path / "m.onnx"), tmp_path / "engines" / "m.engine"
    settings = params(model, **{"model::cache": str(cache)})
    instance(settings).close()
    assert cache.exists() and Path(f"{cache}.json").exists() and trt.state.builds == 1
    monkeypatch.setattr(tensorrt_tensor, "_store", EngineStore())  # a new process
    instance(settings).close()
    assert trt.state.builds == 1  # loaded from the cache
    instance({**settings, "max": 2}).close()  # other settings: rebuilt
    assert trt.state.builds == 2
    write_onnx(model, weights=TensorProto.FLOAT16)  # other ONNX bytes, same path
    monkeypatch.setattr(tensorrt_tensor, "_store", EngineStore())
    instance(settings).close()
    assert trt.state.builds == 3
    assert not list(cache.parent.glob(".tmp-*"))  # written to a temporary file and renamed


def test_a_corrupt_cache_file_is_rebuilt(trt, tmp_path, monkeypatch):
    model, cache = write_onnx(tmp_path / "m.onnx"), tmp_path / "m.engine"
    settings = params(model, **{"model::cache": str(cache)})
    instance(settings).close()
    cache.write_bytes(b"not an engine")
    monkeypatch.setattr(tensorrt_tensor, "_store", EngineStore())
    instance(settings).close()
    assert trt.state.builds == 2


def test_concurrent_builders_build_once(trt, tmp_path):
    model, cache = write_onnx(tmp_path / "m.onnx"), tmp_path / "m.engine"
    settings = params(model, **{"model::cache": str(cache)})
    spec = tensorrt_tensor._engine_spec(trt, settings, "fp32", (1, 4), 1, 0)
    engines: list[Any] = []
    errors: list[BaseException] = []

    def start() -> None:  # two processes starting together, each with its own engines
        try:
            engines.append(tensorrt_engine.load_or_build(trt, spec))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors and len(engines) == 2 and trt.state.builds == 1


def test_a_valid_cache_serves_without_the_onnx_file(trt, tmp_path, monkeypatch):
    model, cache = write_onnx(tmp_path / "m.onnx"), tmp_path / "m.engine"
    settings = params(model, **{"model::cache": str(cache)}, input_shape="3,8,8")
    instance(settings).close()
    model.unlink()
    monkeypatch.setattr(tensorrt_tensor, "_store", EngineStore())
    batch = rows(2.0)
    instance(settings).forward(batch)
    assert batch[0]["result"][0, 0] == 2.0 and trt.state.builds == 1


def test_the_last_instance_to_close_frees_the_engine(trt, tmp_path):
    settings = params(write_onnx(tmp_path / "m.onnx"))
    first, second = instance(settings, 0, 2), instance(settings, 1, 2)
    store = tensorrt_tensor._store
    first.close()
    assert store._engines
    second.close()
    assert not store._engines


def test_an_unsupported_version_is_refused(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", tensorrt_double.module("9.3.0"))
    with pytest.raises(ImportError, match=r"supports TensorRT 10\.x and 11\.x; found 9\.3\.0"):
        instance(params(write_onnx(tmp_path / "m.onnx")))
