"""The service's pipeline without Thrift, in several processes at once: what the stages give.

``python -m benchmarks.pipeline_contention [--config service/configs/resnet50_gpu_decode.toml]
[--processes 8] [--callers 5,10] [--set NODE.KEY=VALUE ...] [--mps] [--json-dir DIR]``.
Each process builds the pipeline the pipelined handler builds from ``--config`` and runs
``--callers`` threads that each call it in a closed loop with the load tester's images, one
image per call, as the RPC threads of a ``--workers`` server do. 8 processes x 5 callers is
the main job's 40 clients without the RPC layer. Prints QPS, mean latency, CPU per request and
each node's mean batch, time per batch and queueing time per request over the timed window;
the gap to the main job's figures at the same concurrency is what Thrift, the handler and the
client add.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks.synchronised import (
    check_ready,
    parse_counts,
    run_processes,
    wait_until,
    write_points,
)
from benchmarks.tune import Setting, apply_point, parse_setting, render_toml
from clients.images import DEFAULT_IMG_DIR, load_images
from service.server_process import REPO_ROOT
from torchpipe_lite.extend import PipelineConfig, read_toml

DEFAULT_CONFIG = REPO_ROOT / "service" / "configs" / "resnet50_gpu_decode.toml"


class ProcessFigures(NamedTuple):
    """What one process measured over the timed window."""

    calls: int
    latency_s: float  # summed over its calls
    cpu_s: float
    nodes: dict[str, dict[str, float]]  # node_deltas()


def node_deltas(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Each node's items, batches, compute and queueing ms between two ``stats()`` snapshots."""
    nodes = {}
    for name, now in after.items():
        then = before[name]
        batches = now.executions - then.executions
        items = now.inferences - then.inferences
        nodes[name] = {
            "items": items,
            "batches": batches,
            "compute_ms": now.compute_time_ms_total - then.compute_time_ms_total,
            "queue_ms": now.queue_time_ms_total - then.queue_time_ms_total,
        }
    return nodes


def _process(
    start_at: float,
    seconds: float,
    queue: Any,
    pipeline_config: PipelineConfig,
    callers: int,
    img_dir: Path,
) -> None:
    import torchpipe_lite as tp

    pipeline = tp.pipe(pipeline_config)
    images = load_images(img_dir)
    for image in images:  # warm-up: every image size through every stage
        pipeline({"data": image})
    check_ready(start_at)
    calls, latency_s = [0] * callers, [0.0] * callers

    def run(index: int) -> None:
        wait_until(start_at)
        step = index
        while time.time() < start_at + seconds:
            began = time.perf_counter()
            pipeline({"data": images[step % len(images)]})
            latency_s[index] += time.perf_counter() - began
            calls[index] += 1
            step += 1

    threads = [threading.Thread(target=run, args=(index,)) for index in range(callers)]
    for thread in threads:
        thread.start()
    wait_until(start_at)
    before, cpu_began = pipeline.stats(), time.process_time()
    for thread in threads:
        thread.join()
    cpu_s = time.process_time() - cpu_began
    nodes = node_deltas(before, pipeline.stats())
    pipeline.close()
    queue.put(ProcessFigures(sum(calls), sum(latency_s), cpu_s, nodes))


def measure(
    pipeline_config: PipelineConfig, processes: int, callers: int, seconds: float, img_dir: Path
) -> dict[str, Any]:
    """One point: ``processes`` pipelines, each called by ``callers`` threads."""
    args = (pipeline_config, callers, img_dir)
    results: list[ProcessFigures] = run_processes(_process, args, processes, seconds)
    calls = sum(result.calls for result in results)
    nodes = {}
    for name, first in results[0].nodes.items():
        totals = {key: sum(result.nodes[name][key] for result in results) for key in first}
        nodes[name] = {
            "mean_batch": totals["items"] / max(totals["batches"], 1),
            "ms_per_batch": totals["compute_ms"] / max(totals["batches"], 1),
            "queue_ms_per_item": totals["queue_ms"] / max(totals["items"], 1),
        }
    return {
        "processes": processes,
        "callers": callers,
        "qps": calls / seconds,
        "mean_ms": 1000 * sum(result.latency_s for result in results) / max(calls, 1),
        "cpu_ms_per_request": 1000 * sum(result.cpu_s for result in results) / max(calls, 1),
        "nodes": nodes,
    }


def build_config(path: Path, model: Path, settings: list[Setting]) -> PipelineConfig:
    """The pipeline the pipelined handler builds from ``path``, with ``settings`` applied to
    the file's tables (the node names are the file's, as with ``benchmarks.tune``)."""
    from service.service_config import load_service_config

    for setting in settings:
        if len(setting.values) != 1:
            raise ValueError(f"--set {setting.name}: one value here (benchmarks.tune sweeps)")
    point = {setting.name: setting.values[0] for setting in settings}
    tables = apply_point(read_toml(path), settings, point)
    with tempfile.TemporaryDirectory() as scratch:  # loaded as the service loads a file
        adjusted = Path(scratch) / path.name
        adjusted.write_text(render_toml(tables))
        return load_service_config(adjusted, model_override=model).pipeline


def main(argv: list[str] | None = None) -> int:
    """Measure every processes x callers point; print and optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="service TOML")
    parser.add_argument("--model", type=Path, default=REPO_ROOT / "models" / "resnet50.onnx")
    parser.add_argument("--processes", type=parse_counts, default=[8], help="e.g. 4,8")
    parser.add_argument("--callers", type=parse_counts, default=[5], help="callers per process")
    parser.add_argument(
        "--set", type=parse_setting, action="append", default=[], help="NODE.KEY=VALUE"
    )
    parser.add_argument("--seconds", type=float, default=6.0, help="timed seconds per point")
    parser.add_argument("--img-dir", type=Path, default=DEFAULT_IMG_DIR)
    parser.add_argument("--mps", action="store_true", help="under a private CUDA MPS daemon")
    parser.add_argument(
        "--json-dir", type=Path, help="write <date>-<device>-<commit>-pipeline-contention.json here"
    )
    args = parser.parse_args(argv)
    if not args.model.is_file():
        parser.error(f"--model {args.model}: no such file (python -m service.tools.export_model)")
    try:
        pipeline_config = build_config(args.config, args.model, args.set)
    except (KeyError, ValueError) as exc:
        parser.error(str(exc))
    from benchmarks.mps import mps_daemon

    rows = []
    with mps_daemon() if args.mps else contextlib.nullcontext():
        for processes in args.processes:
            for callers in args.callers:
                row = measure(pipeline_config, processes, callers, args.seconds, args.img_dir)
                row["cuda_mps"] = args.mps
                print(json.dumps(row), flush=True)
                rows.append(row)
    if args.json_dir:
        command = " ".join(["python -m benchmarks.pipeline_contention", *(argv or sys.argv[1:])])
        config_text = args.config.read_text()
        path = write_points(
            args.json_dir, "pipeline-contention", command, rows, config_text=config_text
        )
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
