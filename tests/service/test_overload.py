"""Overload: 10x more clients than a deliberately slow server can serve.

The pipeline has a ``Sleep`` stage (one request per SLEEP_MS, one instance) before a small
ResNet18 at 64x64, so its capacity is known: about 1000 / SLEEP_MS requests per second. Excess
requests must get OVERLOADED (queue full) or TIMEOUT (waited too long) quickly, admitted ones
keep a bounded latency, and the server serves normally once the load drops.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest

from service.gen.inference.ttypes import InferenceParams
from service.handlers.admission import Admission, AdmissionLimits
from service.handlers.main_torchpipe import PipelinedHandler
from service.service_config import load_service_config
from service.thrift_client import connect
from tests.support.live_service import WAIT_S, serve_in_thread
from tests.support.overload_load import p, run_load_elsewhere, small_photo
from tests.support.pipeline_configs import SLEEP_MS, slow_config

pytestmark = pytest.mark.slow

QUEUE = 3  # max_queue_size of the slow stage
CAPACITY_CLIENTS = 1  # the slow stage serves one request at a time
CLIENTS = 10 * (QUEUE + CAPACITY_CLIENTS)
LOAD_S = 3.0


def quiet_latencies(port: int, image: bytes, count: int = 10) -> list[float]:
    """One client alone: every call must succeed; returns their latencies."""
    latencies = []
    with connect("127.0.0.1", port, timeout_s=WAIT_S) as connection:
        for _ in range(count):
            began_s = time.perf_counter()
            connection.client.infer_batch(InferenceParams(uuid="quiet", data=image))
            latencies.append(time.perf_counter() - began_s)
    return latencies


def serve_slow(tmp_path: Path, model: Path, admission: Admission | None = None, **slow_keys):
    config = load_service_config(slow_config(tmp_path, model, **slow_keys))
    handler = PipelinedHandler(config, device="cpu", admission=admission)
    return handler, serve_in_thread(handler)


def test_full_queue_refuses_fast_and_admitted_latency_holds(tmp_path, resnet18_small_onnx, photos):
    handler, serving = serve_slow(tmp_path, resnet18_small_onnx, max_queue_size=QUEUE)
    image = small_photo(photos["coffee"])
    try:
        with serving as service:
            before = quiet_latencies(service.port, image)
            load = run_load_elsewhere(service.port, image, CLIENTS, LOAD_S)
            after = quiet_latencies(service.port, image)
            with service.connect() as connection:
                stats = connection.client.stats()
    finally:
        handler.close()
    ok, refused = load.get("ok", []), load.get("OVERLOADED", [])
    print(
        f"quiet p50 {statistics.median(before) * 1e3:.0f} ms; under {CLIENTS} clients: "
        f"{len(ok)} ok (p50 {p(ok, 0.5) * 1e3:.0f}, p99 {p(ok, 0.99) * 1e3:.0f} ms), "
        f"{len(refused)} OVERLOADED (p50 {p(refused, 0.5) * 1e3:.1f}, "
        f"p99 {p(refused, 0.99) * 1e3:.1f} ms); after p50 {statistics.median(after) * 1e3:.0f} ms"
    )
    assert set(load) <= {"ok", "OVERLOADED"}, load.keys()
    # Throughput stays at capacity: the slow stage never idles while requests are refused.
    assert len(ok) >= 0.6 * LOAD_S * 1000 / SLEEP_MS
    assert len(refused) > 5 * len(ok), "10x the clients: most should be refused"
    # Refusals do not wait behind the queue: they cost only the stages before the full one
    # (decode, resize), which on 2 cores shared with the 40 clients' process is tens of ms.
    assert statistics.median(refused) < statistics.median(ok) / 2
    # Admitted requests wait behind at most QUEUE others, so their latency follows the queue
    # bound, not the load: unbounded, each would wait for all CLIENTS (4 s of sleeps alone).
    unbounded_s = CLIENTS * SLEEP_MS / 1000
    assert p(ok, 0.95) < 0.6 * unbounded_s, f"admitted p95 {p(ok, 0.95):.3f} s"
    # Recovery: alone again, as fast as before the load.
    assert statistics.median(after) < 2 * statistics.median(before) + SLEEP_MS / 1000
    slow = next(node for node in stats.nodes if node.node == "slow")
    assert slow.requests_rejected == len(refused) and slow.queue_length == 0


def test_request_timeout_fails_waiters_unrun(tmp_path, resnet18_small_onnx, photos):
    timeout_ms = 3 * SLEEP_MS
    # The ceiling alone admits (--admit-wait-fraction 0): what is under test is the deadline
    # that drops waiters unrun, which admission following the rate would mostly spare them.
    static = Admission(AdmissionLimits(wait_fraction=0.0))
    handler, serving = serve_slow(tmp_path, resnet18_small_onnx, static, request_timeout=timeout_ms)
    image = small_photo(photos["coffee"])
    try:
        with serving as service:
            load = run_load_elsewhere(service.port, image, CLIENTS, LOAD_S)
            after = quiet_latencies(service.port, image, count=3)
            with service.connect() as connection:
                stats = connection.client.stats()
    finally:
        handler.close()
    ok, timed_out = load.get("ok", []), load.get("TIMEOUT", [])
    assert set(load) <= {"ok", "TIMEOUT"}, load.keys()
    assert len(timed_out) > len(ok) > 0
    # A request that expires was never run: the slow stage ran only the ones answered ok
    # (plus the three quiet ones after the load).
    slow = next(node for node in stats.nodes if node.node == "slow")
    assert slow.inferences == len(ok) + len(after)
    assert slow.requests_timed_out == len(timed_out)
    assert len(after) == 3
