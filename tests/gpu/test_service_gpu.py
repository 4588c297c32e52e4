"""The service on a CUDA GPU: ``service.tools.gpu_check`` with a small model (``pytest -m gpu``)."""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_both_handlers_on_cuda_match_the_cpu(tmp_path):
    from service.tools.export_model import export_classifier
    from service.tools.gpu_check import main

    model = export_classifier("resnet18", tmp_path / "resnet18.onnx")
    assert main(["--model", str(model), "--out", str(tmp_path / "gpu_check")]) == 0
