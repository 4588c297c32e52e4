"""``python -m service``: start the Thrift classification server with either handler."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the real imports wait until after parsing: `--help` must not load torch
    from service.handler import ClassifierHandler
    from service.ops_server import ServiceState
    from service.rpc.server import TransportLimits

logger = logging.getLogger("service")

_MIB = 1 << 20
#: The shipped default pipeline (``service.service_config.DEFAULT_CONFIG``, spelled here so
#: that parsing the command line imports nothing heavy).
_DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "resnet50.toml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="ResNet image classification over Thrift, with the locked baseline handler "
        "or the pipelined (torchpipe_lite) handler on the same engine.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--handler", choices=("baseline", "pipelined"), default="pipelined")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: all)")
    parser.add_argument("--port", type=int, default=8888)
    parser.add_argument(
        "--threads",
        type=int,
        default=20,
        help="threads that run blocking calls (the baseline runs every request on one)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=_DEFAULT_CONFIG,
        help="pipeline TOML (its model node also defines the baseline's engine)",
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=argparse.SUPPRESS,
        help="model file, which must exist unless --arch is given; overrides the config's "
        "`model` (default: the config's; the shipped configs' is exported on first start)",
    )
    parser.add_argument(
        "--device",
        default=argparse.SUPPRESS,
        help="engine device (cpu, cuda, cuda:1); overrides the config "
        "(default: the config's, else cuda when available, else cpu)",
    )
    parser.add_argument(
        "--arch",
        default=argparse.SUPPRESS,
        help="export this torchvision classifier (resnet18, mobilenet_v3_small, ...; random "
        "weights) when the model file is missing (default: the file's name when it is one, "
        "e.g. resnet18.onnx, else resnet50)",
    )
    parser.add_argument(
        "--max-image-mb", type=float, default=16.0, help="larger images get TOO_LARGE"
    )
    parser.add_argument(
        "--max-images",
        type=int,
        default=256,
        help="longest infer_many list; longer calls get TOO_LARGE",
    )
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=512,
        help="images this process holds at once (admitted calls not yet answered); a call "
        "that would take it past this is answered OVERLOADED at once, unrun",
    )
    parser.add_argument(
        "--max-in-flight-mp",
        type=float,
        default=1000.0,
        help="megapixels the images in flight may declare (bounds the memory decoding takes); "
        "past it, OVERLOADED",
    )
    parser.add_argument(
        "--max-call-mp",
        type=float,
        default=400.0,
        help="megapixels the images of one call may declare; more is TOO_LARGE",
    )
    parser.add_argument(
        "--request-timeout-s",
        type=float,
        default=30.0,
        help="a call's deadline from its arrival: its images still waiting to run then are "
        "dropped and answered TIMEOUT (0: none)",
    )
    parser.add_argument(
        "--call-window",
        type=int,
        default=16,
        help="images of one infer_many call in the pipeline at once, so that other clients' "
        "calls interleave with a long one",
    )
    parser.add_argument(
        "--max-message-mb",
        type=float,
        default=64.0,
        help="a request message over this is cut off and its connection closed",
    )
    parser.add_argument(
        "--message-timeout-s",
        type=float,
        default=30.0,
        help="longest one request message may take from its first byte to its last; a slower "
        "one closes its connection",
    )
    parser.add_argument(
        "--idle-timeout-s",
        type=float,
        default=300.0,
        help="longest a connection may stay open between requests, sending nothing",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=1024,
        help="open client connections; beyond it new ones are closed at once",
    )
    parser.add_argument(
        "--drain-timeout-s",
        type=float,
        default=60.0,
        help="on SIGTERM/Ctrl-C, how long in-flight requests may take to finish",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="HTTP port (on --host) for /metrics, /health/live and /health/ready; 0: off",
    )
    parser.add_argument(
        "--shutdown-delay-s",
        type=float,
        default=0.0,
        help="on SIGTERM, keep accepting this long while /health/ready answers 404 "
        "(draining), so load balancers stop sending first; then stop accepting and drain",
    )
    parser.add_argument(
        "--warmup-timeout-s",
        type=float,
        default=300.0,
        help="longest the start-up warm-up inference may take before the server gives up",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes on the port (a supervisor accepts and deals the connections to "
        "them in turn), each with its own pipeline on the same device; more than one sidesteps "
        "the interpreter lock",
    )
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        help="SO_REUSEPORT: several server processes may share the port",
    )
    parser.add_argument(
        "--shared-engine",
        action="store_true",
        help="with --workers: run the model stage once, in an engine process of its own that "
        "batches the requests of every worker (they send it pixels through shared memory)",
    )
    parser.add_argument(
        "--engine-clients",
        type=int,
        default=8,
        help="with --shared-engine: requests each worker may have at the engine at once "
        "(its model node's instances, one connection each)",
    )
    # Set by the --workers supervisor: the Unix socket it deals this worker's connections on.
    parser.add_argument("--connection-fd", type=int, default=None, help=argparse.SUPPRESS)
    # Set by a --shared-engine supervisor: the engine's socket (workers) or the socket to serve
    # the engine on (the engine process).
    parser.add_argument("--engine-socket", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--serve-engine", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--opencv-threads",
        type=int,
        default=1,
        help="OpenCV's own worker threads for each call (the server already runs many calls at "
        "once; 0: OpenCV's default, one per core)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )
    args = parser.parse_args(argv)
    for optional in ("model", "device", "arch"):  # SUPPRESS keeps "(default: None)" off --help
        setattr(args, optional, getattr(args, optional, None))
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    supervisor = args.engine_socket is None and args.serve_engine is None
    if supervisor and args.shared_engine and (args.workers < 2 or args.handler != "pipelined"):
        parser.error("--shared-engine needs --workers 2 or more and the pipelined handler")
    if args.engine_clients < 1:
        parser.error("--engine-clients must be at least 1")
    if args.max_image_mb > args.max_message_mb:
        parser.error("--max-image-mb cannot exceed --max-message-mb")
    if args.max_images > args.max_in_flight:
        parser.error("--max-images cannot exceed --max-in-flight: such a call could never run")
    if args.max_call_mp > args.max_in_flight_mp:
        parser.error("--max-call-mp cannot exceed --max-in-flight-mp")
    if args.call_window < 1:
        parser.error("--call-window must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Start the server; returns the exit code (0 after a clean SIGTERM or Ctrl-C)."""
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.serve_engine is not None:
        from service.engine_process import run_engine

        return run_engine(args)
    if args.workers > 1:
        from service.workers import run_workers

        return run_workers(sys.argv[1:] if argv is None else argv, args)
    from service.admission import Admission, AdmissionLimits
    from service.app import build_handler
    from service.export_model import ExportError
    from service.handler import RequestLimits
    from service.ops_server import OpsServer, ServiceState
    from service.prometheus_export import MetricsRenderer
    from service.rpc.server import TransportLimits
    from service.service_config import ServiceConfigError
    from torchpipe_lite.errors import ConfigError

    _limit_opencv_threads(args.opencv_threads)
    request_limits = RequestLimits(
        max_image_bytes=int(args.max_image_mb * _MIB),
        max_images_per_call=args.max_images,
        call_window=args.call_window,
    )
    admission = Admission(
        AdmissionLimits(
            max_images_in_flight=args.max_in_flight,
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
    )
    state = ServiceState()
    handler: ClassifierHandler | None = None
    ops: OpsServer | None = None
    if args.metrics_port:
        # Up before the models load: liveness answers during a long start, readiness says 503.
        renderer = MetricsRenderer(lambda: None if handler is None else handler.stats())
        try:
            ops = OpsServer(state, renderer.render, host=args.host, port=args.metrics_port)
        except OSError as exc:
            logger.error("cannot listen on %s:%d (metrics): %s", args.host, args.metrics_port, exc)
            return 2
        ops.start()
    try:
        handler, summary = build_handler(
            args.handler,
            args.config,
            model=args.model,
            device=args.device,
            arch=args.arch,
            limits=request_limits,
            admission=admission,
            engine_socket=args.engine_socket,
            engine_clients=args.engine_clients,
        )
    except Exception as exc:
        # A configuration mistake needs its message, not a traceback; anything else gets both.
        expected = isinstance(
            exc, ServiceConfigError | ConfigError | ExportError | FileNotFoundError
        )
        logger.error(
            "cannot start the %s handler: %s", args.handler, exc, exc_info=None if expected else exc
        )
        if ops is not None:
            ops.close()
        return 2
    code = _serve(args, handler, state, summary, transport_limits)
    handler.close()
    if ops is not None:
        ops.close()
    return code


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
    from service.gpu_stats import GpuReader
    from service.rpc.server import ThriftServer, fastbinary_available
    from service.warmup import connect_host, warm_up

    server = ThriftServer(
        handler,
        host=args.host,
        port=args.port,
        threads=args.threads,
        limits=transport_limits,
        reuse_port=args.reuse_port,
        handoff=None if args.connection_fd is None else socket.socket(fileno=args.connection_fd),
    )
    handler.observe(state=state, gpu_reader=GpuReader())
    state.add_load_check(handler.admission.saturated)
    state.add_load_check(server.at_connection_cap)
    try:
        port = server.listen()
    except OSError as exc:
        logger.error("cannot listen on %s:%d: %s", args.host, args.port, exc)
        return 2

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
    for line in summary:
        logger.info("%s", line)
    logger.info(
        "limits: image %.0f MiB, %d images per call, message %.0f MiB; admits %d images "
        "(%.0f MP) at once, %.0f MP per call, deadline %s; %d RPC threads; "
        "accelerated binary protocol: %s",
        args.max_image_mb,
        args.max_images,
        args.max_message_mb,
        args.max_in_flight,
        args.max_in_flight_mp,
        args.max_call_mp,
        f"{args.request_timeout_s:g} s" if args.request_timeout_s > 0 else "none",
        args.threads,
        "yes" if fastbinary_available() else "NO (pure Python)",
    )
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


if __name__ == "__main__":
    sys.exit(main())
