"""The peers' model path on real photographs: the same top-1 as our pipelined handler, through
``Classifier`` and through the LitServe app's decode/batch/predict/encode steps."""

from __future__ import annotations

import pytest

from benchmarks.peers.classifier import Classifier, NotAnImageError, settings_from_paths
from service.gen.inference import ttypes

#: Photographs of clients/images.py's DEFAULT_IMG_DIR (tests/data/images), by stem.
PHOTOS = ("chelsea", "coffee", "astronaut")


def _ours(pipelined_service, data: bytes) -> tuple[int, float]:
    with pipelined_service.connect() as connection:
        result = connection.client.infer_batch(ttypes.InferenceParams(uuid="peer", data=data))
    return int(result.label.split()[0]), result.score


@pytest.fixture(scope="module")
def classifier(resnet18_onnx):
    built = Classifier(settings_from_paths(None, resnet18_onnx, "cpu", max_batch_size=8))
    yield built
    built.close()


def test_classifier_matches_our_pipelined_handler(classifier, pipelined_service, photos):
    tensors = [classifier.preprocess(photos[name]) for name in PHOTOS]
    assert all(tuple(t.shape) == (1, 3, 224, 224) for t in tensors)
    for name, top1 in zip(PHOTOS, classifier.classify(tensors), strict=True):
        label, score = _ours(pipelined_service, photos[name])
        assert top1.label == label, name
        assert top1.probability == pytest.approx(score, rel=1e-3), name


def test_classifier_refuses_bytes_that_are_not_an_image(classifier):
    with pytest.raises(NotAnImageError):
        classifier.preprocess(b"certainly not a JPEG")


def test_classifier_cuts_long_lists_into_engine_batches(classifier, photos):
    tensor = classifier.preprocess(photos["chelsea"])
    results = classifier.classify([tensor] * 10)  # max_batch_size 8: two engine calls
    assert len(results) == 10 and len({r.label for r in results}) == 1


def test_litserve_app_answers_as_our_pipelined_handler(resnet18_onnx, pipelined_service, photos):
    pytest.importorskip("litserve")
    from fastapi import HTTPException

    from benchmarks.peers.litserve_app import ClassifierLitAPI

    settings = settings_from_paths(None, resnet18_onnx, None, max_batch_size=8)
    api = ClassifierLitAPI(settings, batch_timeout_ms=5)
    assert (api.max_batch_size, api.batch_timeout) == (8, 0.005)
    api.setup("cpu")  # what LitServe calls in its inference worker
    try:
        inputs = [api.decode_request(photos[name]) for name in PHOTOS]
        answers = [api.encode_response(o) for o in api.unbatch(api.predict(api.batch(inputs)))]
        for name, answer in zip(PHOTOS, answers, strict=True):
            label, score = _ours(pipelined_service, photos[name])
            assert answer["label"] == label, name
            assert answer["probability"] == pytest.approx(score, rel=1e-3), name
        with pytest.raises(HTTPException) as refused:
            api.decode_request(b"\x00" * 64)
        assert refused.value.status_code == 400
    finally:
        api.classifier.close()
