"""The GPU core process of the pipelined service: the model and the GPU stages, once per GPU.

The supervisor starts one per GPU (``core_plan``), each with its own socket, ops port and
restarts; the fronts spread their requests over them (``tp.RemotePool``).

The supervisor starts it before the fronts. It builds the config's core part (the model node
and the GPU stages before it, ``service.core_split``) and serves it with ``tp.serve`` on a
Unix socket: the fronts' requests reach it in batches through shared memory, and its Python
per request is a few microseconds, so its interpreter is left to the stages. Its own ops port
answers ``/stats`` with its stages' figures, which the supervisor adds to the fronts' sum
once. When it dies, the fronts' requests at it fail with ``PipelineUnavailableError`` and the
supervisor starts it again; the fronts reconnect on their next request.
"""

from __future__ import annotations

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

import torchpipe_lite as tp
from service.command_line import ServerSettings
from service.device import engine_device
from service.gen.inference.ttypes import ServerStats
from service.handlers.handler import wire_node_stats
from service.model_file import ensure_model
from service.ops.ops_server import OpsServer, ServiceState
from service.ops.prometheus_export import MetricsRenderer
from service.processes.core_plan import CoreSpec
from service.service_config import load_service_config

logger = logging.getLogger("service.core")

#: How often the core logs its figures while it is busy.
_FIGURES_EVERY_S = 5.0
_POLL_S = 0.1
#: ``ServerStats.handler`` of the core's own figures (the fronts' is the handler's name);
#: a core pinned to a GPU adds its name: ``core-cuda:1``.
CORE_STATS_HANDLER = "core"


class CoreStartError(RuntimeError):
    """The core process exited or timed out before it was ready."""


