"""The main job: the locked baseline and the pipelined server, side by side, as the reference did.

    python -m benchmarks.compare                      # no GPU: a quick CPU run (the demo)
    python -m benchmarks.compare --total-number 10000 --concurrency 10,20 --processes 4
    python -m benchmarks.compare --workers 4 --mps    # 4 server processes on each side

Exports the model if missing, starts each handler's server in turn on the same model and images,
with the same number of server processes (one, as the reference, unless ``--workers``), drives
it at each concurrency with ``clients.client_qps``, samples the server's CPU, memory and GPU
use, prints the reference-style table and writes JSON + PNG under ``runs/`` (``--results-dir``),
named ``<date>-<device>-<commit>-<tag>`` so that no run overwrites another.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import logging
import platform
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import psutil

from benchmarks.gpu_monitor import GpuMonitor
from benchmarks.mps import MpsError, mps_daemon
from benchmarks.report import (
    REFERENCE_ROWS,
    REFERENCE_SETUP,
    format_table,
    write_outputs,
)
from benchmarks.resource_sampler import ResourceSampler
from benchmarks.result_files import claim_result_path, result_stem
from benchmarks.run_record import config_record, device_slug, run_row, setup_text
from benchmarks.server_figures import (
    batching_line,
    group_node_figures,
    server_stats,
)
from clients.client_qps import LoadTestError, run_load
from clients.images import DEFAULT_IMG_DIR, load_images
from service.server_process import (
    REPO_ROOT,
    ServerProcess,
    ServerStartError,
    free_port,
    service_command,
)

logger = logging.getLogger("benchmarks.compare")

HANDLERS = ("baseline", "pipelined")
SWEEP_LEVELS = (1, 2, 4, 8, 16, 32, 64)
#: A full run; what the reference measured with.
FULL = {"total_number": 10000, "warmup": 200, "processes": 4}
#: The quick run (the default without a GPU): few requests, so that ResNet50 on a 2-core CPU
#: ends in about two minutes (measured: ~10 QPS baseline, ~15 QPS pipelined there).
QUICK = {"total_number": 200, "warmup": 20, "processes": 1}
#: Printed under a run without a GPU: what the quick CPU run can show and what it cannot.
CPU_NOTE = (
    "note: no GPU here, so the model ran on the CPU, where its arithmetic sets the pace: both "
    "servers wait on the same cores, the ratio moves between runs, and it is not the ratio a "
    "GPU gives. This quick run shows that both handlers answer correctly under load, not what "
    "the scheduling gains on a GPU (benchmarks/README.md has those figures)."
)
READY_TIMEOUT_S = 600.0  # a GPU server converts the model and captures CUDA graphs first


def _levels(text: str) -> list[int]:
    levels = [int(part) for part in text.split(",") if part.strip()]
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of integers >= 1 is expected")
    return levels


def _handlers(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in names if name not in HANDLERS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"expected a list of {', '.join(HANDLERS)}")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; defaults that depend on the machine are resolved in ``resolve``."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=_levels, help="clients per run (default 10,20)")
    parser.add_argument("--total-number", type=int, help="timed calls per run (full: 10000)")
    parser.add_argument("--warmup", type=int, help="untimed calls first (full: 200)")
    parser.add_argument("--processes", type=int, help="client processes (full: 4; quick: 1)")
    parser.add_argument("--config", type=Path, help="pipelined TOML (default: the service's)")
    parser.add_argument("--model", type=Path, help="model file (default: models/<arch>.onnx)")
    parser.add_argument(
        "--arch", choices=("resnet50", "resnet18"), default="resnet50", help="model to export"
    )
    parser.add_argument("--img-dir", type=Path, default=DEFAULT_IMG_DIR)
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=REPO_ROOT / "runs",
        help="where the JSON and PNG go (benchmarks/results/ holds the committed figures)",
    )
    parser.add_argument(
        "--tag",
        help="the result file's label: <date>-<device>-<commit>-<tag>.json (default: quick, "
        "full or sweep); a name already taken gets -2, -3...",
    )
    parser.add_argument(
        "--handlers",
        type=_handlers,
        default=HANDLERS,
        help="comma-separated handlers to run, in order (default: baseline,pipelined)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port (service --workers), for both handlers: the "
        "pipelined handler's are fronts of one GPU core process (one more process) when 2 or more",
    )
    parser.add_argument(
        "--baseline-workers",
        type=int,
        help="the baseline's server processes, when they should differ from --workers (the "
        "table then shows no ratio between the two)",
    )
    parser.add_argument(
        "--mps",
        action="store_true",
        help="run both servers under a private CUDA MPS daemon (kernels of the --workers "
        "processes share the GPU instead of time-slicing it)",
    )
    parser.add_argument("--threads", type=int, help="server RPC threads (default: max(20, c))")
    parser.add_argument("--timeout-s", type=float, default=30.0, help="per-call client timeout")
    parser.add_argument("--quick", action="store_true", help="few requests (default w/o GPU)")
    parser.add_argument("--sweep", action="store_true", help=f"concurrency {SWEEP_LEVELS}")
    parser.add_argument("--ping-check", action="store_true", help="also measure ping QPS")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    return parser.parse_args(argv)


def resolve(args: argparse.Namespace, gpu: GpuMonitor) -> argparse.Namespace:
    """Fills the defaults that depend on the machine: a quick CPU run where there is no GPU."""
    args.quick = args.quick or not gpu.available
    preset = QUICK if args.quick else FULL
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.concurrency is None:
        args.concurrency = list(SWEEP_LEVELS) if args.sweep else [10, 20]
    if args.model is None:
        args.model = REPO_ROOT / "models" / f"{args.arch}.onnx"
    if args.threads is None:
        # Each server thread serves one connection at a time: fewer threads than clients would
        # leave clients waiting for a thread, not for the model.
        args.threads = max(20, *args.concurrency)
    if args.baseline_workers is None:
        args.baseline_workers = args.workers
    return args


def server_processes(handler: str, args: argparse.Namespace) -> int:
    """How many server processes ``handler`` runs with in this comparison."""
    return args.baseline_workers if handler == "baseline" else args.workers


def export_model(model: Path, arch: str) -> None:
    """Exports ``arch`` to ``model`` with the service's exporter when the file is missing."""
    if model.exists():
        logger.info("model %s present", model)
        return
    command = [sys.executable, "-m", "service.tools.export_model", "--arch", arch]
    command += ["--output", str(model)]
    logger.info("exporting the model: %s", " ".join(command))
    subprocess.run(command, check=True, cwd=REPO_ROOT)


