"""Both handlers classify the sample photographs: correctly, identically, with every RPC."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

from service.gen.inference.ttypes import ErrorCode, InferenceError, InferenceParams
from service.handlers.labels import imagenet_categories

# The engine's normalisation (ImageNet mean and std, 0..255 units), as the configs set it.
MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD = np.array([58.395, 57.120, 57.375], dtype=np.float32)
SCORE_TOLERANCE = 1e-4


def params(uuid: str, data: bytes) -> InferenceParams:
    return InferenceParams(uuid=uuid, data=data)


def top5(service, photos) -> dict[str, list[tuple[int, float]]]:
    with service.connect() as connection:
        return {
            name: [(p.index, p.score) for p in connection.client.infer_topk(params(name, data), 5)]
            for name, data in photos.items()
        }


@pytest.fixture(scope="module")
def reference_top5(resnet18_onnx, photos) -> dict[str, list[tuple[int, float]]]:
    """The same model run by onnxruntime on independently preprocessed pixels."""
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(resnet18_onnx), providers=["CPUExecutionProvider"])
    reference = {}
    for name, data in photos.items():
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        rgb = cv2.cvtColor(
            cv2.resize(bgr, (224, 224), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB
        )
        batch = ((rgb.astype(np.float32) - MEAN) / STD).transpose(2, 0, 1)[None]
        logits = session.run(None, {session.get_inputs()[0].name: batch})[0][0].astype(np.float64)
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        best = np.argsort(-probabilities)[:5]
        reference[name] = [(int(i), float(probabilities[i])) for i in best]
    return reference


def assert_same_predictions(got, expected):
    assert got.keys() == expected.keys()
    for name in expected:
        assert [i for i, _ in got[name]] == [i for i, _ in expected[name]], name
        for (_, score), (_, expected_score) in zip(got[name], expected[name], strict=True):
            assert score == pytest.approx(expected_score, abs=SCORE_TOLERANCE), name


def test_ping(service):
    with service.connect() as connection:
        connection.client.ping()


def test_predictions_match_onnxruntime(service, photos, reference_top5):
    got = top5(service, photos)
    assert_same_predictions(got, reference_top5)
    # The model does look at the pixels: the photographs do not all score alike.
    assert len({tuple(round(s, 6) for _, s in preds) for preds in got.values()}) > 1


def test_handlers_agree(baseline_service, pipelined_service, photos):
    baseline = top5(baseline_service, photos)
    assert_same_predictions(top5(pipelined_service, photos), baseline)
    for name, data in photos.items():
        for service in (baseline_service, pipelined_service):
            with service.connect() as connection:
                result = connection.client.infer_batch(params(name, data))
            index, score = baseline[name][0]
            assert result.label == f"{index} {imagenet_categories()[index]}"
            assert result.score == pytest.approx(score, abs=SCORE_TOLERANCE)


def test_topk_is_ranked_and_labelled(service, photos):
    with service.connect() as connection:
        predictions = connection.client.infer_topk(params("k", photos["chelsea"]), 1000)
    assert len(predictions) == 1000
    assert sorted(p.index for p in predictions) == list(range(1000))
    scores = [p.score for p in predictions]
    assert scores == sorted(scores, reverse=True)
    assert sum(scores) == pytest.approx(1.0, abs=1e-4)
    for p in predictions[:10]:
        assert re.fullmatch(rf"{p.index} \S.*", p.label)


@pytest.mark.parametrize("k", [0, -1, 1001, None])
def test_topk_out_of_range(service, photos, k):
    with service.connect() as connection:
        with pytest.raises(InferenceError) as caught:
            connection.client.infer_topk(params("bad-k", photos["chelsea"]), k)
        assert caught.value.code == ErrorCode.INVALID_ARGUMENT
        assert caught.value.uuid == "bad-k"
        connection.client.ping()  # the connection is still good


def test_infer_many_gives_each_image_its_own_outcome(service, photos):
    names = ["chelsea", "coffee", "rocket"]
    items = [
        params("a", photos["chelsea"]),
        params("b", b"not an image"),
        params("c", photos["coffee"]),
        params("d", b""),
        params("e", photos["rocket"]),
    ]
    with service.connect() as connection:
        results = connection.client.infer_many(items, 3)
        singles = [connection.client.infer_topk(params(n, photos[n]), 3) for n in names]
        assert connection.client.infer_many([], 3) == []
    assert [r.uuid for r in results] == ["a", "b", "c", "d", "e"]
    for result in (results[1], results[3]):
        assert result.predictions is None
        assert result.error.code == ErrorCode.INVALID_IMAGE
        assert result.error.uuid == result.uuid
    for result, single in zip([results[0], results[2], results[4]], singles, strict=True):
        assert result.error is None
        assert [p.index for p in result.predictions] == [p.index for p in single]
        for got, expected in zip(result.predictions, single, strict=True):
            assert got.score == pytest.approx(expected.score, abs=SCORE_TOLERANCE)


def test_stats_count_requests(service, photos):
    with service.connect() as connection:
        before = connection.client.stats()
        connection.client.infer_batch(params("ok", photos["coins"]))
        with pytest.raises(InferenceError):
            connection.client.infer_batch(params("bad", b"\x00" * 100))
        after = connection.client.stats()
    assert after.handler == service.handler.handler_name
    assert after.device == "cpu"
    assert after.uptime_s > before.uptime_s
    assert after.requests_ok - before.requests_ok == 1
    assert after.requests_failed - before.requests_failed == 1
    invalid = ErrorCode.INVALID_IMAGE
    assert after.failures_by_code[invalid] - before.failures_by_code.get(invalid, 0) == 1
    model_node = after.nodes[-1]
    before_node = before.nodes[-1]
    assert model_node.inferences - before_node.inferences == 1
    assert model_node.compute_time_ms_total > before_node.compute_time_ms_total
    assert sum(model_node.batch_sizes.values()) == model_node.executions
    if service.handler.handler_name == "pipelined":
        assert [n.node for n in after.nodes] == ["cpu_decoder", "cpu_posdecoder", "resnet18"]
        # The bad request was stopped by the decoder: it never reached the later stages.
        assert after.nodes[0].inferences - before.nodes[0].inferences == 2


def test_the_pipelined_handler_reads_each_image_header_on_one_thread_only(
    pipelined_service, photos, monkeypatch
):
    """Admission reads the header on the loop thread to weigh the call; the decoder takes
    that header with the bytes instead of reading it again on its own thread."""
    import threading

    from service.handlers import admission
    from torchpipe_lite.backends.image import image_cpu, image_header

    readers: list[str] = []
    read_header = image_header.read_header

    def counted(data):
        readers.append(threading.current_thread().name)
        return read_header(data)

    for module in (image_header, image_cpu, admission):
        monkeypatch.setattr(module, "read_header", counted)
    with pipelined_service.connect() as connection:
        for uuid, data in enumerate(list(photos.values())[:3]):
            result = connection.client.infer_batch(params(str(uuid), data))
            assert result.label
        many = connection.client.infer_many([params("m", photos[name]) for name in photos], 1)
        assert all(item.error is None for item in many)
    assert len(readers) == 3 + len(photos)  # once per image
    assert len(set(readers)) == 1, readers  # the RPC loop thread