class CoreProcess:
    """The supervisor's handle on the core: started first, stopped last, restarted if it dies."""

    def __init__(
        self,
        argv: Sequence[str],
        ready_timeout_s: float,
        spec: CoreSpec,
        metrics_port: int = 0,
    ):
        self.metrics_port = metrics_port
        self.spec = spec
        self._argv = list(argv)
        self._ready_timeout_s = ready_timeout_s
        self._directory = Path(tempfile.mkdtemp(prefix="torchpipe-core-"))  # owner-only
        self.socket_path = str(self._directory / "core.sock")
        self.restarts = 0
        self.process = self._start()

    def _start(self) -> subprocess.Popen:
        command = [
            sys.executable,
            "-m",
            "service",
            *self._argv,
            "--workers",
            "1",
            "--serve-core",
            self.socket_path,
            "--metrics-port",  # overrides the supervisor's own, which it serves itself
            str(self.metrics_port),
            *self.spec.arguments(),
        ]
        process = subprocess.Popen(command, env=self.spec.environment(os.environ))
        logger.info("GPU core %s started (pid %d)", self.spec.name, process.pid)
        # The core creates its socket only once its stages are built.
        waited_s = 0.0
        while not os.path.exists(self.socket_path):
            if process.poll() is not None:
                raise CoreStartError(
                    f"the GPU core {self.spec.name} exited with {process.returncode}"
                )
            if waited_s >= self._ready_timeout_s:
                process.kill()
                raise CoreStartError(
                    f"the GPU core {self.spec.name} was not ready in {self._ready_timeout_s} s"
                )
            time.sleep(_POLL_S)
            waited_s += _POLL_S
        return process

    def restart(self) -> None:
        """Start a new core after this one died (the fronts reconnect on their own)."""
        self.restarts += 1
        logger.error(
            "the GPU core %s exited with %s: restarting it (restart %d); its requests failed, "
            "the other cores take its share meanwhile",
            self.spec.name,
            self.process.returncode,
            self.restarts,
        )
        self.process = self._start()

    def stop(self) -> int:
        """SIGTERM the core (its fronts must be gone by now) and wait; its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait()
        shutil.rmtree(self._directory, ignore_errors=True)
        return code


def run_core(args: ServerSettings) -> int:
    """Serve the config's core part on ``args.serve_core`` until SIGTERM; the exit code."""
    config = load_service_config(args.config, args.model, args.device)
    if ensure_model(config.model_path, args.arch, user_given=config.model_user_given):
        logger.warning("model %s was just exported: RANDOM WEIGHTS", config.model_path)
    device = engine_device(config.model.params)
    pipeline = tp.pipe(config.core_pipeline())
    started_s = time.monotonic()
    handler = f"{CORE_STATS_HANDLER}-{args.core_name}" if args.core_name else CORE_STATS_HANDLER

    def stats() -> ServerStats:
        return ServerStats(
            handler=handler,
            device=device,
            uptime_s=time.monotonic() - started_s,
            requests_ok=0,  # the fronts count calls; the core counts its stages' requests
            requests_failed=0,
            failures_by_code={},
            nodes=[wire_node_stats(figures) for figures in pipeline.stats().values()],
        )

    ops = None
    if args.metrics_port:  # read by the supervisor, which adds it to the fronts' sum
        state = ServiceState()
        ops = OpsServer(
            state,
            MetricsRenderer(stats).render,
            stats=stats,
            host=args.host,
            port=args.metrics_port,
        )
        ops.start()
        state.mark_ready()
    server = tp.serve(pipeline, args.serve_core)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        logger.info("%s: closing the GPU core", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    # Ctrl-C reaches the whole process group; the supervisor sends SIGTERM here once the
    # fronts have drained, so the core outlives every request they still have in flight.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    supervisor = os.getppid()
    logger.info(
        "GPU core %s on %s: %s", args.core_name or "", device, " -> ".join(pipeline.node_names)
    )
    figures_log = _FiguresLog(pipeline, server)
    logged = -1
    while not stopping.wait(_FIGURES_EVERY_S):
        if os.getppid() != supervisor:  # killed without a chance to stop us: do not linger
            logger.error("the supervisor is gone: closing the GPU core")
            break
        requests = sum(figures.inferences for figures in pipeline.stats().values())
        if requests != logged:
            logged = requests
            figures_log.log()
    server.close()
    pipeline.close()
    if ops is not None:
        ops.close()
    figures_log.log()
    logger.info("GPU core closed")
    return 0


class _FiguresLog:
    """Logs what the core did since its last line: requests and batches in and out, process
    CPU per request, and each stage's batches (so a timed load reads its own window)."""

    def __init__(self, pipeline: tp.Pipeline, server: tp.PipelineServer):
        self._pipeline, self._server = pipeline, server
        self._exchange, self._cpu_s = server.figures(), time.process_time()
        self._nodes = pipeline.stats()

    def log(self) -> None:
        exchange, cpu_s, nodes = self._server.figures(), time.process_time(), self._pipeline.stats()
        received = exchange.requests_received - self._exchange.requests_received
        logger.info(
            "GPU core: %d requests in %d intake batches, %d answered in %d frames; process CPU "
            "%.1f us per request (every thread, CUDA launches included); %d fronts attached",
            received,
            exchange.intake_batches - self._exchange.intake_batches,
            exchange.requests_answered - self._exchange.requests_answered,
            exchange.result_frames - self._exchange.result_frames,
            1e6 * (cpu_s - self._cpu_s) / max(received, 1),
            exchange.clients_open,
        )
        for name, figures in nodes.items():
            before = self._nodes[name]
            items = figures.inferences - before.inferences
            batches = figures.executions - before.executions
            logger.info(
                "GPU core [%s]: %d requests in %d batches (mean %.2f), %.2f ms per batch",
                name,
                items,
                batches,
                items / max(batches, 1),
                (figures.compute_time_ms_total - before.compute_time_ms_total) / max(batches, 1),
            )
        self._exchange, self._cpu_s, self._nodes = exchange, cpu_s, nodes
