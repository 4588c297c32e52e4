"""``python -m service``: start the Thrift classification server with either handler."""

from __future__ import annotations

import dataclasses
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from service.command_line import ServerSettings, parse_args  # light: argparse only
from service.layout import Layout, ServingLayout, serving_layout

if TYPE_CHECKING:  # the real imports wait until after parsing: `--help` must not load torch
    from service.gen.inference.ttypes import ServerStats
    from service.handlers.admission import Admission, RequestLimits
    from service.handlers.handler import ClassifierHandler
    from service.ops.ops_server import OpsServer, ServiceState
    from service.rpc.server import ThriftServer, TransportLimits

logger = logging.getLogger("service")

_MIB = 1 << 20


def main(argv: list[str] | None = None) -> int:
    """Start the server; returns the exit code (0 after a clean SIGTERM or Ctrl-C)."""
    settings = parse_args(argv)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    layout = _layout(settings)
    if layout.kind is Layout.CORE:
        from service.processes.core_process import run_core

        return run_core(settings)
    if layout.kind is Layout.ONE_PROCESS:
        return _serve_one_process(settings)
    from service.processes.workers import run_workers

    resolved = dataclasses.replace(settings, workers=layout.processes)
    argv = sys.argv[1:] if argv is None else argv
    return run_workers(argv, resolved, with_core=layout.kind is Layout.FRONTS_AND_CORE)


def _layout(settings: ServerSettings) -> ServingLayout:
    """The serving layout for these settings on this machine (``serving_layout``)."""
    import os

    # Only ``auto`` for the pipelined handler asks whether the model runs on a GPU (which
    # imports torch): a front or a worker is started with its ``--workers`` given.
    auto_pipelined = settings.workers is None and settings.handler == "pipelined"
    on_gpu = (
        auto_pipelined and not str(settings.device or "").startswith("cpu") and _cuda_available()
    )
    return serving_layout(settings, on_gpu=on_gpu, cpu_count=os.cpu_count() or 1)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _serve_one_process(settings: ServerSettings) -> int:
    """The ops port first (liveness answers during a long start), then the handler, then the
    RPC server until a signal."""
    from service.ops.ops_server import ServiceState

    _limit_opencv_threads(settings.opencv_threads)
    request_limits, admission, transport_limits = _limits(settings)
    state = ServiceState()
    built: list[ClassifierHandler] = []  # the handler, once it exists

    def current_stats() -> ServerStats | None:
        return built[0].stats() if built else None

    ops = None
    if settings.metrics_port:
        ops = _start_ops(settings, state, current_stats)
        if ops is None:
            return 2
    try:
        started = _build_handler(settings, request_limits, admission)
        if started is None:
            return 2
        handler, summary = started
        built.append(handler)
        code = _serve(settings, handler, state, summary, transport_limits)
        handler.close()
        return code
    finally:
        if ops is not None:
            ops.close()


def _start_ops(
    settings: ServerSettings, state: ServiceState, stats: Callable[[], ServerStats | None]
) -> OpsServer | None:
    """The health and metrics port, serving; None (logged) when it cannot listen."""
    from service.ops.ops_server import OpsServer
    from service.ops.prometheus_export import MetricsRenderer

    renderer = MetricsRenderer(stats)
    try:
        ops = OpsServer(
            state, renderer.render, stats=stats, host=settings.host, port=settings.metrics_port
        )
    except OSError as exc:
        logger.error(
            "cannot listen on %s:%d (metrics): %s", settings.host, settings.metrics_port, exc
        )
        return None
    ops.start()
    return ops


def _build_handler(
    settings: ServerSettings, request_limits: RequestLimits, admission: Admission
) -> tuple[ClassifierHandler, list[str]] | None:
    """The handler the command line asks for and its start-up summary; None (logged) when it
    cannot start: a configuration mistake with its message only, anything else with its
    traceback too."""
    from service.app import build_handler
    from service.service_config import ServiceConfigError
    from service.tools.export_model import ExportError
    from torchpipe_lite.errors import ConfigError

    try:
        return build_handler(
            settings.handler,
            settings.config,
            model=settings.model,
            device=settings.device,
            arch=settings.arch,
            limits=request_limits,
            admission=admission,
            core_socket=settings.core_socket,
            threads=settings.threads,
        )
    except Exception as exc:
        expected = isinstance(
            exc, ServiceConfigError | ConfigError | ExportError | FileNotFoundError
        )
        logger.error(
            "cannot start the %s handler: %s",
            settings.handler,
            exc,
            exc_info=None if expected else exc,
        )
        return None


