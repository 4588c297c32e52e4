"""The reference TorchPipe configuration (its ResNet50 tutorial's pipeline), with only the engine
name changed to SyncTensor[TorchTensor], runs through tp.pipe and gives what the same steps give by
hand; bad inputs end without result or with a typed error, leaving their batch-mates alone."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import torchpipe_lite as tp
from tests.image_samples import IMAGES_DIR, png_header_claiming

REFERENCE_TOML = """
batching_timeout = 5        # ms
instance_num = 2

[cpu_decoder]
backend = "DecodeMat"
instance_num = 8
next = "cpu_posdecoder"

[cpu_posdecoder]
backend = "Sequential[ResizeMat,CvtColorMat,Mat2Tensor]"
resize_h = 224
resize_w = 224
color = "rgb"
next = "resnet50"

[resnet50]
backend = "SyncTensor[TorchTensor]"   # or SyncTensor[TensorrtTensor] where TensorRT exists
model = "MODEL_PATH"
min = 1
max = 8
instance_num = 2
precision = "fp16"
mean = "123.675, 116.28, 103.53"
std = "58.395, 57.120, 57.375"
"""


@pytest.fixture(scope="module")
def reference_pipeline(resnet18_onnx: Path, tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("config") / "resnet.toml"
    path.write_text(REFERENCE_TOML.replace("MODEL_PATH", str(resnet18_onnx)))
    with tp.pipe(path) as model:
        yield model


def by_hand(data: bytes, module: torch.nn.Module) -> torch.Tensor:
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    rgb = cv2.cvtColor(
        cv2.resize(bgr, (224, 224), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB
    )
    x = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).float()
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.120, 57.375]).view(1, 3, 1, 1)
    with torch.inference_mode():
        return module((x - mean) / std)


def test_photographs_match_the_steps_by_hand(reference_pipeline, resnet18_onnx: Path) -> None:
    from torchpipe_lite.backends.model.onnx_import import convert_onnx

    module = convert_onnx(resnet18_onnx).module
    paths = sorted(IMAGES_DIR.glob("*.jpg"))
    requests = [{"data": path.read_bytes()} for path in paths]
    reference_pipeline(requests)
    for path, request in zip(paths, requests, strict=True):
        result = request["result"]
        assert result.shape == (1, 1000) and result.device.type == "cpu", path.name
        expected = by_hand(path.read_bytes(), module)
        error = float((result - expected).norm() / expected.norm())
        # fp32 on the CPU; on a GPU the stage runs fp16 (tests/gpu checks it there)
        assert error < (1e-4 if not torch.cuda.is_available() else 2e-2), (path.name, error)


def test_bad_inputs_do_not_touch_their_batch_mates(reference_pipeline) -> None:
    photo = (IMAGES_DIR / "chelsea.jpg").read_bytes()
    good = [{"data": photo} for _ in range(6)]
    not_image = {"data": b"definitely not an image"}
    absurd = {"data": png_header_claiming(60000, 60000)}
    futures = [reference_pipeline.submit(request) for request in [*good, not_image, absurd]]
    for future in futures[:6]:
        assert future.result(timeout=60)["result"].shape == (1, 1000)
    assert "result" not in futures[6].result(timeout=60)  # no result, no error
    with pytest.raises(tp.InvalidInputError, match="60000x60000") as caught:
        futures[7].result(timeout=60)
    assert caught.value.node == "cpu_decoder"
    first = good[0]["result"]
    for request in good[1:]:
        torch.testing.assert_close(request["result"], first)
