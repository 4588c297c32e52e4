"""TensorrtTensor: without TensorRT a clear error names the package and the extra; with
TensorRT and CUDA (never the case on this project's machines) it matches onnxruntime."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import torchpipe_lite as tp
from torchpipe_lite.backends.model.tensorrt_tensor import TensorrtTensor

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def test_is_registered_with_torchpipe_keys() -> None:
    assert tp.backends.registry.backend_class("TensorrtTensor") is TensorrtTensor
    assert {
        "model",
        "model::cache",
        "precision",
        "min",
        "max",
        "mean",
        "std",
    } <= TensorrtTensor.PARAMS
    # The ONNX file is not required at load: a valid model::cache serves without it.
    assert TensorrtTensor.FILE_PARAMS == ()


@pytest.mark.skipif(HAVE_TENSORRT, reason="tensorrt is installed here")
def test_missing_tensorrt_names_the_package_and_the_extra(tmp_path: Path) -> None:
    with pytest.raises(ImportError, match=r"`tensorrt`.*torchpipe-lite\[trt\]"):
        tp.create_backend("TensorrtTensor", {"model": str(tmp_path / "m.onnx")})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="TensorRT needs CUDA")
@pytest.mark.skipif(not HAVE_TENSORRT, reason="tensorrt is not installed (not installable here)")
def test_engine_matches_onnxruntime(resnet18_small_onnx: Path, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    cache = tmp_path / "resnet18.engine"
    params = {"model": str(resnet18_small_onnx), "model::cache": str(cache), "precision": "fp32"}
    params |= {"min": 1, "max": 4, "mean": "0", "std": "1"}
    backend = tp.create_backend("SyncTensor[TensorrtTensor]", params)
    assert cache.exists()
    rows = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    batch = [{"data": rows[i : i + 1]} for i in range(3)]
    backend.forward(batch)
    session = ort.InferenceSession(str(resnet18_small_onnx), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"input": rows.float().numpy()})[0]
    actual = torch.cat([item["result"] for item in batch]).numpy()
    assert np.linalg.norm(actual - expected) / np.linalg.norm(expected) < 1e-2
    again = tp.create_backend("SyncTensor[TensorrtTensor]", params)  # from the cache file
    item = {"data": rows[:1]}
    again.forward([item])
    np.testing.assert_allclose(item["result"].numpy(), actual[:1], rtol=1e-2, atol=1e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="TensorRT needs CUDA")
@pytest.mark.skipif(not HAVE_TENSORRT, reason="tensorrt is not installed (not installable here)")
def test_fp16_engine_with_two_instances_in_a_pipeline(resnet18_small_onnx: Path, tmp_path: Path):
    """The tutorial's setting: fp16 (on TensorRT 10; 11.x needs an fp16 ONNX, refused here
    with a ConfigError saying so), two instances, each on its own optimisation profile."""
    import tensorrt

    if int(tensorrt.__version__.split(".")[0]) >= 11:
        pytest.skip("TensorRT 11 builds fp16 only from an fp16 ONNX")
    table = {"backend": "SyncTensor[TensorrtTensor]", "model": str(resnet18_small_onnx)}
    table |= {"precision": "fp16", "min": 1, "max": 4, "instance_num": 2, "mean": "0", "std": "1"}
    rows = torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8)
    with tp.pipe({"model": table}) as model:
        futures = [model.submit({"data": rows[i : i + 1]}) for i in range(8)]
        results = torch.cat([future.result(timeout=600)["result"] for future in futures])
        placements = model.stats()["model"].instance_placements
    assert results.shape[0] == 8 and torch.isfinite(results).all()
    assert len(placements) == 2