def _limits(settings: ServerSettings) -> tuple[RequestLimits, Admission, TransportLimits]:
    """What calls may ask, what the process admits, and what connections may do."""
    from service.handlers.admission import Admission, AdmissionLimits, RequestLimits
    from service.rpc.limits import TransportLimits

    request_limits = RequestLimits(
        max_image_bytes=int(settings.max_image_mb * _MIB),
        max_images_per_call=settings.max_images,
        call_window=settings.call_window,
    )
    admission = Admission(
        AdmissionLimits(
            max_images_in_flight=settings.max_in_flight,
            min_images_in_flight=settings.min_in_flight,
            wait_fraction=settings.admit_wait_fraction,
            max_megapixels_in_flight=settings.max_in_flight_mp,
            max_megapixels_per_call=settings.max_call_mp,
            request_timeout_s=settings.request_timeout_s,
        )
    )
    transport_limits = TransportLimits(
        max_message_bytes=int(settings.max_message_mb * _MIB),
        # Lists may be a little longer than allowed, so that the handler can answer TOO_LARGE;
        # far longer ones are refused by the protocol before anything is allocated.
        max_container_items=max(16 * 1024, 2 * settings.max_images),
        message_timeout_s=settings.message_timeout_s,
        idle_timeout_s=settings.idle_timeout_s,
        max_connections=settings.max_connections,
        max_buffered_bytes=None
        if settings.max_buffered_mb is None
        else int(settings.max_buffered_mb * _MIB),
    )
    return request_limits, admission, transport_limits


def _limit_opencv_threads(threads: int) -> None:
    """Each of the server's concurrent calls gets one OpenCV thread: splitting one small resize
    over a pool of helper threads only adds wake-ups when many calls run at once."""
    if threads > 0:
        import cv2

        cv2.setNumThreads(threads)


def _serve(
    settings: ServerSettings,
    handler: ClassifierHandler,
    state: ServiceState,
    summary: list[str],
    transport_limits: TransportLimits,
) -> int:
    """Listen, warm up, serve until a signal, drain; returns the exit code."""
    from service.handlers.warmup import connect_host, warm_up
    from service.ops.gpu_stats import GpuReader
    from service.rpc.budgets import BudgetError
    from service.rpc.server import ThriftServer

    try:
        server = ThriftServer(
            handler,
            host=settings.host,
            port=settings.port,
            limits=transport_limits,
            reuse_port=settings.reuse_port,
            handoff=None
            if settings.connection_fd is None
            else socket.socket(fileno=settings.connection_fd),
        )
    except BudgetError as exc:
        logger.error("cannot serve: %s", exc)
        return 2
    handler.observe(state=state, gpu_reader=GpuReader())
    handler.observe_connections(server.connection_stats)
    state.add_load_check(handler.admission.saturated)
    state.add_load_check(server.at_connection_cap)
    try:
        port = server.listen()
    except OSError as exc:
        logger.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc)
        return 2

    _stop_on_signals(settings, state, server)
    for line in summary:
        logger.info("%s", line)
    _log_limits(settings)
    # Before the line that says it serves: whoever reads that line may ask readiness next.
    state.set_detail("starting: warm-up inference in progress")
    logger.info("serving %s on %s:%d", settings.handler, settings.host, port)
    warmup_failed = threading.Event()

    def warm() -> None:
        try:
            warm_up(connect_host(settings.host), port, timeout_s=settings.warmup_timeout_s)
        except Exception as exc:
            if state.draining:  # stopped during the warm-up: nothing is wrong with the model
                logger.info("warm-up interrupted by the stop: %s", exc)
                return
            logger.error("warm-up inference failed, stopping: %s", exc, exc_info=exc)
            warmup_failed.set()
            state.mark_draining()
            server.stop()
            return
        state.mark_ready()
        logger.info("ready: warmed up and accepting on %s:%d", settings.host, port)

    threading.Thread(target=warm, name="warmup", daemon=True).start()
    drained = server.serve(drain_timeout_s=settings.drain_timeout_s)
    logger.info("stopped%s", "" if drained else " (some requests were cut off)")
    if warmup_failed.is_set():
        return 2
    return 0 if drained else 1


def _stop_on_signals(settings: ServerSettings, state: ServiceState, server: ThriftServer) -> None:
    """SIGTERM or Ctrl-C: not ready, then (after ``--shutdown-delay-s``) stop and drain; a
    second one ends the process at once."""

    def on_signal(signum: int, _frame: object) -> None:
        logger.info(
            "%s: stopping (no new connections; in-flight requests finish; send it again to force)",
            signal.Signals(signum).name,
        )
        signal.signal(signum, signal.SIG_DFL)  # a second signal ends the process at once
        state.mark_draining()
        if settings.shutdown_delay_s > 0:
            logger.info("not ready; still accepting for %.1f s", settings.shutdown_delay_s)
            timer = threading.Timer(settings.shutdown_delay_s, server.stop)
            timer.daemon = True
            timer.start()
        else:
            server.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def _log_limits(settings: ServerSettings) -> None:
    from service.rpc.server import fastbinary_available

    logger.info(
        "limits: image %.0f MiB, %d images per call, message %.0f MiB; admits %d to %d "
        "images (%.0f MP) at once, as many as are predicted to clear within %g of the deadline, "
        "%.0f MP per call, deadline %s; %d handler threads; "
        "accelerated binary protocol: %s",
        settings.max_image_mb,
        settings.max_images,
        settings.max_message_mb,
        min(settings.min_in_flight, settings.max_in_flight),
        settings.max_in_flight,
        settings.max_in_flight_mp,
        settings.admit_wait_fraction,
        settings.max_call_mp,
        f"{settings.request_timeout_s:g} s" if settings.request_timeout_s > 0 else "none",
        settings.threads,
        "yes" if fastbinary_available() else "NO (pure Python)",
    )


if __name__ == "__main__":
    sys.exit(main())
