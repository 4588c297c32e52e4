"""The shared engine on CUDA: GPU and host pixels through the slots give the model's logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import torchpipe_lite as tp
from tests.gpu.test_gpu_backends import PHOTOS, model_params, preprocessed
from torchpipe_lite.engine import EngineServer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_engine_logits_equal_the_model_stage_run_in_process(resnet18_onnx: Path, tmp_path) -> None:
    params = model_params(resnet18_onnx, precision="fp32")
    rows = [preprocessed(path) for path in PHOTOS[:6]]
    local = tp.create_backend("SyncTensor[TorchTensor]", params)
    expected = [{"data": row} for row in rows]
    local.forward(expected)

    table = {"backend": "SyncTensor[TorchTensor]", "instance_num": 2, **params}
    node = tp.load_config({"model": table}).node("model")
    server = EngineServer(node, tmp_path / "engine.sock", input_hwc=(224, 224, 3)).start()
    try:
        client = tp.create_backend("EngineTensor", {"engine": str(server.path), "max": 8})
        from_host = [{"data": row} for row in rows]
        from_gpu = [{"data": row.cuda()} for row in rows]  # as the GPU decode stage hands them
        client.forward(from_host)
        client.forward(from_gpu)
        for want, host, gpu in zip(expected, from_host, from_gpu, strict=True):
            assert host["result"].shape == want["result"].shape == (1, 1000)
            torch.testing.assert_close(host["result"], want["result"], rtol=0, atol=0)
            torch.testing.assert_close(gpu["result"], want["result"], rtol=0, atol=0)
        assert server.figures().requests == 2 * len(rows)
        client.close()
    finally:
        server.close()
