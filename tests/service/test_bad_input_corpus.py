"""A corpus of hostile and unusual images through a live server: typed errors, fast, no harm.

The server is ``python -m service`` (pipelined, CPU, ResNet18) in a subprocess, so its memory
is measured alone; the baseline handler gets the same corpus in-process.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from service.gen.inference.ttypes import ErrorCode, InferenceError, InferenceParams
from service.handlers.admission import RequestLimits
from service.thrift_client import connect
from tests.support.image_corpus import LABEL, Case, hostile_cases, valid_cases
from tests.support.service_process import ServiceProcess

MAX_IMAGE_MB = 8
#: Generous on 2 busy cores; refusing a hostile input takes milliseconds when things are right.
HOSTILE_ANSWER_S = 1.0
#: What the corpus may leave behind in the server (allocator caches, thread stacks). A decoder
#: that believed a 60000x60000 header would need 10 GB; one 4000x3000 image is 36 MB.
RSS_GROWTH_LIMIT_BYTES = 150 << 20


@pytest.fixture(scope="module")
def server(resnet18_onnx):
    process = ServiceProcess(
        "--model", str(resnet18_onnx), "--threads", "8",
        "--max-image-mb", str(MAX_IMAGE_MB), "--max-message-mb", str(4 * MAX_IMAGE_MB),
    )  # fmt: skip
    try:
        process.wait_for("ready: warmed up")
        yield process
    finally:
        process.process.terminate()
        process.finish()
        process.kill()


@pytest.fixture(scope="module")
def corpus(photos) -> list[Case]:
    photo = photos["chelsea"]
    cases = hostile_cases(photo, max_image_bytes=MAX_IMAGE_MB << 20) + valid_cases(photo)
    assert len(cases) >= 25 and len({case.name for case in cases}) == len(cases)
    return cases


def outcome(client, case: Case) -> tuple[str, float]:
    """(error code name or LABEL, seconds the call took)."""
    started_s = time.perf_counter()
    try:
        result = client.infer_batch(InferenceParams(uuid=case.name, data=case.data))
    except InferenceError as error:
        assert error.uuid == case.name
        return ErrorCode._VALUES_TO_NAMES[error.code], time.perf_counter() - started_s
    assert result.label and 0.0 < result.score <= 1.0, result
    return LABEL, time.perf_counter() - started_s


def check_corpus(client, cases: list[Case]) -> None:
    wrong, slow = [], []
    for case in cases:
        got, took_s = outcome(client, case)
        if got != case.expect:
            wrong.append(f"{case.name}: expected {case.expect}, got {got}")
        if case.expect != LABEL and took_s > HOSTILE_ANSWER_S:
            slow.append(f"{case.name}: {took_s:.2f} s")
    assert not wrong, "\n".join(wrong)
    assert not slow, "hostile inputs answered slowly:\n" + "\n".join(slow)


@pytest.mark.slow
def test_every_input_gets_its_outcome_and_memory_stays_bounded(server, corpus):
    rss = psutil.Process(server.process.pid).memory_info().rss
    with connect("127.0.0.1", server.port) as connection:
        check_corpus(connection.client, corpus)  # the first round also fills allocator caches
        settled_rss = psutil.Process(server.process.pid).memory_info().rss
        for _ in range(2):
            check_corpus(connection.client, corpus)
        connection.client.ping()
    final_rss = psutil.Process(server.process.pid).memory_info().rss
    print(f"server RSS: {rss >> 20} MiB at start, {settled_rss >> 20} after one round, "
          f"{final_rss >> 20} after three")  # fmt: skip
    assert final_rss - rss < RSS_GROWTH_LIMIT_BYTES
    assert final_rss - settled_rss < RSS_GROWTH_LIMIT_BYTES // 3, "grows with every round"


@pytest.mark.slow
def test_batch_mates_of_bad_inputs_succeed(server, corpus, photos):
    good = {name: photos[name] for name in ("chelsea", "coffee", "astronaut", "coins")}
    hostile = [case for case in corpus if case.expect != LABEL]
    with connect("127.0.0.1", server.port) as connection:
        alone = {
            name: connection.client.infer_batch(InferenceParams(uuid=name, data=data))
            for name, data in good.items()
        }
        # One call mixing them: submitted together, so they share the pipeline's batches.
        mixed = [InferenceParams(uuid=c.name, data=c.data) for c in hostile]
        for position, (name, data) in enumerate(good.items()):
            mixed.insert(position * 5, InferenceParams(uuid=name, data=data))
        results = connection.client.infer_many(mixed, 1)
    assert [r.uuid for r in results] == [p.uuid for p in mixed]
    for result in results:
        if result.uuid in good:
            assert result.error is None, result
            assert result.predictions[0].label == alone[result.uuid].label
            assert result.predictions[0].score == pytest.approx(alone[result.uuid].score, abs=1e-4)
        else:
            assert result.error is not None and result.predictions is None, result

    def client(worker: int) -> list[str]:
        """Alternates good and hostile requests on one connection; returns what went wrong."""
        problems = []
        names = list(good)
        with connect("127.0.0.1", server.port) as conn:
            for step in range(2 * len(hostile)):
                if step % 2:
                    case = hostile[(worker + step) % len(hostile)]
                    got, _took_s = outcome(conn.client, case)
                    if got != case.expect:
                        problems.append(f"{case.name}: {got}")
                    continue
                name = names[(worker + step) % len(names)]
                result = conn.client.infer_batch(InferenceParams(uuid=name, data=good[name]))
                if result.label != alone[name].label:
                    problems.append(f"{name}: {result.label} != {alone[name].label}")
        return problems

    with ThreadPoolExecutor(6) as pool:
        problems = [p for found in pool.map(client, range(6)) for p in found]
    assert not problems, "\n".join(problems)


def test_baseline_handler_gives_the_same_outcomes(baseline_service, photos):
    limit = RequestLimits().max_image_bytes
    cases = hostile_cases(photos["chelsea"], max_image_bytes=limit) + valid_cases(photos["chelsea"])
    with baseline_service.connect() as connection:
        check_corpus(connection.client, cases)
