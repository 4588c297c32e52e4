"""Run one function in several spawned processes that start their timed work at one moment."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from queue import Empty
from typing import Any

#: The processes start timing together, this long after launch: CUDA, nvJPEG and CUDA-graph
#: capture initialise first (a ResNet50 with graphs for batches 1..32 takes ~20 s per process).
START_DELAY_S = float(os.environ.get("BENCH_START_DELAY_S", 30.0))


def wait_until(moment_s: float) -> None:
    """Block until the wall clock reaches ``moment_s`` (``time.time()`` seconds)."""
    threading.Event().wait(max(0.0, moment_s - time.time()))


def check_ready(start_at: float) -> None:
    """Raise when this process finished initialising after the common start: its timed window
    would be shorter than the others' and its count too low."""
    late_s = time.time() - start_at
    if late_s > 0:
        raise RuntimeError(
            f"this process was ready {late_s:.1f} s after the common start; set "
            f"BENCH_START_DELAY_S above {START_DELAY_S:.0f} s"
        )


def run_processes(
    target: Callable[..., Any],
    args: tuple,
    processes: int,
    seconds: float,
    *,
    start_delay_s: float = START_DELAY_S,
) -> list[Any]:
    """``target(start_at, seconds, queue, *args)`` in ``processes`` spawned processes; each puts
    one result on ``queue``. Returns the results (in arrival order) once every process ended;
    a process that exits with an error fails the whole point at once (RuntimeError).
    """
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    start_at = time.time() + start_delay_s
    children = [
        context.Process(target=target, args=(start_at, seconds, queue, *args))
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    deadline = start_at + seconds + 120
    results: list[Any] = []
    try:
        while len(results) < processes:
            try:
                results.append(queue.get(timeout=1.0))
            except Empty:
                failed = [child.exitcode for child in children if child.exitcode]
                if failed:
                    raise RuntimeError(
                        f"{len(failed)} of {processes} benchmark processes failed (exit codes "
                        f"{failed}); their traceback is above"
                    ) from None
                if time.time() > deadline:
                    raise TimeoutError("the benchmark processes gave no result in time") from None
    finally:
        for child in children:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
    return results


def parse_counts(text: str) -> list[int]:
    """``"1,8"`` -> ``[1, 8]`` for argparse; counts must be 1 or more."""
    try:
        values = [int(value) for value in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected counts like 1,8") from None
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: counts must be 1 or more")
    return values


def write_points(json_dir: Path, what: str, command: str, points: list[dict], **extra: Any) -> Path:
    """Write ``<date>-<device>-<commit>-<what>.json`` (device as in the main job: ``cpu`` or the
    GPU's name) under ``json_dir`` with the command line and the points; returns its path."""
    from benchmarks.gpu_monitor import GpuMonitor
    from benchmarks.report import write_json
    from benchmarks.result_files import claim_result_path, git_commit, result_stem
    from benchmarks.run_record import device_slug

    today, device = date.today().isoformat(), device_slug(GpuMonitor.open())
    path = claim_result_path(json_dir, result_stem(device, what))
    record = {"date": today, "git_commit": git_commit(), "device": device, "command": command}
    write_json(path, {**record, **extra, "points": points})
    return path
