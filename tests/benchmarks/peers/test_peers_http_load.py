"""The HTTP load driver's figures against a tiny HTTP server started here: errors by kind,
checked responses, latencies, one keep-alive connection per client, both protocols."""

from __future__ import annotations

import contextlib
import http.server
import json
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from benchmarks.peers.http_load import JsonTop1, TritonV2, run_http_load, valid_top1
from clients.client_qps import LoadTestError
from service.server_process import free_port

#: What the tiny server does with each body: answer, fail, or answer without a label.
OK, FAIL, NO_LABEL, NOT_JSON = b"ok-image", b"fail-image", b"no-label-image", b"not-json-image"
#: Simulated work per good answer, so that latencies have a floor to check.
WORK_S = 0.02


@dataclass
class TinyServer:
    """Counts the connections it accepted and the bodies it saw."""

    port: int
    connections: int = 0
    bodies: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _answer(body: bytes) -> tuple[int, bytes]:
    if body == FAIL:
        return 500, b"internal error"
    if body == NO_LABEL:
        return 200, json.dumps({"probability": 0.5}).encode()
    if body == NOT_JSON:
        return 200, b"<html>"
    time.sleep(WORK_S)  # the model's work, as a delay
    return 200, json.dumps({"label": len(body), "probability": 0.25}).encode()


def _triton_image(body: bytes, header_length: int) -> bytes:
    """The one BYTES element of a v2 request with binary data, checked against its header."""
    header = json.loads(body[:header_length])
    (tensor,) = header["inputs"]
    assert (tensor["name"], tensor["datatype"], tensor["shape"]) == ("IMAGE", "BYTES", [1, 1])
    data = body[header_length:]
    assert len(data) == tensor["parameters"]["binary_data_size"]
    (length,) = struct.unpack_from("<I", data)
    assert len(data) == 4 + length
    return data[4:]


@contextlib.contextmanager
def tiny_server() -> Iterator[TinyServer]:
    """A threaded HTTP/1.1 server on a free loopback port, for the test's duration."""
    state = TinyServer(port=free_port())

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as LitServe's and Triton's servers

        def setup(self) -> None:
            super().setup()
            with state.lock:
                state.connections += 1

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            triton = self.path.startswith("/v2/models/")
            if triton:
                body = _triton_image(body, int(self.headers["Inference-Header-Content-Length"]))
            with state.lock:
                state.bodies.append(body)
            status, answer = _answer(body)
            if triton and status == 200 and b"label" in answer:
                top1 = json.loads(answer)
                answer = json.dumps(
                    {
                        "outputs": [
                            {"name": "LABEL", "datatype": "INT64", "data": [top1["label"]]},
                            {"name": "PROB", "datatype": "FP32", "data": [top1["probability"]]},
                        ]
                    }
                ).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", state.port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="tiny-http", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_errors_are_counted_by_kind_and_every_response_is_checked():
    images = [OK, OK, FAIL, NO_LABEL]  # each client cycles through all four
    with tiny_server() as server:
        result = run_http_load(
            JsonTop1(), port=server.port, images=images, request_client=2, total_number=40, warmup=4
        )
    assert result.requests == 40 and result.ok_requests == 20
    assert result.errors_by_code == {"HTTP_500": 10, "BAD_RESPONSE": 10}
    assert result.errors == 20
    assert len(server.bodies) == 44  # the warm-up calls too
    # Two clients, two keep-alive connections, for every call (an HTTP 500 keeps it open too).
    assert server.connections == 2


def test_latencies_are_those_of_the_successful_calls():
    with tiny_server() as server:
        result = run_http_load(
            JsonTop1(), port=server.port, images=[OK], request_client=3, total_number=30, warmup=3
        )
    assert result.errors == 0 and result.ok_requests == 30
    assert WORK_S * 1000 <= result.tp50_ms <= result.tp90_ms <= result.tp99_ms <= result.max_ms
    assert result.tp99_ms < 2000 and WORK_S * 1000 <= result.mean_ms < 2000
    # Three clients each waiting ~WORK_S per call: at most 3 / WORK_S calls a second.
    assert 0 < result.qps <= 3 / WORK_S * 1.05


def test_a_body_that_is_not_json_is_a_bad_response():
    with tiny_server() as server:
        result = run_http_load(
            JsonTop1(),
            port=server.port,
            images=[NOT_JSON],
            request_client=1,
            total_number=3,
            warmup=0,
        )
    assert result.errors_by_code == {"BAD_RESPONSE": 3}


def test_triton_protocol_sends_one_bytes_element_and_reads_label_and_prob():
    images = [OK, OK + b"-longer", NO_LABEL]
    with tiny_server() as server:
        result = run_http_load(
            TritonV2("classifier"),
            port=server.port,
            images=images,
            request_client=1,
            total_number=6,
            warmup=0,
        )
    assert sorted(set(server.bodies)) == sorted(images)  # each image arrived intact
    assert result.ok_requests == 4 and result.errors_by_code == {"BAD_RESPONSE": 2}


def test_nothing_listening_is_a_load_test_error():
    with pytest.raises(LoadTestError, match="cannot connect"):
        run_http_load(
            JsonTop1(), port=free_port(), images=[OK], request_client=1, total_number=1, warmup=0
        )


@pytest.mark.slow
def test_clients_spread_over_processes():
    with tiny_server() as server:
        result = run_http_load(
            JsonTop1(),
            port=server.port,
            images=[OK, FAIL],
            request_client=4,
            total_number=40,
            warmup=0,
            processes=2,
        )
    assert result.processes == 2 and result.requests == 40
    assert result.errors_by_code == {"HTTP_500": 20} and result.ok_requests == 20
    assert server.connections == 4


@pytest.mark.parametrize(
    ("label", "probability", "valid"),
    [
        (3, 0.5, True),
        (0, 1.0, True),
        (None, 0.5, False),
        (-1, 0.5, False),
        (True, 0.5, False),
        (3, 0.0, False),
        (3, 1.5, False),
        (3, float("nan"), False),
        ("3", 0.5, False),
    ],
)
def test_valid_top1(label, probability, valid):
    assert valid_top1(label, probability) is valid
