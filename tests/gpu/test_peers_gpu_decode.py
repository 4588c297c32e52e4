"""The peers' model code with the GPU-decode config on CUDA: the same answers as our pipeline
of that config, one nvJPEG call per batch, and an image that will not decode fails alone."""

from __future__ import annotations

import struct

import pytest
import torch

import torchpipe_lite as tp
from benchmarks.peers.classifier import Classifier, NotAnImageError, settings_from_paths
from service.service_config import SHIPPED_CONFIGS, load_service_config
from tests.image_samples import IMAGES_DIR
from torchpipe_lite.errors import RequestError

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

GPU_DECODE = SHIPPED_CONFIGS / "resnet50_gpu_decode.toml"
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


@pytest.fixture(scope="module")
def classifier(resnet18_onnx):
    built = Classifier(settings_from_paths(GPU_DECODE, resnet18_onnx, "cuda:0", max_batch_size=8))
    yield built
    built.close()


def _photos() -> list[bytes]:
    return [(IMAGES_DIR / f"{name}.jpg").read_bytes() for name in PHOTOS]


def test_the_peers_answer_as_our_gpu_decode_pipeline(classifier, resnet18_onnx):
    assert classifier.describe()["images"].startswith("per batch on cuda:0: SyncTensor[")
    photos = _photos()
    prepared = [classifier.preprocess(data) for data in photos]
    assert prepared == photos  # the GPU stage decodes per batch: only headers are checked
    pipeline = load_service_config(GPU_DECODE, resnet18_onnx, "cuda:0").pipeline
    with tp.pipe(pipeline) as ours:
        items = [{"data": data} for data in photos]
        ours(items, strict=True)
    for name, top1, item in zip(PHOTOS, classifier.classify(prepared), items, strict=True):
        assert top1.label == item["result"].best_index, name
        assert top1.probability == pytest.approx(item["result"].best_score, rel=1e-3), name


def test_an_image_whose_scan_is_corrupt_fails_alone(classifier):
    photos = _photos()
    sos = photos[0].index(b"\xff\xda")
    start = sos + 2 + struct.unpack(">H", photos[0][sos + 2 : sos + 4])[0] + 100
    corrupt = photos[0][:start] + b"\xff\x42" + photos[0][start + 2 :]  # a reserved marker
    outcomes = classifier.classify([photos[1], classifier.preprocess(corrupt), photos[2]])
    assert isinstance(outcomes[1], RequestError)
    assert [o.label for o in (outcomes[0], outcomes[2])] == [
        o.label for o in classifier.classify([photos[1], photos[2]])
    ]
    with pytest.raises(NotAnImageError):
        classifier.preprocess(b"not a JPEG at all")
