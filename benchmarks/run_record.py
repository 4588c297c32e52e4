"""What a comparison run records: its rows, its one-line setup and its configuration."""

from __future__ import annotations

import argparse
import platform
from pathlib import Path
from typing import Any

import psutil

from benchmarks.gpu_monitor import GpuMonitor
from benchmarks.report import name_slug
from benchmarks.resource_sampler import ResourceUse
from benchmarks.result_files import git_commit
from clients.load_result import LoadResult
from service.server_process import REPO_ROOT


def device_slug(gpu: GpuMonitor) -> str:
    """``cpu`` or the first GPU's name in lower case, e.g. ``nvidia-h100-80gb-hbm3``."""
    if not gpu.available:
        return "cpu"
    return name_slug(gpu.names[0])


def run_row(
    handler: str, concurrency: int, load: LoadResult, use: ResourceUse | None, processes: int
) -> dict:
    """One row of the results: a handler at one concurrency, with its process count."""
    return {
        "handler": handler,
        "concurrency": concurrency,
        "server_processes": processes,
        "requests": load.requests,
        "qps": load.qps,
        "tp50_ms": load.tp50_ms,
        "tp90_ms": load.tp90_ms,
        "tp99_ms": load.tp99_ms,
        "mean_ms": load.mean_ms,
        "errors": load.errors,
        "errors_by_code": load.errors_by_code,
        "server_cpu_percent": use.cpu_percent if use else None,
        "server_rss_mib": use.rss_mib_max if use else None,
        "gpu_util_percent": use.gpu_util_percent if use else None,
        "gpu_memory_mib_max": use.gpu_memory_mib_max if use else None,
        "client_cpu_percent": load.client_cpu_percent,
        "client_processes": load.processes,
        "wall_s": load.wall_s,
    }


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (results are committed)."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(REPO_ROOT)) if resolved.is_relative_to(REPO_ROOT) else str(path)


def setup_text(args: argparse.Namespace, gpu: GpuMonitor, images: list[bytes]) -> str:
    """The one-line description of a run printed above its table and kept in its JSON."""
    from service.service_config import DEFAULT_CONFIG

    where = f"GPU {gpu.names[0]}" if gpu.available else f"no GPU ({gpu.reason})"
    mode = "quick" if args.quick else "full"
    return (
        f"{where}, {psutil.cpu_count()} logical CPU cores; {args.arch} ({_shown(args.model)}); "
        f"{mode} run: {args.total_number} timed calls per row after {args.warmup} warm-up, "
        f"{args.processes} client process(es); {len(images)} images from {_shown(args.img_dir)}; "
        f"pipelined server: {args.workers} process(es)"
        + (" (fronts) and 1 GPU core process" if args.workers > 1 else "")
        + ", "
        f"{_shown(args.config or DEFAULT_CONFIG)}; baseline: {args.baseline_workers} process(es)"
        + ("; both under CUDA MPS" if args.mps else "")
    )


def config_record(args: argparse.Namespace, images: list[bytes]) -> dict[str, Any]:
    """What a run was set up with, as its JSON keeps it (the config file's text included)."""
    from service.service_config import DEFAULT_CONFIG

    config_path = args.config or DEFAULT_CONFIG
    return {
        "git_commit": git_commit(),
        "pipelined_config": _shown(config_path),
        "pipelined_config_text": Path(config_path).read_text(),
        "model": _shown(args.model),
        "arch": args.arch,
        "quick": args.quick,
        "concurrency": args.concurrency,
        "total_number": args.total_number,
        "warmup": args.warmup,
        "client_processes": args.processes,
        "server_threads": args.threads,
        "pipelined_workers": args.workers,
        "baseline_workers": args.baseline_workers,
        "pipelined_core_process": args.workers > 1,
        "cuda_mps": args.mps,
        "img_dir": _shown(args.img_dir),
        "images": len(images),
        "image_mean_kib": sum(map(len, images)) / len(images) / 1024,
        "python": platform.python_version(),
    }
