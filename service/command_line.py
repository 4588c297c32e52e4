"""The command line of ``python -m service``: its flags, defaults and the checks between them.

Importing it loads nothing heavy, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
from pathlib import Path

#: The shipped default pipeline (``service.service_config.DEFAULT_CONFIG``, spelled here so
#: that parsing the command line imports nothing heavy).
_DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "resnet50.toml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked."""
    parser = _parser()
    args = parser.parse_args(argv)
    for optional in ("model", "device", "arch"):  # SUPPRESS keeps "(default: None)" off --help
        setattr(args, optional, getattr(args, optional, None))
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be at least 1")
    args.max_buffered_mb = getattr(args, "max_buffered_mb", None)
    if args.max_buffered_mb is not None and args.max_buffered_mb < args.max_message_mb:
        parser.error("--max-buffered-mb cannot be less than --max-message-mb")
    if args.max_image_mb > args.max_message_mb:
        parser.error("--max-image-mb cannot exceed --max-message-mb")
    if args.max_images > args.max_in_flight:
        parser.error("--max-images cannot exceed --max-in-flight: such a call could never run")
    if args.max_call_mp > args.max_in_flight_mp:
        parser.error("--max-call-mp cannot exceed --max-in-flight-mp")
    if args.min_in_flight < 1:
        parser.error("--min-in-flight must be at least 1")
    if not 0 <= args.admit_wait_fraction <= 1:
        parser.error("--admit-wait-fraction must be in 0..1")
    if args.call_window < 1:
        parser.error("--call-window must be at least 1")
    return args


def _parser() -> argparse.ArgumentParser:
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
    _model_flags(parser.add_argument_group("the model"))
    _limit_flags(parser.add_argument_group("what calls may ask (over: TOO_LARGE, OVERLOADED)"))
    _connection_flags(parser.add_argument_group("connections"))
    _operation_flags(parser.add_argument_group("operations"))
    _process_flags(parser.add_argument_group("processes"))
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
    return parser


def _model_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--config",
        type=Path,
        default=_DEFAULT_CONFIG,
        help="pipeline TOML (its model node also defines the baseline's engine)",
    )
    group.add_argument(
        "--model",
        type=Path,
        default=argparse.SUPPRESS,
        help="model file, which must exist unless --arch is given; overrides the config's "
        "`model` (default: the config's; the shipped configs' is exported on first start)",
    )
    group.add_argument(
        "--device",
        default=argparse.SUPPRESS,
        help="engine device (cpu, cuda, cuda:1); overrides the config "
        "(default: the config's, else cuda when available, else cpu)",
    )
    group.add_argument(
        "--arch",
        default=argparse.SUPPRESS,
        help="export this torchvision classifier (resnet18, mobilenet_v3_small, ...; random "
        "weights) when the model file is missing (default: the file's name when it is one, "
        "e.g. resnet18.onnx, else resnet50)",
    )


def _limit_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--max-image-mb", type=float, default=16.0, help="larger images get TOO_LARGE"
    )
    group.add_argument(
        "--max-images",
        type=int,
        default=256,
        help="longest infer_many list; longer calls get TOO_LARGE",
    )
    group.add_argument(
        "--max-in-flight",
        type=int,
        default=512,
        help="most images this process holds at once (admitted calls not yet answered), "
        "whatever it clears; a call that would take it past this is answered OVERLOADED at "
        "once, unrun",
    )
    group.add_argument(
        "--min-in-flight",
        type=int,
        default=16,
        help="images always admitted, whatever the server clears (at most --max-in-flight): "
        "an idle server always admits",
    )
    group.add_argument(
        "--admit-wait-fraction",
        type=float,
        default=0.5,
        help="between those, a call is admitted while the last of its images is predicted "
        "(from the images the server clears per second) to be answered within this fraction "
        "of the shortest deadline (--request-timeout-s, the pipeline's request_timeout); "
        "past it, OVERLOADED at once. 0: --max-in-flight alone decides",
    )
    group.add_argument(
        "--max-in-flight-mp",
        type=float,
        default=1000.0,
        help="megapixels the images in flight may declare (bounds the memory decoding takes); "
        "past it, OVERLOADED",
    )
    group.add_argument(
        "--max-call-mp",
        type=float,
        default=400.0,
        help="megapixels the images of one call may declare; more is TOO_LARGE",
    )
    group.add_argument(
        "--request-timeout-s",
        type=float,
        default=30.0,
        help="a call's deadline from its arrival: its images still waiting to run then are "
        "dropped and answered TIMEOUT (0: none)",
    )
    group.add_argument(
        "--call-window",
        type=int,
        default=16,
        help="images of one infer_many call in the pipeline at once, so that other clients' "
        "calls interleave with a long one",
    )


