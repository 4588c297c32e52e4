"""TorchPipe's own tutorial configuration loads as written (its spellings: ``cvtColorMat``, a
childless ``SyncTensor`` ending a ``Sequential``, a top-level ``precision``) and classifies
as the service's own configuration does."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

import torchpipe_lite as tp
from tests.image_samples import IMAGES_DIR

TUTORIAL = Path(__file__).resolve().parents[1] / "data" / "torchpipe" / "resnet50.toml"


def test_tutorial_config_loads_and_classifies(resnet18_onnx: Path, caplog) -> None:
    text = TUTORIAL.read_text().replace("MODEL_PATH", str(resnet18_onnx))
    with caplog.at_level(logging.WARNING):
        config = tp.load_config(text)
    warnings = [record.getMessage() for record in caplog.records]
    # Only the TensorRT-only key is reported, on the node that sets it; the top-level
    # precision meant for the model raises nothing on the decoders.
    assert len(warnings) == 1 and "[resnet50].model::cache: unknown key" in warnings[0]
    assert [node.name for node in config.nodes] == ["cpu_decoder", "cpu_posdecoder", "resnet50"]
    photos = [path.read_bytes() for path in sorted(IMAGES_DIR.glob("*.jpg"))[:4]]
    ours = Path(__file__).resolve().parents[2] / "service" / "configs" / "resnet50.toml"
    ours_text = ours.read_text().replace("models/resnet50.onnx", str(resnet18_onnx))
    ours_text = ours_text.replace("Sequential[TorchTensor,ClassScores]", "TorchTensor")
    outputs = []
    for pipeline_text in (text, ours_text):
        with tp.pipe(pipeline_text) as model:
            requests = [{"data": photo} for photo in photos]
            model(requests)
            outputs.append(torch.cat([request["result"] for request in requests]))
    assert outputs[0].shape == (4, 1000)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-4, atol=1e-4)
