"""Ours against the servers a user would pick instead: same machine, model, images and clients.

    python -m benchmarks.peers                       # no GPU: a quick CPU run
    python -m benchmarks.peers --concurrency 20,40 --total-number 6000 --processes 4
    python -m benchmarks.peers --peers litserve --sweep
    python -m benchmarks.peers --config service/configs/resnet50_gpu_decode.toml --workers 2 --mps

For our pipelined server (``python -m service``) and each peer available here (LitServe,
Triton), in turn: start it on a free loopback port with the same model file, the same engine
(our config's model node), the same image work (OpenCV per request, or with a GPU-decode
config its nvJPEG stage per batch: ``gpu_images.py``), the same batching (the model node's
``max`` and ``batching_timeout``) and the same number of server processes (``--workers``, one
by default; ``--mps`` runs them all under one CUDA MPS daemon), wait until it answers a real
image, drive it at each concurrency (ours with ``client_qps`` over Thrift, the peers with the
HTTP driver: the same clients, processes and figures), stop it. A peer whose runtime is
missing is skipped, saying why in one line; its rows are absent, never made up. One JSON + PNG
with every row goes under ``runs/`` (``--results-dir``).
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
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks.compare import export_model
from benchmarks.gpu_monitor import GpuMonitor
from benchmarks.mps import MpsError, mps_daemon
from benchmarks.peers.gpu_images import gpu_image_node
from benchmarks.peers.servers import (
    PEER_NAMES,
    Ours,
    RunningServer,
    RunSettings,
    make_peer,
    shown,
)
from benchmarks.report import format_table, write_outputs
from benchmarks.resource_sampler import ResourceSampler
from benchmarks.result_files import claim_result_path, git_commit, result_stem
from benchmarks.run_record import device_slug, run_row
from clients.client_qps import LoadTestError
from clients.images import DEFAULT_IMG_DIR, load_images
from service.server_process import REPO_ROOT, ServerStartError
from service.service_config import DEFAULT_CONFIG, load_service_config

logger = logging.getLogger("benchmarks.peers")

SWEEP_LEVELS = (1, 2, 4, 8, 16, 20, 32, 40, 64, 128)
#: A GPU run: the calls the committed H200 runs of benchmarks.compare made per row.
FULL = {"total_number": 6000, "warmup": 300, "processes": 4}
#: Without a GPU: ResNet50 on 2 cores answers a dozen or two calls a second. The warm-up is
#: longer than compare's: on the CPU the engine's first few calls in a process take several
#: times longer than the later ones, and a LitServe worker makes fewer, fuller batches of
#: the same calls than our pipeline does, so it would still be in them when timing starts.
QUICK = {"total_number": 200, "warmup": 80, "processes": 1}


def _levels(text: str) -> list[int]:
    levels = [int(part) for part in text.split(",") if part.strip()]
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of integers >= 1 is expected")
    return levels


def _peers(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in names if name not in PEER_NAMES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown peer {', '.join(unknown) or '(none)'}; expected a list of "
            f"{', '.join(PEER_NAMES)}"
        )
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; machine-dependent defaults are filled by ``resolve``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.peers",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--peers", type=_peers, default=PEER_NAMES, help="litserve,triton")
    parser.add_argument("--concurrency", type=_levels, help="clients per row (default 20,40)")
    parser.add_argument("--sweep", action="store_true", help=f"concurrency {SWEEP_LEVELS}")
    parser.add_argument("--total-number", type=int, help="timed calls per row (GPU: 6000)")
    parser.add_argument("--warmup", type=int, help="untimed calls first (GPU: 300)")
    parser.add_argument("--processes", type=int, help="client processes (GPU: 4; quick: 1)")
    parser.add_argument("--quick", action="store_true", help="few calls (default w/o GPU)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="our pipeline TOML")
    parser.add_argument("--model", type=Path, help="model file (default: models/<arch>.onnx)")
    parser.add_argument("--arch", choices=("resnet50", "resnet18"), default="resnet50")
    parser.add_argument("--workers", type=int, default=1, help="server processes, each side")
    parser.add_argument(
        "--mps", action="store_true", help="one CUDA MPS daemon for every server of the run"
    )
    parser.add_argument("--img-dir", type=Path, default=DEFAULT_IMG_DIR)
    parser.add_argument("--timeout-s", type=float, default=30.0, help="per-call client timeout")
    parser.add_argument(
        "--litserve-fast-queue",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="LitServe's ZeroMQ queues (its docs: for more than 100 requests/s)",
    )
    parser.add_argument("--tritonserver", help="the tritonserver binary (default: searched)")
    parser.add_argument("--results-dir", type=Path, default=REPO_ROOT / "runs")
    parser.add_argument("--tag", help="result file name: <date>-<device>-<commit>-peers[-<tag>]")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    return parser.parse_args(argv)


def resolve(args: argparse.Namespace, gpu: GpuMonitor) -> argparse.Namespace:
    """A quick CPU run where there is no GPU; the concurrency levels; the model path."""
    args.quick = args.quick or not gpu.available
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.concurrency is None:
        args.concurrency = list(SWEEP_LEVELS) if args.sweep else [20, 40]
    if args.model is None:
        args.model = REPO_ROOT / "models" / f"{args.arch}.onnx"
    args.model = args.model.resolve()
    args.config = args.config.resolve()
    return args


def batching(config: Path, model: Path) -> tuple[int, float]:
    """Our model node's batch limit and batching timeout (ms): the peers batch the same."""
    node = load_service_config(config, model).model
    return node.max_batch or 1, node.batching_timeout_ms


