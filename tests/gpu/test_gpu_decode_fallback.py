"""The GPU-decode fallback graph on CUDA: nvJPEG where it can, the CPU decoder node for the rest.

Written for the lent GPU box (pytest -m gpu); it did not run in the session that wrote it (no
device time was left), which tests/service/test_service_configs.py covers on the CPU with
a stand-in for nvJPEG.
"""

from __future__ import annotations

import pytest
import torch

import torchpipe_lite as tp
from service.service_config import DEFAULT_CONFIG, load_service_config
from tests.image_samples import IMAGES_DIR, png_of

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_what_nvjpeg_refuses_takes_the_cpu_path_and_is_classified_alike(resnet18_onnx):
    fallback = DEFAULT_CONFIG.with_name("resnet50_gpu_decode_fallback.toml")
    pipeline = load_service_config(fallback, resnet18_onnx, "cuda").pipeline
    jpeg = (IMAGES_DIR / "chelsea.jpg").read_bytes()
    png = png_of(jpeg)
    with tp.pipe(pipeline) as model:
        from_jpeg, from_png = {"data": jpeg}, {"data": png}
        model([from_jpeg, from_png], strict=True)
        figures = model.stats()
    assert figures["gpu_decoder"].requests_no_result == 1  # the PNG, not decoded on the GPU
    assert figures["cpu_decoder"].inferences == 1
    # nvJPEG and libjpeg differ by a grey level here and there: the same top class.
    assert from_jpeg["result"].best_index == from_png["result"].best_index