def _server_command(
    handler: str, args: argparse.Namespace, port: int, workers: int
) -> tuple[list[str], int | None]:
    """The server's command line, and the supervisor's metrics port when there are workers."""
    command = service_command(
        handler, port, threads=args.threads, config=args.config, model=args.model
    )
    if workers == 1:
        return command, None
    metrics_port = free_port()
    command += ["--workers", str(workers), "--metrics-port", str(metrics_port)]
    return command, metrics_port


def _ping_rows(
    handler: str, args: argparse.Namespace, workers: int, load_settings: dict
) -> list[dict]:
    """The client's own ceiling against this server: ``ping`` calls at every concurrency."""
    rows = []
    for concurrency in args.concurrency:
        load = run_load(
            method="ping",
            request_client=concurrency,
            total_number=args.total_number,
            warmup=args.warmup,
            **load_settings,
        )
        rows.append(run_row(f"ping ({handler} server)", concurrency, load, None, workers))
        logger.info("ping, %d clients: %.0f calls/s", concurrency, load.qps)
    return rows


def _timed_rows(
    handler: str,
    args: argparse.Namespace,
    workers: int,
    load_settings: dict,
    server_pid: int,
    gpu: GpuMonitor,
) -> list[dict]:
    """One row per concurrency: the load's figures and the server's CPU, memory and GPU."""
    rows = []
    for concurrency in args.concurrency:
        sampler = ResourceSampler(server_pid, gpu=gpu)
        load = run_load(
            request_client=concurrency,
            total_number=args.total_number,
            warmup=args.warmup,
            on_timed_start=sampler.start,
            on_timed_end=sampler.stop,
            **load_settings,
        )
        rows.append(run_row(handler, concurrency, load, sampler.result, workers))
        logger.info(
            "%s, %d clients: %.1f QPS, TP50 %.1f ms, errors %d",
            handler,
            concurrency,
            load.qps,
            load.tp50_ms or float("nan"),
            load.errors,
        )
    return rows


