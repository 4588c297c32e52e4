"""GPU stages against the CPU stages, and TorchTensor on CUDA: fp16 vs fp32, CUDA graphs per
batch size, SyncTensor's stream, several instances. Run on the lent GPU box: pytest -m gpu."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

import torchpipe_lite as tp
from tests.image_samples import IMAGES_DIR, png_header_claiming

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

MEAN = "123.675, 116.28, 103.53"
STD = "58.395, 57.120, 57.375"
PHOTOS = sorted(IMAGES_DIR.glob("*.jpg"))


def model_params(model: Path, **extra: Any) -> dict[str, Any]:
    return {"model": str(model), "mean": MEAN, "std": STD, "min": 1, "max": 8, **extra}


def one(expression: str, data: Any, **params: Any) -> dict[str, Any]:
    item = {"data": data}
    tp.create_backend(expression, params).forward([item])
    return item


def preprocessed(path: Path) -> torch.Tensor:
    """CPU pipeline: decode, resize 224, RGB, 1x3x224x224 uint8."""
    item = {"data": path.read_bytes()}
    tp.create_backend("DecodeMat", {}).forward([item])
    item = {"data": item["result"], "color": "bgr"}
    params = {"resize_h": 224, "resize_w": 224, "color": "rgb"}
    tp.create_backend("Sequential[ResizeMat,CvtColorMat,Mat2Tensor]", params).forward([item])
    return item["result"]


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.float() - expected.float()).norm() / expected.float().norm())


def test_decode_tensor_matches_decode_mat_within_decoder_tolerance() -> None:
    decoder = tp.create_backend("DecodeTensor", {})
    for path in PHOTOS:
        data = path.read_bytes()
        item = {"data": data}
        decoder.forward([item])
        gpu = item["result"]
        assert gpu.is_cuda and gpu.dtype == torch.uint8 and item["color"] == "rgb"
        cpu = one("DecodeMat", data)["result"][:, :, ::-1]  # BGR -> RGB
        assert tuple(gpu.shape) == (1, 3, *cpu.shape[:2]), path.name
        diff = np.abs(gpu[0].permute(1, 2, 0).cpu().numpy().astype(int) - cpu.astype(int))
        print(f"{path.name}: nvJPEG vs libjpeg mean |diff| {diff.mean():.3f}, max {diff.max()}")
        assert diff.mean() < 2.0, path.name
        assert (diff > 10).mean() < 0.02, path.name


def test_batched_nvjpeg_equals_one_at_a_time_and_handles_mixed_batches() -> None:
    decoder = tp.create_backend("DecodeTensor", {"color": "bgr"})
    batch = [{"data": path.read_bytes()} for path in PHOTOS]
    png = cv2.imencode(".png", np.random.default_rng(0).integers(0, 256, (30, 40, 4), np.uint8))[1]
    extras = [{"data": png.tobytes()}, {"data": b"not an image"}]
    decoder.forward(batch + extras)
    for path, item in zip(PHOTOS, batch, strict=True):
        alone = {"data": path.read_bytes()}
        decoder.forward([alone])
        assert item["color"] == "bgr"
        torch.testing.assert_close(item["result"], alone["result"], rtol=0, atol=0)
    png_expected = one("DecodeMat", png.tobytes())["result"]  # CPU fallback: exact
    np.testing.assert_array_equal(
        extras[0]["result"][0].permute(1, 2, 0).cpu().numpy(), png_expected
    )
    assert "result" not in extras[1]


def test_decode_tensor_grayscale_and_hostile_inputs() -> None:
    gray = one("DecodeTensor", (IMAGES_DIR / "coins.jpg").read_bytes())["result"]
    assert gray.shape[1] == 3
    torch.testing.assert_close(gray[:, 0], gray[:, 1], rtol=0, atol=0)
    with pytest.raises(tp.InvalidInputError, match="60000x60000"):
        one("DecodeTensor", png_header_claiming(60000, 60000))
    data = (IMAGES_DIR / "chelsea.jpg").read_bytes()
    for keep in (3, 100, len(data) // 2):
        item = one("DecodeTensor", data[:keep])
        assert "result" not in item or item["result"].shape == (1, 3, 300, 451)


def test_gpu_resize_and_colour_match_the_cpu_stages() -> None:
    for path in PHOTOS[:5]:
        bgr = one("DecodeMat", path.read_bytes())["result"]
        expected = cv2.cvtColor(
            cv2.resize(bgr, (224, 224), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB
        )
        item = {"data": torch.from_numpy(bgr).cuda().permute(2, 0, 1).unsqueeze(0), "color": "bgr"}
        params = {"resize_h": 224, "resize_w": 224, "color": "rgb"}
        tp.create_backend("Sequential[ResizeTensor,CvtColorTensor]", params).forward([item])
        out = item["result"]
        assert out.is_cuda and out.dtype == torch.uint8 and item["color"] == "rgb"
        diff = np.abs(out[0].permute(1, 2, 0).cpu().numpy().astype(int) - expected.astype(int))
        assert diff.max() <= 2, path.name


def test_mat2tensor_to_cuda() -> None:
    image = np.random.default_rng(1).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    tensor = one("Mat2Tensor", image, device="cuda")["result"]
    assert tensor.is_cuda and tuple(tensor.shape) == (1, 3, 5, 6)
    np.testing.assert_array_equal(tensor[0].permute(1, 2, 0).cpu().numpy(), image)


def test_torch_tensor_on_cuda_matches_the_cpu(resnet18_onnx: Path) -> None:
    rows = [preprocessed(path) for path in PHOTOS[:4]]
    cpu = tp.create_backend("TorchTensor", model_params(resnet18_onnx, device="cpu"))
    gpu = tp.create_backend(
        "SyncTensor[TorchTensor]", model_params(resnet18_onnx, precision="fp32")
    )
    expected, actual = [{"data": r} for r in rows], [{"data": r} for r in rows]
    cpu.forward(expected)
    gpu.forward(actual)
    for want, got in zip(expected, actual, strict=True):
        assert got["result"].device.type == "cpu" and got["result"].dtype == torch.float32
        assert relative_error(got["result"], want["result"]) < 1e-2  # TF32 convolutions


def test_torch_tensor_takes_gpu_rows_as_it_takes_host_rows(resnet18_onnx: Path) -> None:
    rows = [preprocessed(path) for path in PHOTOS[:4]]
    model = tp.create_backend(
        "SyncTensor[TorchTensor]", model_params(resnet18_onnx, precision="fp32")
    )
    from_host, from_gpu = [{"data": r} for r in rows], [{"data": r.cuda()} for r in rows]
    model.forward(from_host)  # pinned buffer, one upload
    model.forward(from_gpu)  # already on the GPU: stacked and copied once
    for host, gpu in zip(from_host, from_gpu, strict=True):
        torch.testing.assert_close(gpu["result"], host["result"], rtol=0, atol=0)


def test_fp16_top1_agrees_with_fp32_on_the_photographs(resnet18_onnx: Path) -> None:
    rows = [preprocessed(path) for path in PHOTOS]
    results = {}
    for precision in ("fp16", "fp32"):
        backend = tp.create_backend(
            "SyncTensor[TorchTensor]",
            model_params(resnet18_onnx, precision=precision, max=len(rows)),
        )
        batch = [{"data": row} for row in rows]
        backend.forward(batch)
        results[precision] = torch.cat([item["result"] for item in batch])
    errors = [relative_error(h, f) for h, f in zip(results["fp16"], results["fp32"], strict=True)]
    agree = (results["fp16"].argmax(1) == results["fp32"].argmax(1)).sum().item()
    print(
        f"fp16 vs fp32: top-1 agrees on {agree}/{len(rows)}, max relative error {max(errors):.2e}"
    )
    assert max(errors) < 2e-2
    assert agree >= len(rows) - 1  # random weights: allow one near-tie to flip


def test_cuda_graphs_per_batch_size_match_eager(resnet18_onnx: Path) -> None:
    graphed = tp.create_backend(
        "SyncTensor[TorchTensor]", model_params(resnet18_onnx, min=2, max=6)
    )
    eager = tp.create_backend(
        "SyncTensor[TorchTensor]", model_params(resnet18_onnx, min=2, max=6, cuda_graph=False)
    )
    engine = graphed.children[0]
    assert engine.uses_cuda_graphs and sorted(engine._graphs) == [2, 3, 4, 5, 6]
    assert not eager.children[0]._graphs
    assert engine.module is eager.children[0].module  # weights shared across instances
    rows = [preprocessed(path) for path in PHOTOS[:6]]
    for count in range(1, 7):  # 1 is padded up to min=2
        before = engine.graph_replays
        with_graph, without = (
            [{"data": r} for r in rows[:count]],
            [{"data": r} for r in rows[:count]],
        )
        graphed.forward(with_graph)
        eager.forward(without)
        assert engine.graph_replays == before + 1
        for a, b in zip(with_graph, without, strict=True):
            assert relative_error(a["result"], b["result"]) < 1e-2, count


def test_fused_convolutions_match_the_unfused_model(resnet18_onnx: Path) -> None:
    fused = tp.create_backend("SyncTensor[TorchTensor]", model_params(resnet18_onnx, max=6))
    plain = tp.create_backend(
        "SyncTensor[TorchTensor]", model_params(resnet18_onnx, max=6, fuse_conv=False)
    )

    def fused_convolutions(backend: Any) -> int:
        return sum(type(m).__name__ == "ConvReLU" for m in backend.children[0].module.modules())

    assert fused_convolutions(fused) == 17 and fused_convolutions(plain) == 0
    rows = [preprocessed(path) for path in PHOTOS[:6]]
    with_fusion, without = [{"data": r} for r in rows], [{"data": r} for r in rows]
    fused.forward(with_fusion)
    plain.forward(without)
    for a, b in zip(with_fusion, without, strict=True):
        assert relative_error(a["result"], b["result"]) < 1e-2
        assert a["result"].argmax() == b["result"].argmax()


@pytest.mark.parametrize("residual", ["none", "same shape", "broadcast"])
def test_conv_relu_on_cuda_matches_plain_ops(residual: str) -> None:
    from torch import fx, nn

    from torchpipe_lite.backends.model.conv_fusion import fuse_conv_relu

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(16, 16, 3, padding=1)

        def forward(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return torch.relu(y if residual == "none" else y + shortcut)

    torch.manual_seed(0)
    block = Block().cuda().half().to(memory_format=torch.channels_last).eval()
    x = (
        torch.randn(3, 16, 20, 20, device="cuda")
        .half()
        .contiguous(memory_format=torch.channels_last)
    )
    shortcut = torch.randn(*(x.shape if residual == "same shape" else (1, 16, 1, 1)), device="cuda")
    shortcut = shortcut.half()
    module = fx.symbolic_trace(block)
    assert fuse_conv_relu(module) == 1
    with torch.inference_mode():
        expected = block(x, shortcut)
        actual = module(x, shortcut)
    assert actual.shape == expected.shape and actual.dtype == torch.float16
    assert relative_error(actual, expected) < 1e-3


def test_sync_tensor_gives_each_instance_its_own_stream(resnet18_onnx: Path) -> None:
    first = tp.create_backend("SyncTensor[TorchTensor]", model_params(resnet18_onnx))
    second = tp.create_backend("SyncTensor[TorchTensor]", model_params(resnet18_onnx))
    default = torch.cuda.default_stream()
    assert first.stream != default and second.stream != first.stream
    assert first.children[0]._stream == first.stream  # initialised (graphs captured) there
    assert first.placement() == "cuda:0"
    assert (
        first.children[0]._input.static_input.data_ptr()
        != second.children[0]._input.static_input.data_ptr()
    )


def test_instances_run_concurrently_from_their_own_threads(resnet18_onnx: Path) -> None:
    rows = [preprocessed(path) for path in PHOTOS[:8]]
    reference = tp.create_backend("SyncTensor[TorchTensor]", model_params(resnet18_onnx))
    expected = [{"data": r} for r in rows]
    reference.forward(expected)
    failures: list[BaseException] = []

    def serve(backend: tp.Backend) -> None:
        try:
            for _ in range(20):
                batch = [{"data": r} for r in rows]
                backend.forward(batch)
                for got, want in zip(batch, expected, strict=True):
                    assert relative_error(got["result"], want["result"]) < 1e-2
        except BaseException as error:  # reported below, in the test's thread
            failures.append(error)

    backends = [
        tp.create_backend("SyncTensor[TorchTensor]", model_params(resnet18_onnx)) for _ in range(3)
    ]
    threads = [threading.Thread(target=serve, args=(backend,)) for backend in backends]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures


def test_gpu_decode_pipeline_agrees_with_the_cpu_pipeline(resnet18_onnx: Path) -> None:
    common = {
        "model": str(resnet18_onnx),
        "min": 1,
        "max": 8,
        "precision": "fp16",
        "mean": MEAN,
        "std": STD,
    }
    engine = {"backend": "SyncTensor[TorchTensor]", "instance_num": 2, **common}
    pre = {"resize_h": 224, "resize_w": 224, "color": "rgb"}
    gpu_config = {
        "batching_timeout": 2,
        "decode": {"backend": "DecodeTensor", "instance_num": 2, "next": "pre"},
        "pre": {"backend": "Sequential[ResizeTensor,CvtColorTensor]", "next": "model", **pre},
        "model": engine,
    }
    cpu_config = {
        "batching_timeout": 2,
        "decode": {"backend": "DecodeMat", "instance_num": 4, "next": "pre"},
        "pre": {"backend": "Sequential[ResizeMat,CvtColorMat,Mat2Tensor]", "next": "model", **pre},
        "model": engine,
    }
    outputs = {}
    for name, config in (("gpu", gpu_config), ("cpu", cpu_config)):
        with tp.pipe(config) as model:
            futures = [model.submit({"data": p.read_bytes()}) for p in PHOTOS for _ in range(3)]
            outputs[name] = torch.cat([f.result(timeout=120)["result"] for f in futures])
    agree = (outputs["gpu"].argmax(1) == outputs["cpu"].argmax(1)).float().mean().item()
    errors = [relative_error(g, c) for g, c in zip(outputs["gpu"], outputs["cpu"], strict=True)]
    print(f"GPU vs CPU preprocessing: top-1 agrees {agree:.3f}, max rel. error {max(errors):.2e}")
    assert max(errors) < 5e-2
    assert agree >= 0.9


def test_sync_tensor_around_the_gpu_image_chain_gives_the_same_pixels() -> None:
    # Inside SyncTensor the chain's own waits are deferred to one at the end: the pixels must
    # be exactly those of the chain run on its own (which waits after every step).
    chain = "Sequential[DecodeTensor,ResizeTensor,CvtColorTensor]"
    params = {"resize_h": 224, "resize_w": 224, "color": "rgb"}
    plain = tp.create_backend(chain, params)
    wrapped = tp.create_backend(f"SyncTensor[{chain}]", params)
    for _ in range(3):
        batches = [[{"data": p.read_bytes()} for p in PHOTOS] for _ in range(2)]
        plain.forward(batches[0])
        wrapped.forward(batches[1])
        for expected, actual in zip(batches[0], batches[1], strict=True):
            assert actual["result"].is_cuda
            assert torch.equal(actual["result"], expected["result"])


def test_blocking_wait_returns_after_the_stream_has_run() -> None:
    from torchpipe_lite.backends.cuda_wait import wait_for_stream

    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        torch.cuda._sleep(50_000_000)  # tens of milliseconds of GPU time
        done = torch.cuda.Event()
        done.record(stream)
    wait_for_stream(stream)
    assert done.query()
