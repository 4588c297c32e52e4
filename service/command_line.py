"""The command line of ``python -m service``: its flags, defaults and the checks between them.

Importing it loads nothing heavy, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

#: The shipped default pipeline (``service.service_config.DEFAULT_CONFIG``, spelled here so
#: that parsing the command line imports nothing heavy).
_DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "resnet50.toml"


class SettingsError(ValueError):
    """Settings that contradict each other; the message names the flags."""


@dataclass(frozen=True)
class ServerSettings:
    """What ``python -m service`` runs with, checked once (``--help`` says what each does)."""

    handler: str
    host: str
    port: int
    threads: int
    config: Path
    model: Path | None
    device: str | None
    arch: str | None
    max_image_mb: float
    max_images: int
    max_in_flight: int
    min_in_flight: int
    admit_wait_fraction: float
    max_in_flight_mp: float
    max_call_mp: float
    request_timeout_s: float
    call_window: int
    max_message_mb: float
    message_timeout_s: float
    idle_timeout_s: float
    max_connections: int
    max_buffered_mb: float | None
    drain_timeout_s: float
    metrics_port: int
    shutdown_delay_s: float
    warmup_timeout_s: float
    #: Server processes on the port; None: ``auto`` (``serving_layout`` decides).
    workers: int | None
    reuse_port: bool
    #: Set by a ``--workers`` supervisor: the Unix socket it deals this worker's connections on.
    connection_fd: int | None
    #: Set by a core layout's supervisor: the core's socket (in each front).
    core_socket: str | None
    #: Set by a core layout's supervisor: serve the core on this socket (the core process).
    serve_core: str | None
    #: The GPUs to start one core each on (``--device-ids``); None: every visible GPU.
    device_ids: tuple[int, ...] | None
    #: Set by a core layout's supervisor: the core's name in its figures (``cuda:1``).
    core_name: str | None
    opencv_threads: int
    log_level: str

    def __post_init__(self) -> None:
        for problem in _contradictions(self):
            raise SettingsError(problem)


def _contradictions(settings: ServerSettings) -> list[str]:
    checks = [
        (settings.workers is not None and settings.workers < 1, "--workers must be at least 1"),
        (
            settings.max_buffered_mb is not None
            and settings.max_buffered_mb < settings.max_message_mb,
            "--max-buffered-mb cannot be less than --max-message-mb",
        ),
        (
            settings.max_image_mb > settings.max_message_mb,
            "--max-image-mb cannot exceed --max-message-mb",
        ),
        (
            settings.max_images > settings.max_in_flight,
            "--max-images cannot exceed --max-in-flight: such a call could never run",
        ),
        (
            settings.max_call_mp > settings.max_in_flight_mp,
            "--max-call-mp cannot exceed --max-in-flight-mp",
        ),
        (settings.min_in_flight < 1, "--min-in-flight must be at least 1"),
        (
            not 0 <= settings.admit_wait_fraction <= 1,
            "--admit-wait-fraction must be in 0..1",
        ),
        (settings.call_window < 1, "--call-window must be at least 1"),
        *_device_ids_contradictions(settings),
    ]
    return [message for failed, message in checks if failed]


def _device_ids_contradictions(settings: ServerSettings) -> list[tuple[bool, str]]:
    if settings.device_ids is None:
        return []
    return [
        (
            settings.handler != "pipelined",
            "--device-ids needs the pipelined handler (its GPU cores)",
        ),
        (
            settings.workers == 1,
            "--device-ids needs fronts and cores: --workers 2 or more, or auto",
        ),
        (
            settings.device is not None,
            "--device-ids and --device exclude each other: each core's device is its GPU",
        ),
    ]


def parse_args(argv: list[str] | None = None) -> ServerSettings:
    """The command line, checked (exit code 2 and the reason on a contradiction)."""
    parser = _parser()
    namespace = parser.parse_args(argv)
    fields = {
        # SUPPRESS keeps "(default: None)" off --help: these may be absent from the namespace.
        **dict.fromkeys(("model", "device", "arch", "max_buffered_mb", "device_ids")),
        **vars(namespace),
    }
    try:
        return ServerSettings(**fields)
    except SettingsError as error:
        parser.error(str(error))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="ResNet image classification over Thrift, with the locked baseline handler "
        "or the pipelined (torchpipe_lite) handler on the same engine.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--handler",
        choices=("baseline", "pipelined"),
        default="pipelined",
        help="baseline: the reference's design, each request decoded and run at batch 1 under "
        "one engine lock, one pool thread per call; pipelined: the request's bytes go into a "
        "torchpipe_lite pipeline (decode, resize, batched model), no thread waits per call",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: all)")
    parser.add_argument(
        "--port", type=int, default=8888, help="TCP port the Thrift service listens on"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=20,
        help="handler threads for the work that waits: each baseline call runs on one; the "
        "pipelined handler uses them for stats() only",
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
        "stages) beside one GPU core process per GPU (--device-ids), each owning a model copy "
        "and the GPU stages and batching every front's requests; auto (the default): one "
        "front per two CPU cores, 2 to 8, where the model runs on a GPU, else one process. "
        "Baseline: N independent processes, each with its own model copy; auto: 1",
    )
    group.add_argument(
        "--device-ids",
        type=_device_ids,
        default=argparse.SUPPRESS,
        metavar="0,1",
        help="pipelined handler with fronts and cores: the GPUs (CUDA indices) to start one "
        "GPU core each on, the fronts spreading their requests over the cores, least "
        "outstanding work first (default: one core per visible GPU; on a machine without a "
        "GPU, one core on the CPU)",
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
    group.add_argument("--core-name", default=None, help=argparse.SUPPRESS)


def _workers(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None


def _device_ids(text: str) -> tuple[int, ...]:
    """``--device-ids``: distinct non-negative CUDA indices, comma-separated."""
    try:
        ids = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CUDA indices like 0,1, got {text!r}") from None
    if min(ids) < 0 or len(set(ids)) != len(ids):
        raise argparse.ArgumentTypeError(
            f"expected distinct non-negative CUDA indices like 0,1, got {text!r}"
        )
    return ids
