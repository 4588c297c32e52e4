"""Load for the overload tests: client threads calling back to back, from a process of their own."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import cv2
import numpy as np

from service.gen.inference.ttypes import ErrorCode, InferenceError, InferenceParams
from service.thrift_client import connect
from tests.support.live_service import WAIT_S


def run_load(port: int, image: bytes, clients: int, duration_s: float) -> dict[str, list[float]]:
    """``clients`` threads calling back to back for ``duration_s``: latencies by outcome."""
    outcomes: dict[str, list[float]] = defaultdict(list)
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def client(index: int) -> None:
        with connect("127.0.0.1", port, timeout_s=WAIT_S) as connection:
            start.wait(WAIT_S)
            deadline_s = time.monotonic() + duration_s
            while time.monotonic() < deadline_s:
                began_s = time.perf_counter()
                try:
                    connection.client.infer_batch(InferenceParams(uuid=str(index), data=image))
                    kind = "ok"
                except InferenceError as error:
                    kind = ErrorCode._VALUES_TO_NAMES[error.code]
                with lock:
                    outcomes[kind].append(time.perf_counter() - began_s)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return dict(outcomes)


def run_load_elsewhere(
    port: int, image: bytes, clients: int, duration_s: float
) -> dict[str, list[float]]:
    """``run_load`` in a process of its own: forty client threads doing Thrift work in Python
    here would hold the interpreter lock that the server under test needs, and its admitted
    latency would measure their contention instead of its queue bound."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(run_load, port, image, clients, duration_s).result(timeout=WAIT_S * 4)


def p(values: list[float], quantile: float) -> float:
    return sorted(values)[min(len(values) - 1, int(quantile * len(values)))]


def small_photo(jpeg: bytes) -> bytes:
    """The photograph at the model's 64x64, re-encoded: decoding a thousand refused requests
    at full size would take both cores from the model stage, which must never be the
    bottleneck here (the Sleep stage is, by design)."""
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    ok, encoded = cv2.imencode(".jpg", cv2.resize(image, (64, 64)))
    assert ok
    return encoded.tobytes()