def _connection_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--max-message-mb",
        type=float,
        default=64.0,
        help="a request message over this is cut off and its connection closed",
    )
    group.add_argument(
        "--message-timeout-s",
        type=float,
        default=30.0,
        help="longest one request message may take from its first byte to its last; a slower "
        "one closes its connection",
    )
    group.add_argument(
        "--idle-timeout-s",
        type=float,
        default=300.0,
        help="longest a connection may stay open between requests, sending nothing",
    )
    group.add_argument(
        "--max-connections",
        type=int,
        default=1024,
        help="open client connections; beyond it new ones are closed at once (fewer when the "
        "file limit, ulimit -n, leaves less room: the number taken is logged at start)",
    )
    group.add_argument(
        "--max-buffered-mb",
        type=float,
        default=argparse.SUPPRESS,
        help="memory the requests still arriving may hold, every connection together; past "
        "it the connections holding the most are closed (default: an eighth of the machine's "
        "or container's memory, at least one message of --max-message-mb)",
    )


def _operation_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--drain-timeout-s",
        type=float,
        default=60.0,
        help="on SIGTERM/Ctrl-C, how long in-flight requests may take to finish",
    )
    group.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="HTTP port (on --host) for /metrics, /health/live and /health/ready; 0: off",
    )
    group.add_argument(
        "--shutdown-delay-s",
        type=float,
        default=0.0,
        help="on SIGTERM, keep accepting this long while /health/ready answers 404 "
        "(draining), so load balancers stop sending first; then stop accepting and drain",
    )
    group.add_argument(
        "--warmup-timeout-s",
        type=float,
        default=300.0,
        help="longest the start-up warm-up inference may take before the server gives up",
    )


def _process_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--workers",
        type=_workers,
        default="auto",
        metavar="N|auto",
        help="server processes on the port (a supervisor accepts and deals the connections to "
        "them in turn). Pipelined handler: N front processes (RPC, admission, CPU image "
        "stages) beside one GPU core process that owns the model and the GPU stages and batches "
        "every front's requests; auto (the default): one front per two CPU cores, 2 to 8, where "
        "the model runs on a GPU, else one process. Baseline: N independent processes, each "
        "with its own model copy; auto: 1",
    )
    group.add_argument(
        "--reuse-port",
        action="store_true",
        help="SO_REUSEPORT: several server processes may share the port",
    )
    # Set by the --workers supervisor: the Unix socket it deals this worker's connections on.
    group.add_argument("--connection-fd", type=int, default=None, help=argparse.SUPPRESS)
    # Set by a core layout's supervisor: the core's socket (fronts), or the socket to serve the
    # core on (the core process).
    group.add_argument("--core-socket", default=None, help=argparse.SUPPRESS)
    group.add_argument("--serve-core", default=None, help=argparse.SUPPRESS)


def _workers(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None


def resolve_workers(args: argparse.Namespace, *, on_gpu: bool, cpu_count: int) -> int:
    """The serving layout's process count: ``--workers`` as given, or what ``auto`` means for
    this handler on this machine (see ``--workers``'s help)."""
    if args.workers is not None:
        return args.workers
    if args.handler != "pipelined" or not on_gpu:
        return 1
    return max(2, min(8, cpu_count // 2))
