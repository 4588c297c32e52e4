"""The shared engine process of ``--workers N --shared-engine``: the model stage, once, for
every worker.

With ``--workers N`` alone each worker runs its own model stage, and each batches only its
own share of the clients: at 40 clients over 8 workers the model batches stay near one
request, and the GPU pays its per-batch cost for nearly every request. With
``--shared-engine`` the supervisor starts this process first. It runs the config's model node
(``torchpipe_lite.engine.EngineServer``); the workers keep the Thrift front end and the image
stages, and their model node becomes ``EngineTensor``: it writes each request's pixels into
shared memory and sends only slot numbers here, where batches form across all workers.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from service.device import engine_device
from service.model_file import ensure_model
from service.ops.ops_server import OpsServer, ServiceState
from service.ops.prometheus_export import render_engine
from service.service_config import load_service_config
from torchpipe_lite.engine import EngineFigures, EngineServer

logger = logging.getLogger("service.engine")

#: How often the engine logs its figures while it is busy.
_FIGURES_EVERY_S = 10.0
_POLL_S = 0.1


class EngineStartError(RuntimeError):
    """The shared engine process exited or timed out before it was ready."""


class EngineProcess:
    """The supervisor's handle on the shared engine: started first, stopped last."""

    def __init__(self, argv: Sequence[str], ready_timeout_s: float, metrics_port: int = 0):
        self.metrics_port = metrics_port
        self._directory = Path(tempfile.mkdtemp(prefix="torchpipe-engine-"))  # owner-only
        self.socket_path = str(self._directory / "engine.sock")
        command = [
            sys.executable,
            "-m",
            "service",
            *argv,
            "--workers",
            "1",
            "--serve-engine",
            self.socket_path,
            "--metrics-port",  # overrides the supervisor's own, which it serves itself
            str(metrics_port),
        ]
        self.process = subprocess.Popen(command)
        logger.info("shared engine process started (pid %d)", self.process.pid)
        # The engine creates its socket only once its model is loaded and probed.
        waited_s = 0.0
        while not os.path.exists(self.socket_path):
            if self.process.poll() is not None:
                self._remove_directory()
                raise EngineStartError(f"the shared engine exited with {self.process.returncode}")
            if waited_s >= ready_timeout_s:
                self.stop()
                raise EngineStartError(f"the shared engine was not ready in {ready_timeout_s} s")
            time.sleep(_POLL_S)
            waited_s += _POLL_S

    def stop(self) -> int:
        """SIGTERM the engine (its clients must be gone by now) and wait; its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait()
        self._remove_directory()
        return code

    def _remove_directory(self) -> None:
        shutil.rmtree(self._directory, ignore_errors=True)


def run_engine(args: argparse.Namespace) -> int:
    """Serve the model node on ``args.serve_engine`` until SIGTERM; returns the exit code."""
    config = load_service_config(args.config, args.model, args.device)
    if ensure_model(config.model_path, args.arch, user_given=config.model_user_given):
        logger.warning("model %s was just exported: RANDOM WEIGHTS", config.model_path)
    node = config.engine_node()
    logger.info(
        "shared engine: node [%s] %s on %s", node.name, node.backend, engine_device(node.params)
    )
    server = EngineServer(node, args.serve_engine, input_hwc=config.input_hwc()).start()
    ops = None
    if args.metrics_port:  # read by the supervisor, which appends it to the workers' sum
        state = ServiceState()
        # Only the engine's families: the supervisor's /metrics has one set of process figures.
        ops = OpsServer(
            state,
            lambda: render_engine(node.name, server.figures()),
            host=args.host,
            port=args.metrics_port,
        )
        ops.start()
        state.mark_ready()
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        logger.info("%s: closing the shared engine", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    # Ctrl-C reaches the whole process group; the supervisor sends SIGTERM here once the
    # workers have drained, so the engine outlives every request they still have in flight.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    supervisor = os.getppid()
    logger.info("shared engine ready on %s", args.serve_engine)
    logged_requests = 0
    while not stopping.wait(_FIGURES_EVERY_S):
        if os.getppid() != supervisor:  # killed without a chance to stop us: do not linger
            logger.error("the supervisor is gone: closing the shared engine")
            break
        figures = server.figures()
        if figures.requests != logged_requests:
            logged_requests = figures.requests
            _log_figures(figures)
    server.close()
    if ops is not None:
        ops.close()
    _log_figures(server.figures())
    logger.info("shared engine closed")
    return 0


def _log_figures(figures: EngineFigures) -> None:
    logger.info(
        "shared engine: %d requests in %d batches (mean batch %.2f, %.2f ms per batch), "
        "%d failed; %d clients attached",
        figures.requests,
        figures.batches,
        figures.mean_batch,
        1000.0 * figures.compute_time_s / max(figures.batches, 1),
        figures.failed,
        figures.connections_open,
    )
