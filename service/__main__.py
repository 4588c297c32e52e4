"""``python -m service``: start the Thrift classification server with either handler."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from service.command_line import parse_args  # light: argparse only

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
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.serve_core is not None:
        from service.processes.core_process import run_core

        return run_core(args)
    args.workers = _serving_processes(args)
    if args.workers > 1:
        from service.processes.workers import run_workers

        return run_workers(sys.argv[1:] if argv is None else argv, args)
    return _serve_one_process(args)


def _serving_processes(args: argparse.Namespace) -> int:
    """``--workers`` resolved for this machine (``auto``: see its help)."""
    import os

    from service.command_line import resolve_workers

    on_gpu = False
    if args.workers is None and args.handler == "pipelined" and args.core_socket is None:
        on_gpu = not str(args.device or "").startswith("cpu") and _cuda_available()
    return resolve_workers(args, on_gpu=on_gpu, cpu_count=os.cpu_count() or 1)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _serve_one_process(args: argparse.Namespace) -> int:
    """The ops port first (liveness answers during a long start), then the handler, then the
    RPC server until a signal."""
    from service.ops.ops_server import ServiceState

    _limit_opencv_threads(args.opencv_threads)
    request_limits, admission, transport_limits = _limits(args)
    state = ServiceState()
    built: list[ClassifierHandler] = []  # the handler, once it exists

    def current_stats() -> ServerStats | None:
        return built[0].stats() if built else None

    ops = None
    if args.metrics_port:
        ops = _start_ops(args, state, current_stats)
        if ops is None:
            return 2
    try:
        started = _build_handler(args, request_limits, admission)
        if started is None:
            return 2
        handler, summary = started
        built.append(handler)
        code = _serve(args, handler, state, summary, transport_limits)
        handler.close()
        return code
    finally:
        if ops is not None:
            ops.close()


def _start_ops(
    args: argparse.Namespace, state: ServiceState, stats: Callable[[], ServerStats | None]
) -> OpsServer | None:
    """The health and metrics port, serving; None (logged) when it cannot listen."""
    from service.ops.ops_server import OpsServer
    from service.ops.prometheus_export import MetricsRenderer

    renderer = MetricsRenderer(stats)
    try:
        ops = OpsServer(state, renderer.render, stats=stats, host=args.host, port=args.metrics_port)
    except OSError as exc:
        logger.error("cannot listen on %s:%d (metrics): %s", args.host, args.metrics_port, exc)
        return None
    ops.start()
    return ops


def _build_handler(
    args: argparse.Namespace, request_limits: RequestLimits, admission: Admission
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
            args.handler,
            args.config,
            model=args.model,
            device=args.device,
            arch=args.arch,
            limits=request_limits,
            admission=admission,
            core_socket=args.core_socket,
        )
    except Exception as exc:
        expected = isinstance(
            exc, ServiceConfigError | ConfigError | ExportError | FileNotFoundError
        )
        logger.error(
            "cannot start the %s handler: %s", args.handler, exc, exc_info=None if expected else exc
        )
        return None


def _limits(args: argparse.Namespace) -> tuple[RequestLimits, Admission, TransportLimits]:
    """What calls may ask, what the process admits, and what connections may do."""
    from service.handlers.admission import Admission, AdmissionLimits, RequestLimits
    from service.rpc.limits import TransportLimits

    request_limits = RequestLimits(
        max_image_bytes=int(args.max_image_mb * _MIB),
        max_images_per_call=args.max_images,
        call_window=args.call_window,
    )
    admission = Admission(
        AdmissionLimits(
            max_images_in_flight=args.max_in_flight,
            min_images_in_flight=args.min_in_flight,
            wait_fraction=args.admit_wait_fraction,
            max_megapixels_in_flight=args.max_in_flight_mp,
            max_megapixels_per_call=args.max_call_mp,
            request_timeout_s=args.request_timeout_s,
        )
    )
    transport_limits = TransportLimits(
        max_message_bytes=int(args.max_message_mb * _MIB),
        # Lists may be a little longer than allowed, so that the handler can answer TOO_LARGE;
        # far longer ones are refused by the protocol before anything is allocated.
        max_container_items=max(16 * 1024, 2 * args.max_images),
        message_timeout_s=args.message_timeout_s,
        idle_timeout_s=args.idle_timeout_s,
        max_connections=args.max_connections,
        max_buffered_bytes=None
        if args.max_buffered_mb is None
        else int(args.max_buffered_mb * _MIB),
    )
    return request_limits, admission, transport_limits


def _limit_opencv_threads(threads: int) -> None:
    """Each of the server's concurrent calls gets one OpenCV thread: splitting one small resize
    over a pool of helper threads only adds wake-ups when many calls run at once."""
    if threads > 0:
        import cv2

        cv2.setNumThreads(threads)


def _serve(
    args: argparse.Namespace,
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
            host=args.host,
            port=args.port,
            threads=args.threads,
            limits=transport_limits,
            reuse_port=args.reuse_port,
            handoff=None
            if args.connection_fd is None
            else socket.socket(fileno=args.connection_fd),
        )
    except BudgetError as exc:
        logger.error("cannot serve: %s", exc)
        return 2
    handler.observe(state=state, gpu_reader=GpuReader())
    state.add_load_check(handler.admission.saturated)
    state.add_load_check(server.at_connection_cap)
    try:
        port = server.listen()
    except OSError as exc:
        logger.error("cannot listen on %s:%d: %s", args.host, args.port, exc)
        return 2

    _stop_on_signals(args, state, server)
    for line in summary:
        logger.info("%s", line)
    _log_limits(args)
    logger.info("serving %s on %s:%d", args.handler, args.host, port)
    warmup_failed = threading.Event()

    def warm() -> None:
        try:
            warm_up(connect_host(args.host), port, timeout_s=args.warmup_timeout_s)
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
        logger.info("ready: warmed up and accepting on %s:%d", args.host, port)

    state.set_detail("starting: warm-up inference in progress")
    threading.Thread(target=warm, name="warmup", daemon=True).start()
    drained = server.serve(drain_timeout_s=args.drain_timeout_s)
    logger.info("stopped%s", "" if drained else " (some requests were cut off)")
    if warmup_failed.is_set():
        return 2
    return 0 if drained else 1


def _stop_on_signals(args: argparse.Namespace, state: ServiceState, server: ThriftServer) -> None:
    """SIGTERM or Ctrl-C: not ready, then (after ``--shutdown-delay-s``) stop and drain; a
    second one ends the process at once."""

    def on_signal(signum: int, _frame: object) -> None:
        logger.info(
            "%s: stopping (no new connections; in-flight requests finish; send it again to force)",
            signal.Signals(signum).name,
        )
        signal.signal(signum, signal.SIG_DFL)  # a second signal ends the process at once
        state.mark_draining()
        if args.shutdown_delay_s > 0:
            logger.info("not ready; still accepting for %.1f s", args.shutdown_delay_s)
            timer = threading.Timer(args.shutdown_delay_s, server.stop)
            timer.daemon = True
            timer.start()
        else:
            server.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def _log_limits(args: argparse.Namespace) -> None:
    from service.rpc.server import fastbinary_available

    logger.info(
        "limits: image %.0f MiB, %d images per call, message %.0f MiB; admits %d to %d "
        "images (%.0f MP) at once, as many as are predicted to clear within %g of the deadline, "
        "%.0f MP per call, deadline %s; %d RPC threads; "
        "accelerated binary protocol: %s",
        args.max_image_mb,
        args.max_images,
        args.max_message_mb,
        min(args.min_in_flight, args.max_in_flight),
        args.max_in_flight,
        args.max_in_flight_mp,
        args.admit_wait_fraction,
        args.max_call_mp,
        f"{args.request_timeout_s:g} s" if args.request_timeout_s > 0 else "none",
        args.threads,
        "yes" if fastbinary_available() else "NO (pure Python)",
    )


if __name__ == "__main__":
    sys.exit(main())