def image_work(config: Path, model: Path) -> str:
    """What every row does to the images before the model, for the record."""
    node = gpu_image_node(load_service_config(config, model))
    if node is None:
        return "OpenCV decode, resize and colour on the CPU, per request"
    return f"on the GPU, per batch: [{node.name}] {node.backend}"


class MachineCpu:
    """The whole machine's busy CPU time over the timed phase, in % of one core: what the
    server and the clients used plus anything else running here (a shared machine's other
    work shows as ``other_cpu_percent`` in the row)."""

    def __init__(self) -> None:
        self._start: tuple[float, float] = (0.0, 0.0)
        self.percent: float | None = None

    @staticmethod
    def _now() -> tuple[float, float]:
        times = psutil.cpu_times()
        busy = ("user", "nice", "system", "irq", "softirq")
        return time.perf_counter(), sum(getattr(times, name, 0.0) for name in busy)

    def start(self) -> None:
        """Opens the window."""
        self._start = self._now()

    def stop(self) -> None:
        """Closes the window and sets ``percent``."""
        (wall_start_s, busy_start_s), (wall_s, busy_s) = self._start, self._now()
        self.percent = 100.0 * (busy_s - busy_start_s) / max(wall_s - wall_start_s, 1e-9)


def drive(
    server: RunningServer, args: argparse.Namespace, images: list[bytes], gpu: GpuMonitor
) -> list[dict[str, Any]]:
    """Loads ``server`` at each concurrency; one row each, with who it is and where it ran."""
    rows = []
    for concurrency in args.concurrency:
        sampler = ResourceSampler(server.process.pid, gpu=gpu)
        machine = MachineCpu()

        def started(sampler: ResourceSampler = sampler, machine: MachineCpu = machine) -> None:
            machine.start()
            sampler.start()

        def ended(sampler: ResourceSampler = sampler, machine: MachineCpu = machine) -> None:
            sampler.stop()
            machine.stop()

        load = server.load(
            images=images,
            request_client=concurrency,
            total_number=args.total_number,
            warmup=args.warmup,
            processes=args.processes,
            timeout_s=args.timeout_s,
            progress=not args.no_progress,
            on_timed_start=started,
            on_timed_end=ended,
        )
        row = run_row(server.name, concurrency, load, sampler.result, server.server_processes)
        other = None
        if machine.percent is not None and row["server_cpu_percent"] is not None:
            other = machine.percent - row["server_cpu_percent"] - load.client_cpu_percent
        row.update(
            machine_cpu_percent=machine.percent,
            other_cpu_percent=other,
            version=server.version,
            protocol=server.protocol,
            settings=server.settings,
            server_tree_processes=server.tree_processes(),
            device=server.device,
        )
        rows.append(row)
        logger.info(
            "%s, %d clients: %.1f QPS, TP99 %.1f ms, errors %d %s; CPU of other work here: %s",
            server.name,
            concurrency,
            load.qps,
            load.tp99_ms or float("nan"),
            load.errors,
            load.errors_by_code or "",
            "n/a" if other is None else f"{other:.0f}% of one core",
        )
    return rows


def _setup(args: argparse.Namespace, gpu: GpuMonitor, images: list[bytes], peers: str) -> str:
    where = f"GPU {gpu.names[0]}" if gpu.available else f"no GPU ({gpu.reason})"
    return (
        f"{where}, {psutil.cpu_count()} logical CPU cores; {args.arch} ({args.model.name}); "
        f"{'quick' if args.quick else 'full'} run: {args.total_number} timed calls per row "
        f"after {args.warmup} warm-up, {args.processes} client process(es); {len(images)} "
        f"images; {args.workers} server process(es) on each side; pipelined vs {peers}"
    )