def run_handler(
    handler: str,
    args: argparse.Namespace,
    images: list[bytes],
    gpu: GpuMonitor,
    log_dir: Path,
    ping_check: bool,
) -> tuple[list[dict], list[dict], dict]:
    """Starts one handler's server, drives it at every concurrency, stops it; returns the result
    rows, the ping rows and the server's stats."""
    port = free_port()
    workers = server_processes(handler, args)
    command, metrics_port = _server_command(handler, args, port, workers)
    ops_url = None if metrics_port is None else f"http://127.0.0.1:{metrics_port}"
    ready_url = ops_url and f"{ops_url}/health/ready"
    load_settings = {
        "port": port,
        "images": images,
        "processes": args.processes,
        "timeout_s": args.timeout_s,
        "progress": not args.no_progress,
    }
    with ServerProcess(
        command, host="127.0.0.1", port=port, log_path=log_dir / f"{handler}.log"
    ) as server:
        server.start(ready_timeout_s=READY_TIMEOUT_S, ready_url=ready_url)
        ping_rows = _ping_rows(handler, args, workers, load_settings) if ping_check else []
        rows = _timed_rows(handler, args, workers, load_settings, server.pid, gpu)
        stats = server_stats(port)
        if ops_url is not None:
            # ``stats`` above is the one worker that answered; the group's sums come from the
            # supervisor (nodes as summed counters: no batch-size histogram).
            stats["workers"] = workers
            stats["group_nodes"] = group_node_figures(f"{ops_url}/stats")
    return rows, ping_rows, stats


def main(argv: list[str] | None = None) -> int:
    """Runs the comparison; exits 1 when a server failed or any call failed."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    gpu = GpuMonitor.open()
    args = resolve(args, gpu)
    if args.total_number < max(args.concurrency):
        logger.error(
            "--total-number %d is below the concurrency %d: some clients would send nothing",
            args.total_number,
            max(args.concurrency),
        )
        return 2
    if not gpu.available:
        logger.info(
            "%s: quick CPU run with %s and %d calls per row; GPU utilisation is recorded as null",
            gpu.reason,
            args.arch,
            args.total_number,
        )
    try:
        export_model(args.model, args.arch)
    except subprocess.CalledProcessError as exc:
        logger.error("model export failed (exit %d): see its output above", exc.returncode)
        return 1
    images = load_images(args.img_dir)
    setup = setup_text(args, gpu, images)
    logger.info("%s", setup)
    log_dir = Path(tempfile.mkdtemp(prefix="compare-logs-"))
    logger.info("server logs: %s", log_dir)
    rows: list[dict] = []
    ping_rows: list[dict] = []
    server_stats: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        if args.mps:
            try:
                stack.enter_context(mps_daemon())
            except (MpsError, OSError, subprocess.SubprocessError) as exc:
                logger.error("--mps: %s", exc)
                return 2
        for index, handler in enumerate(args.handlers):
            try:
                handler_rows, handler_pings, server_stats[handler] = run_handler(
                    handler, args, images, gpu, log_dir, ping_check=args.ping_check and index == 0
                )
            except (ServerStartError, LoadTestError) as exc:
                logger.error("%s server: %s", handler, exc)
                return 1
            rows += handler_rows
            ping_rows += handler_pings
    _report(args, argv, gpu, images, setup, rows, ping_rows, server_stats)
    errors = sum(row["errors"] for row in rows + ping_rows)
    if errors:
        logger.error("%d calls failed: see errors_by_code in the JSON and %s", errors, log_dir)
    return 1 if errors else 0


def _report(
    args: argparse.Namespace,
    argv: list[str] | None,
    gpu: GpuMonitor,
    images: list[bytes],
    setup: str,
    rows: list[dict],
    ping_rows: list[dict],
    server_stats: dict[str, Any],
) -> None:
    """Print the table and the servers' batching, and write the JSON and PNG."""
    print(format_table(rows, setup=setup))
    for handler, stats in server_stats.items():
        print(batching_line(handler, stats))
    for row in ping_rows:
        print(
            f"{row['handler']}, {row['concurrency']} clients: {row['qps']:.0f} calls/s "
            f"(client CPU {row['client_cpu_percent']:.0f}%)"
        )
    if not gpu.available:
        print(CPU_NOTE)
    today = datetime.date.today().isoformat()
    label = args.tag or ("sweep" if args.sweep else "quick" if args.quick else "full")
    json_path = claim_result_path(args.results_dir, result_stem(device_slug(gpu), label))
    record = {
        "date": today,
        "device": device_slug(gpu),
        "gpu": gpu.names[0] if gpu.available else None,
        "gpu_count": len(gpu.names),
        "gpu_note": gpu.reason,
        "cpu_count": psutil.cpu_count(),
        "cpu_model": platform.processor() or platform.machine(),
        "config": config_record(args, images),
        "command": shlex.join(["python", "-m", "benchmarks.compare", *(argv or sys.argv[1:])]),
        "results": rows,
        "ping_check": ping_rows or None,
        "server_stats": server_stats,
        "reference": {"setup": REFERENCE_SETUP, "results": list(REFERENCE_ROWS)},
        "setup": setup,
    }
    write_outputs(record, json_path, sweep=args.sweep)


if __name__ == "__main__":
    sys.exit(main())
