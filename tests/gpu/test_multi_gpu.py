"""Model-stage instances placed over several GPUs (``device_id``, or all visible by default)."""

from __future__ import annotations

import pytest
import torch

import torchpipe_lite as tp

GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(GPUS == 0, reason="needs a CUDA GPU"),
]


def model_node(model, **keys):
    return {
        "m": {
            "backend": "SyncTensor[TorchTensor]",
            "model": str(model),
            "max": 4,
            "instance_num": 4,
            **keys,
        }
    }


def run_some(model_pipe):
    requests = [
        {"data": torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8)} for _ in range(16)
    ]
    futures = [model_pipe.submit(request) for request in requests]
    for future in futures:
        assert future.result(timeout=60)["result"].shape == (1, 1000)


def test_instances_spread_over_every_visible_gpu_by_default(resnet18_small_onnx):
    with tp.pipe(model_node(resnet18_small_onnx)) as model:
        run_some(model)
        placements = model.stats()["m"].instance_placements
    assert placements == [f"cuda:{index % GPUS}" for index in range(4)]


def test_device_id_pins_instances_to_the_listed_gpus(resnet18_small_onnx):
    last = GPUS - 1
    with tp.pipe(model_node(resnet18_small_onnx, device_id=str(last))) as model:
        run_some(model)
        assert model.stats()["m"].instance_placements == [f"cuda:{last}"] * 4


@pytest.mark.skipif(GPUS < 2, reason="needs two GPUs")
def test_two_gpus_give_the_same_logits(resnet18_small_onnx):
    image = torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8)
    with tp.pipe(model_node(resnet18_small_onnx, device_id="0,1", instance_num=2)) as model:
        outputs = []
        for _ in range(8):
            request = {"data": image.clone()}
            model(request)
            outputs.append(request["result"])
        stats = model.stats()["m"]
    assert stats.instance_placements == ["cuda:0", "cuda:1"]
    reference = outputs[0]
    for output in outputs[1:]:  # the same weights on both GPUs give the same logits
        torch.testing.assert_close(output, reference, rtol=2e-2, atol=2e-2)