def main(argv: list[str] | None = None) -> int:
    """Runs the comparison. Exit 0: every server that ran answered every call; 1: a server
    failed to start or a call failed; 2: a bad command line, or no requested peer can run."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    peers = [make_peer(name, tritonserver=args.tritonserver) for name in args.peers]
    skipped = []
    for peer in peers:
        reason = peer.unavailable()
        if reason is not None:
            logger.warning("%s: skipped, its rows are not in this run: %s", peer.name, reason)
            skipped.append({"peer": peer.name, "reason": reason})
    runnable = [peer for peer in peers if peer.unavailable() is None]
    if not runnable:
        logger.error("nothing to compare against: no requested peer can run here")
        return 2
    gpu = GpuMonitor.open()
    args = resolve(args, gpu)
    if args.total_number < max(args.concurrency):
        logger.error("--total-number %d is below the concurrency", args.total_number)
        return 2
    try:
        export_model(args.model, args.arch)
    except subprocess.CalledProcessError as exc:
        logger.error("model export failed (exit %d)", exc.returncode)
        return 1
    images = load_images(args.img_dir)
    max_batch, timeout_ms = batching(args.config, args.model)
    log_dir = Path(tempfile.mkdtemp(prefix="peers-logs-"))
    import torch  # after the export: only to pick the peers' device as our engine does

    run = RunSettings(
        config=args.config,
        model=args.model,
        device="cuda" if torch.cuda.is_available() else "cpu",
        workers=args.workers,
        max_batch_size=max_batch,
        batch_timeout_ms=timeout_ms,
        threads=max(20, *args.concurrency),
        probe_image=images[0],
        log_dir=log_dir,
        litserve_fast_queue=args.litserve_fast_queue,
    )
    setup = _setup(args, gpu, images, ", ".join(p.name for p in runnable))
    logger.info("%s; server logs: %s", setup, log_dir)
    try:
        rows, servers, failed = run_each(run, [Ours(), *runnable], args, images, gpu)
    except MpsError as exc:
        logger.error("--mps: %s", exc)
        return 2
    against = [p.name for p in runnable if p.name not in failed]
    print(format_table(rows, setup=setup, against=against))
    for server in servers:
        print(
            f"{server['name']}: {server['version']}, {server['protocol']}; "
            f"{server['server_processes']} server process(es) ({server['tree_processes']} "
            f"in its tree); device {server['device']}; {server['settings']}"
        )
    for skip in skipped:
        print(f"{skip['peer']}: not run here: {skip['reason']}")
    today = datetime.date.today().isoformat()
    stem = result_stem(device_slug(gpu), "peers" + (f"-{args.tag}" if args.tag else ""))
    record = {
        "date": today,
        "git_commit": git_commit(),
        "device": device_slug(gpu),
        "gpu": gpu.names[0] if gpu.available else None,
        "gpu_note": gpu.reason,
        "cpu_count": psutil.cpu_count(),
        "cpu_model": platform.processor() or platform.machine(),
        "command": shlex.join(["python", "-m", "benchmarks.peers", *(argv or sys.argv[1:])]),
        "setup": setup,
        "same_server_processes": len({row["server_processes"] for row in rows}) <= 1,
        "mps": args.mps,
        "config": shown(args.config),
        "model": shown(args.model),
        "arch": args.arch,
        "images": len(images),
        "quick": args.quick,
        "batching": {"max_batch_size": max_batch, "batch_timeout_ms": timeout_ms},
        "image_work": image_work(args.config, args.model),
        "servers": servers,
        "skipped": skipped,
        "failed": failed,
        "ratios_against": against,
        "results": rows,
    }
    write_outputs(record, claim_result_path(args.results_dir, stem), sweep=args.sweep)
    errors = sum(row["errors"] for row in rows)
    if errors:
        logger.error("%d calls failed: see errors_by_code in the JSON and %s", errors, log_dir)
    return 1 if errors or failed else 0


def run_each(
    run: RunSettings,
    kinds: list[Any],
    args: argparse.Namespace,
    images: list[bytes],
    gpu: GpuMonitor,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """Starts, drives and stops each server in turn (inside one MPS daemon with ``--mps``):
    the rows, the server records, and the names of those that failed."""
    rows: list[dict[str, Any]] = []
    servers: list[dict[str, Any]] = []
    failed: list[str] = []
    with contextlib.ExitStack() as run_stack:
        if args.mps:
            try:
                run_stack.enter_context(mps_daemon())
            except (OSError, subprocess.SubprocessError) as exc:
                raise MpsError(str(exc)) from exc
        for kind in kinds:
            try:
                with contextlib.ExitStack() as stack:
                    server = kind.start(run, stack)
                    rows += drive(server, args, images, gpu)
                    servers.append(_server_record(server))
            except (ServerStartError, LoadTestError, OSError) as exc:
                logger.error("%s: %s (log: %s)", kind.name, exc, run.log_dir)
                failed.append(kind.name)
    return rows, servers, failed


def _server_record(server: RunningServer) -> dict[str, Any]:
    return {
        "name": server.name,
        "version": server.version,
        "protocol": server.protocol,
        "settings": server.settings,
        "server_processes": server.server_processes,
        "tree_processes": server.tree_processes(),
        "device": server.device,
        "stats": server.stats(),
    }
