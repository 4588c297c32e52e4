"""TorchTensor and SyncTensor on the CPU: the plain torch model's logits, per-request rows,
typed errors for bad items, shared weights, and parameter handling."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch

import torchpipe_lite as tp
from torchpipe_lite.backends import sync_tensor
from torchpipe_lite.errors import ConfigError, InvalidInputError

MEAN = "123.675, 116.28, 103.53"
STD = "58.395, 57.120, 57.375"


def params_for(model: Path, **extra: Any) -> dict[str, Any]:
    return {"model": str(model), "device": "cpu", "mean": MEAN, "std": STD, "max": 4, **extra}


def images(count: int, seed: int = 0, size: int = 64) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randint(0, 256, (1, 3, size, size), generator=generator, dtype=torch.uint8)
        for _ in range(count)
    ]


@pytest.fixture(scope="module")
def reference_logits():
    """The plain torchvision model (same seeded weights as the export), mean/std by hand."""
    from service.tools.export_model import build_classifier

    model = build_classifier("resnet18")
    mean = torch.tensor([float(v) for v in MEAN.split(",")]).view(1, 3, 1, 1)
    std = torch.tensor([float(v) for v in STD.split(",")]).view(1, 3, 1, 1)

    def logits(batch: list[torch.Tensor]) -> torch.Tensor:
        with torch.inference_mode():
            return model((torch.cat(batch).float() - mean) / std)

    return logits


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).norm() / expected.norm())


def test_matches_the_plain_torch_model(resnet18_small_onnx: Path, reference_logits) -> None:
    backend = tp.create_backend("TorchTensor", params_for(resnet18_small_onnx))
    rows = images(3)
    batch = [{"data": row} for row in rows]
    backend.forward(batch)
    expected = reference_logits(rows)
    for index, item in enumerate(batch):
        result = item["result"]
        assert result.shape == (1, 1000) and result.dtype == torch.float32
        assert result.device.type == "cpu"
        assert relative_error(result, expected[index : index + 1]) < 1e-4


def test_each_row_equals_running_alone(resnet18_small_onnx: Path) -> None:
    backend = tp.create_backend("TorchTensor", params_for(resnet18_small_onnx))
    rows = images(4, seed=1)
    together = [{"data": row} for row in rows]
    backend.forward(together)
    for row, item in zip(rows, together, strict=True):
        alone = {"data": row}
        backend.forward([alone])
        torch.testing.assert_close(item["result"], alone["result"], rtol=1e-4, atol=1e-4)


def test_accepts_float_and_chw_inputs(resnet18_small_onnx: Path, reference_logits) -> None:
    backend = tp.create_backend("TorchTensor", params_for(resnet18_small_onnx))
    rows = images(3, seed=2)
    batch = [{"data": rows[0]}, {"data": rows[1].float()}, {"data": rows[2][0]}]
    backend.forward(batch)
    expected = reference_logits(rows)
    for index, item in enumerate(batch):
        assert relative_error(item["result"], expected[index : index + 1]) < 1e-4


def test_pads_batches_below_min(resnet18_small_onnx: Path, reference_logits) -> None:
    backend = tp.create_backend("TorchTensor", params_for(resnet18_small_onnx, min="2", max="3"))
    assert (backend.min(), backend.max()) == (2, 3)
    rows = images(1, seed=3)
    item = {"data": rows[0]}
    backend.forward([item])
    assert item["result"].shape == (1, 1000)
    assert relative_error(item["result"], reference_logits(rows)) < 1e-4


@pytest.mark.parametrize(
    "data",
    [
        torch.zeros(1, 3, 32, 32, dtype=torch.uint8),  # wrong size
        torch.zeros(2, 3, 64, 64, dtype=torch.uint8),  # two rows in one request
        torch.zeros(1, 3, 64, 64, dtype=torch.int64),  # wrong dtype
        torch.zeros(1, 1, 64, 64, dtype=torch.uint8),  # wrong channels
        b"jpeg bytes",
        None,
    ],
    ids=["size", "rows", "dtype", "channels", "bytes", "none"],
)
def test_bad_items_get_a_typed_error_and_batch_mates_still_run(
    resnet18_small_onnx: Path, data: Any
) -> None:
    backend = tp.create_backend("TorchTensor", params_for(resnet18_small_onnx))
    good = {"data": images(1)[0]}
    with pytest.raises(InvalidInputError, match="expected a 1x3x64x64 uint8 or float tensor"):
        backend.forward([good, {"data": data}])
    backend.forward([good])  # the scheduler re-runs each request alone
    assert good["result"].shape == (1, 1000)


def test_instances_share_weights_not_buffers(resnet18_small_onnx: Path) -> None:
    first = tp.create_backend("TorchTensor", params_for(resnet18_small_onnx, instance_index=0))
    second = tp.create_backend("TorchTensor", params_for(resnet18_small_onnx, instance_index=1))
    assert first.module is second.module
    assert first._input.static_input.data_ptr() != second._input.static_input.data_ptr()


def test_fp16_on_the_cpu_falls_back_to_fp32_with_a_log(
    resnet18_small_onnx: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="torchpipe_lite.backends.model.torch_tensor"):
        backend = tp.create_backend(
            "TorchTensor", params_for(resnet18_small_onnx, precision="fp16")
        )
    assert backend.precision == "fp32"
    assert any("running fp32 instead" in record.getMessage() for record in caplog.records)
    assert next(backend.module.parameters()).dtype == torch.float32


def test_torchscript_models(tmp_path: Path) -> None:
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )
    path = tmp_path / "tiny.pt"
    torch.jit.script(model.eval()).save(str(path))
    with pytest.raises(ConfigError, match="input_shape"):
        tp.create_backend("TorchTensor", {"model": str(path), "device": "cpu"})
    backend = tp.create_backend(
        "TorchTensor", {"model": str(path), "device": "cpu", "input_shape": "3, 8, 8", "max": 2}
    )
    data = torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8)
    item = {"data": data}
    backend.forward([item])
    with torch.inference_mode():
        expected = model(data.float())
    torch.testing.assert_close(item["result"], expected)


def test_models_with_several_outputs_are_refused(tmp_path: Path) -> None:
    class TwoHeads(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x.mean((2, 3)), x.amax((2, 3))

    path = tmp_path / "two.pt"
    torch.jit.script(TwoHeads()).save(str(path))
    with pytest.raises(ConfigError, match="one tensor output"):
        tp.create_backend(
            "TorchTensor", {"model": str(path), "device": "cpu", "input_shape": "3,4,4"}
        )


@pytest.mark.parametrize(
    "extra, key",
    [
        ({"min": 5, "max": 4}, "min"),
        ({"mean": "1, 2"}, "mean"),
        ({"std": "1, 0, 1"}, "std"),
        ({"precision": "int8"}, "precision"),
        ({"input_shape": "3,32,32"}, "input_shape"),
        ({"channels_last": "maybe"}, "channels_last"),
    ],
)
def test_bad_parameters_are_config_errors(resnet18_small_onnx: Path, extra: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        tp.create_backend("TorchTensor", params_for(resnet18_small_onnx, **extra))


def test_missing_or_unsupported_model_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model"):
        tp.create_backend("TorchTensor", {"device": "cpu"})
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="unsupported model file"):
        tp.create_backend("TorchTensor", {"model": str(weights), "device": "cpu"})


def test_sync_tensor_without_cuda_runs_its_child(
    resnet18_small_onnx: Path,
    reference_logits,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: tests/gpu covers SyncTensor there")
    monkeypatch.setattr(sync_tensor, "_warned_no_cuda", False)
    params = params_for(resnet18_small_onnx, min=1, max=3)
    with caplog.at_level(logging.WARNING, logger="torchpipe_lite.backends.sync_tensor"):
        backend = tp.create_backend("SyncTensor[TorchTensor]", params)
        tp.create_backend("SyncTensor[TorchTensor]", params)
    notes = [r for r in caplog.records if "no CUDA" in r.getMessage()]
    assert len(notes) == 1
    assert (backend.min(), backend.max()) == (1, 3)
    rows = images(2, seed=4)
    batch = [{"data": row} for row in rows]
    backend.forward(batch)
    expected = reference_logits(rows)
    assert relative_error(torch.cat([item["result"] for item in batch]), expected) < 1e-4


def test_sync_tensor_takes_at_most_one_child_and_alone_passes_data_on() -> None:
    with pytest.raises(tp.ConfigError, match="SyncTensor takes at most 1 child"):
        tp.load_config({"n": {"backend": "SyncTensor[Identity,Identity]"}})
    # TorchPipe's Sequential[...,Mat2Tensor,SyncTensor]: a childless SyncTensor is a
    # synchronisation point that passes each item's data on.
    chain = tp.create_backend("Sequential[Identity,SyncTensor]", {})
    batch = [{"data": 3}, {"data": 4}]
    chain.forward(batch)
    assert [item["result"] for item in batch] == [3, 4]


def test_fused_model_the_device_cannot_run_is_a_config_error_naming_fuse_conv(
    resnet18_small_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchpipe_lite.backends.model.conv_fusion import _conv_relu_class
    from torchpipe_lite.backends.model.torch_models import clear_cache

    def unsupported(self, x, residual=None):
        raise RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED")

    clear_cache()
    monkeypatch.setattr(_conv_relu_class(), "forward", unsupported)
    with pytest.raises(ConfigError, match="fuse_conv = false") as caught:
        tp.create_backend("TorchTensor", params_for(resnet18_small_onnx, fuse_conv="true"))
    assert caught.value.key == "fuse_conv" and "17 fused convolutions" in str(caught.value)
    unfused = tp.create_backend("TorchTensor", params_for(resnet18_small_onnx, fuse_conv="false"))
    assert unfused.max() == 4
    clear_cache()
