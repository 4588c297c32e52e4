"""The HTTP load driver: ``client_qps``'s clients, processes and figures, speaking HTTP.

Each client is a thread with its own keep-alive connection (``http.client``), the clients are
spread over ``processes`` processes, and the figures (QPS, TP50/TP90/TP99, mean, errors by
kind) are computed by ``clients.load_result`` exactly as for the Thrift load: only the call
differs. Every response is parsed; one without a label (or with a probability outside (0, 1])
counts as an error. Two protocols:

- ``JsonTop1``: the JPEG as the POST body, ``{"label": int, "probability": float}`` back
  (the LitServe peer);
- ``TritonV2``: KServe's v2 inference protocol with Triton's binary tensor data extension,
  the JPEG as one BYTES element, outputs ``LABEL`` and ``PROB`` as JSON (the Triton peer).
"""

from __future__ import annotations

import functools
import http.client
import json
import math
import socket
import struct
from dataclasses import dataclass
from typing import Any

from clients.calls import BAD_RESPONSE
from clients.client_qps import run_load
from clients.load_result import LoadResult
from clients.load_worker import CLIENT_TIMEOUT, CONNECTION, WorkerSpec

#: Prefix of an error kind for an HTTP status other than 200 (``HTTP_500``).
HTTP_STATUS = "HTTP_"


def valid_top1(label: object, probability: object) -> bool:
    """True for a class index >= 0 and a finite probability in (0, 1]."""
    if not isinstance(label, int) or isinstance(label, bool) or label < 0:
        return False
    return (
        isinstance(probability, float) and math.isfinite(probability) and 0.0 < probability <= 1.0
    )


@dataclass(frozen=True)
class JsonTop1:
    """The JPEG as the body of ``POST path``; the top-1 as JSON back."""

    path: str = "/predict"

    def request(self, image: bytes) -> tuple[str, bytes, dict[str, str]]:
        """(path, body, headers) of one call."""
        return self.path, image, {"Content-Type": "application/octet-stream"}

    def check(self, body: bytes) -> str | None:
        """The error kind of a 200 response's body, or None when it holds a top-1."""
        try:
            answer = json.loads(body)
        except ValueError:
            return BAD_RESPONSE
        if not isinstance(answer, dict):
            return BAD_RESPONSE
        return None if valid_top1(answer.get("label"), answer.get("probability")) else BAD_RESPONSE


@dataclass(frozen=True)
class TritonV2:
    """One image per call to ``/v2/models/<model>/infer``: input ``IMAGE`` (BYTES, shape
    [1, 1], sent as binary data), outputs ``LABEL`` (INT64) and ``PROB`` (FP32) as JSON."""

    model: str = "classifier"

    def request(self, image: bytes) -> tuple[str, bytes, dict[str, str]]:
        """(path, body, headers) of one call: the JSON header, then the tensor's bytes."""
        tensor = struct.pack("<I", len(image)) + image  # a BYTES element: length, then bytes
        header = json.dumps(
            {
                "inputs": [
                    {
                        "name": "IMAGE",
                        "shape": [1, 1],
                        "datatype": "BYTES",
                        "parameters": {"binary_data_size": len(tensor)},
                    }
                ],
                "outputs": [
                    {"name": "LABEL", "parameters": {"binary_data": False}},
                    {"name": "PROB", "parameters": {"binary_data": False}},
                ],
            },
            separators=(",", ":"),
        ).encode()
        headers = {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(header)),
        }
        return f"/v2/models/{self.model}/infer", header + tensor, headers

    def check(self, body: bytes) -> str | None:
        """The error kind of a 200 response's body, or None when it holds a top-1."""
        try:
            outputs = {out["name"]: out["data"] for out in json.loads(body)["outputs"]}
            (label,) = outputs["LABEL"]
            (probability,) = outputs["PROB"]
            probability = float(probability)
        except (ValueError, KeyError, TypeError):
            return BAD_RESPONSE
        return None if valid_top1(label, probability) else BAD_RESPONSE


#: A protocol: ``request(image) -> (path, body, headers)`` and ``check(body) -> error | None``.
HttpProtocol = JsonTop1 | TritonV2


class HttpClient:
    """One load client: a keep-alive HTTP/1.1 connection, one call at a time; reconnects after
    a failure (``ClientFactory`` of ``clients.load_worker``)."""

    def __init__(
        self, spec: WorkerSpec, client_id: int, images: list[bytes], *, protocol: HttpProtocol
    ):
        self.spec = spec
        self.client_id = client_id
        self.images = images
        self.protocol = protocol
        self.connection: http.client.HTTPConnection | None = self._connect()
        # Clients start at different images, as client_qps's do.
        self.next_image = client_id * 7

    def _connect(self) -> http.client.HTTPConnection:
        connection = http.client.HTTPConnection(
            self.spec.host, self.spec.port, timeout=self.spec.timeout_s
        )
        connection.connect()  # fails here, at start, when nothing listens
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection

    def one_call(self) -> list[str]:
        """Makes one call; returns ``[kind]`` when it failed, ``[]`` when it succeeded."""
        image = self.images[self.next_image % len(self.images)]
        self.next_image += 1
        path, body, headers = self.protocol.request(image)
        try:
            if self.connection is None:
                self.connection = self._connect()
            self.connection.request("POST", path, body=body, headers=headers)
            response = self.connection.getresponse()
            answer = response.read()
        except TimeoutError:
            self.close()
            return [CLIENT_TIMEOUT]
        except (http.client.HTTPException, OSError):
            self.close()  # the connection's state is unknown: a fresh one next call
            return [CONNECTION]
        if response.will_close:
            self.close()
        if response.status != 200:
            return [f"{HTTP_STATUS}{response.status}"]
        failed = self.protocol.check(answer)
        return [] if failed is None else [failed]

    def close(self) -> None:
        """Closes the connection (the next call opens a new one)."""
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def run_http_load(
    protocol: HttpProtocol,
    *,
    port: int,
    images: list[bytes],
    request_client: int,
    total_number: int,
    warmup: int,
    processes: int = 1,
    host: str = "127.0.0.1",
    timeout_s: float = 30.0,
    progress: bool = False,
    **callbacks: Any,
) -> LoadResult:
    """``client_qps.run_load`` with HTTP clients of ``protocol``: the same phases, processes
    and figures (``on_timed_start``/``on_timed_end`` pass through)."""
    return run_load(
        host=host,
        port=port,
        images=images,
        request_client=request_client,
        total_number=total_number,
        warmup=warmup,
        processes=processes,
        method=f"http:{type(protocol).__name__}",
        timeout_s=timeout_s,
        progress=progress,
        make_client=functools.partial(HttpClient, protocol=protocol),
        **callbacks,
    )
