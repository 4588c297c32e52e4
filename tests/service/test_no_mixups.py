"""No mix-ups: many clients, different images, thousands of batched requests; every answer is
the one its own image gets alone.

The model stage is kept cheap for CI (ResNet18 at 64x64 input, small images), so 2,000
requests take seconds on 2 cores while still forming real batches in every stage.
"""

from __future__ import annotations

import itertools
import random
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from service.gen.inference.ttypes import InferenceParams
from service.handlers.admission import Admission, AdmissionLimits
from service.handlers.main_torchpipe import PipelinedHandler
from service.service_config import load_service_config
from service.thrift_client import connect
from tests.image_samples import IMAGES_DIR
from tests.support.live_service import WAIT_S, serve_in_thread
from tests.support.pipeline_configs import cheap_config

pytestmark = pytest.mark.slow

CLIENTS = 20
CALLS_PER_CLIENT = 50  # half single calls, half infer_many of 3: 20 * (25 + 75) = 2,000 images
SCORE_TOLERANCE = 1e-6  # batch size changes float summation order (~1e-8 here), not the answer


def distinct_images(count: int) -> dict[str, bytes]:
    """``count`` small JPEGs cut from the sample photographs (different crops and flips)."""
    photos = [cv2.imread(str(path)) for path in sorted(IMAGES_DIR.glob("*.jpg"))]
    rng = random.Random(3)
    images = {}
    for index in range(count):
        photo = photos[index % len(photos)]
        height, width = photo.shape[:2]
        top, left = rng.randrange(height // 3), rng.randrange(width // 3)
        crop = photo[top : top + height // 2, left : left + width // 2]
        if index // len(photos) % 2:
            crop = np.ascontiguousarray(crop[:, ::-1])
        images[f"img{index:02d}"] = cv2.imencode(".jpg", cv2.resize(crop, (160, 120)))[1].tobytes()
    return images


def mismatch(name: str, uuid: str, answer, expected) -> str | None:
    """Why ``answer`` (for image ``name``, echoed ``uuid``) is not ``name``'s own, or None."""
    if uuid != name:
        return f"{name}: answered as {uuid}"
    if answer.label == expected.label and abs(answer.score - expected.score) <= SCORE_TOLERANCE:
        return None
    return f"{name}: {answer.label} {answer.score:.6f}, alone {expected.label} {expected.score:.6f}"


def run_client(worker: int, port: int, images: dict[str, bytes], alone: dict) -> tuple[int, list]:
    """One client's calls, alternating single images and infer_many of 3; (answers, wrong)."""
    names = list(images)
    rng = random.Random(worker)
    answered, wrong = 0, []
    with connect("127.0.0.1", port, timeout_s=WAIT_S) as conn:
        for step in range(CALLS_PER_CLIENT):
            if step % 2:
                picked = rng.sample(names, 3)
                params = [InferenceParams(uuid=n, data=images[n]) for n in picked]
                results = conn.client.infer_many(params, 1)
                got = [(n, r.uuid, r.predictions[0]) for n, r in zip(picked, results, strict=True)]
            else:
                name = names[(worker + step) % len(names)]
                result = conn.client.infer_batch(InferenceParams(uuid=name, data=images[name]))
                got = [(name, name, result)]
            for name, uuid, answer in got:
                answered += 1
                problem = mismatch(name, uuid, answer, alone[name])
                if problem:
                    wrong.append(problem)
    return answered, wrong


def test_concurrent_clients_get_their_own_answers(tmp_path, resnet18_small_onnx):
    images = distinct_images(CLIENTS)
    config = load_service_config(cheap_config(tmp_path, resnet18_small_onnx))
    # The fixed admission limit: this test is about answers, not about a cold server's caution.
    static = Admission(AdmissionLimits(wait_fraction=0.0))
    handler = PipelinedHandler(config, device="cpu", admission=static)
    try:
        with serve_in_thread(handler) as service:
            with service.connect() as connection:
                alone = {
                    name: connection.client.infer_batch(InferenceParams(uuid=name, data=data))
                    for name, data in images.items()
                }
            # Told apart: no image's answer is within the tolerance of another image's.
            for a, b in itertools.combinations(alone.values(), 2):
                assert a.label != b.label or abs(a.score - b.score) > 2 * SCORE_TOLERANCE

            def client(worker: int) -> tuple[int, list[str]]:
                return run_client(worker, service.port, images, alone)

            with ThreadPoolExecutor(CLIENTS) as pool:
                outcomes = list(pool.map(client, range(CLIENTS)))
            with service.connect() as connection:
                stats = connection.client.stats()
    finally:
        handler.close()
    wrong = [line for _answered, lines in outcomes for line in lines]
    assert not wrong, f"{len(wrong)} mixed-up answers, e.g.:\n" + "\n".join(wrong[:10])
    assert sum(answered for answered, _ in outcomes) == CLIENTS * CALLS_PER_CLIENT * 2
    model = next(node for node in stats.nodes if node.node == "resnet50")
    assert max(model.batch_sizes) > 1, "the test should exercise batches of several requests"
