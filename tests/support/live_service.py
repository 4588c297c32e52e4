"""Live servers for the tests: a handler served from a thread on a free loopback port."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from service.app import build_handler
from service.handlers.admission import Admission, AdmissionLimits, RequestLimits
from service.handlers.handler import ClassifierHandler
from service.rpc.server import ThriftServer, TransportLimits
from service.service_config import DEFAULT_CONFIG
from service.thrift_client import Connection, connect

#: Upper bound for anything that should happen soon; never reached when the tests pass.
WAIT_S = 60.0


def quick_benchmark_argv(tmp_path: Path) -> list[str]:
    """Flags shared by the benchmark end-to-end tests: a quick run, ResNet18 exported into
    ``tmp_path``, results in ``tmp_path/results``, no progress bars."""
    model, results = str(tmp_path / "resnet18.onnx"), str(tmp_path / "results")
    quick = ["--quick", "--no-progress", "--arch", "resnet18"]
    return [*quick, "--model", model, "--results-dir", results]


@dataclass
class LiveService:
    """A server running in this process on a free loopback port."""

    handler: ClassifierHandler
    server: ThriftServer
    port: int

    def connect(self, timeout_s: float = WAIT_S) -> Connection:
        """A new client connection (close it, or use it as a context manager)."""
        return connect("127.0.0.1", self.port, timeout_s=timeout_s)


@contextlib.contextmanager
def serve_in_thread(
    handler: ClassifierHandler, *, limits: TransportLimits | None = None
) -> Iterator[LiveService]:
    """Serve ``handler`` from a background thread; stops the server (not the handler) on exit."""
    server = ThriftServer(handler, host="127.0.0.1", port=0, limits=limits)
    handler.observe_connections(server.connection_stats)
    port = server.listen()
    thread = threading.Thread(target=server.serve, name="test-thrift-server", daemon=True)
    thread.start()
    try:
        yield LiveService(handler, server, port)
    finally:
        server.stop()
        thread.join(WAIT_S)
        assert not thread.is_alive(), "the server did not stop"


@contextlib.contextmanager
def live_service(
    handler_name: str,
    model: Path,
    *,
    config: Path = DEFAULT_CONFIG,
    request_limits: RequestLimits | None = None,
    transport_limits: TransportLimits | None = None,
    admission_limits: AdmissionLimits | None = None,
) -> Iterator[LiveService]:
    """Build the ``handler_name`` handler on ``model`` and serve it; closes both on exit."""
    admission = None if admission_limits is None else Admission(admission_limits)
    handler, _summary = build_handler(
        handler_name, config, model=model, limits=request_limits, admission=admission
    )
    try:
        with serve_in_thread(handler, limits=transport_limits) as service:
            yield service
    finally:
        handler.close()
