"""One pipeline stage in several processes at once: how its throughput scales with batch size.

``python -m benchmarks.stage_contention [--stage gpu] [--processes 1,8] [--threads 1]
[--batch 1,4] [--mps] [--blocking-sync] [--json-dir DIR]``. Each process runs
``--threads`` threads, each with its own instance of the stage, calling it with ``--batch``
items at a time, as the service's workers do when each has a share of the clients. Stages:

- ``gpu``: the GPU-decode config's image stage,
  ``SyncTensor[Sequential[DecodeTensor,ResizeTensor,CvtColorTensor]]`` (JPEG -> 224x224 RGB);
- ``decode``: nvJPEG decode alone, ``SyncTensor[DecodeTensor]``;
- ``cpu``: the CPU image stages, decode to tensor;
- ``model``: the model stage as the GPU-decode config's model node sets it up
  (``SyncTensor[TorchTensor]``, fp16, CUDA graphs) on ``--model``, fed 224x224 uint8 images
  already on the GPU, as the GPU decode stage hands them over.

No Thrift, no scheduler: what the stage itself can do with batches of that size while the
other processes run it too. Prints images/s in all, ms per call, and CPU ms per image.
``--blocking-sync`` sets the CUDA runtime's ``cudaDeviceScheduleBlockingSync`` in each process
first, so library waits (nvJPEG's) sleep.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.synchronised import (
    check_ready,
    parse_counts,
    run_processes,
    wait_until,
    write_points,
)
from clients.images import load_images
from service.server_process import REPO_ROOT

STAGES = {
    "gpu": "SyncTensor[Sequential[DecodeTensor,ResizeTensor,CvtColorTensor]]",
    "decode": "SyncTensor[DecodeTensor]",
    "cpu": "Sequential[DecodeMat,ResizeMat,CvtColorMat,Mat2Tensor]",
    "model": "SyncTensor[TorchTensor]",
}
IMAGE_PARAMS = {"resize_h": 224, "resize_w": 224, "color": "rgb"}
#: The model stage runs with this config's model node parameters (precision, mean/std...).
MODEL_CONFIG = REPO_ROOT / "service" / "configs" / "resnet50_gpu_decode.toml"


def _blocking_sync() -> int:
    """cudaSetDeviceFlags(cudaDeviceScheduleBlockingSync) on the runtime PyTorch loaded."""
    import torch  # noqa: F401  (loads libcudart)

    with open("/proc/self/maps") as maps:
        path = next(line.split()[-1] for line in maps if "libcudart.so" in line)
    return ctypes.CDLL(path).cudaSetDeviceFlags(0x04)


def _inputs(stage: str) -> list[Any]:
    """What the stage is fed: the load tester's JPEGs, or GPU images for the model stage."""
    if stage != "model":
        return load_images(REPO_ROOT / "tests" / "data" / "images")
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 1, 3, 224, 224), dtype=torch.uint8, generator=generator)
    return [image.to(device) for image in images]


def _process(
    start_at: float,
    seconds: float,
    queue: Any,
    stage_name: str,
    params: dict[str, Any],
    threads: int,
    batch: int,
    blocking: bool,
) -> None:
    if blocking and _blocking_sync() != 0:
        raise RuntimeError("cudaSetDeviceFlags(cudaDeviceScheduleBlockingSync) failed")
    import torchpipe_lite as tp

    inputs = _inputs(stage_name)
    stages = [tp.create_backend(STAGES[stage_name], params) for _ in range(threads)]
    for stage in stages:  # warm-up: every input (every image size) once per instance
        for data in inputs:
            stage.forward([{"data": data}])
    check_ready(start_at)
    counts, busy_s = [0] * threads, [0.0] * threads

    def run(index: int) -> None:
        wait_until(start_at)
        step = 0
        while time.time() < start_at + seconds:
            first = step * batch
            items = [{"data": inputs[(first + k) % len(inputs)]} for k in range(batch)]
            began = time.perf_counter()
            stages[index].forward(items)
            busy_s[index] += time.perf_counter() - began
            counts[index] += batch
            step += 1

    workers = [threading.Thread(target=run, args=(index,)) for index in range(threads)]
    cpu_began = time.process_time()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    queue.put((sum(counts), sum(busy_s), time.process_time() - cpu_began))


def measure(
    stage: str,
    processes: int,
    threads: int,
    batch: int,
    seconds: float,
    *,
    blocking: bool = False,
    model: Path | None = None,
) -> dict[str, Any]:
    """One point: ``processes`` x ``threads`` stage instances, ``batch`` items per call."""
    if stage == "model":
        if model is None:
            raise ValueError("the model stage needs a model file")
        from service.service_config import load_service_config

        config = load_service_config(MODEL_CONFIG, model_override=model)
        params = config.engine_params(batch)  # every call carries exactly `batch` images
    else:
        params = dict(IMAGE_PARAMS)
    args = (stage, params, threads, batch, blocking)
    results = run_processes(_process, args, processes, seconds)
    images = sum(result[0] for result in results)
    return {
        "stage": STAGES[stage],
        "processes": processes,
        "threads": threads,
        "batch": batch,
        "blocking_sync": blocking,
        "images_per_s": images / seconds,
        "ms_per_call": 1000 * batch * sum(result[1] for result in results) / max(images, 1),
        "cpu_ms_per_image": 1000 * sum(result[2] for result in results) / max(images, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Measure every processes x threads x batch point; print and optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=sorted(STAGES), default="gpu", help="see above")
    parser.add_argument("--processes", type=parse_counts, default=[1, 8], help="e.g. 1,8")
    parser.add_argument("--threads", type=parse_counts, default=[1], help="instances per process")
    parser.add_argument("--batch", type=parse_counts, default=[1], help="items per call, e.g. 1,4")
    parser.add_argument("--seconds", type=float, default=6.0, help="timed seconds per point")
    parser.add_argument(
        "--model", type=Path, default=REPO_ROOT / "models" / "resnet50.onnx", help="model stage"
    )
    parser.add_argument("--mps", action="store_true", help="under a private CUDA MPS daemon")
    parser.add_argument("--blocking-sync", action="store_true", help="see the module doc")
    parser.add_argument(
        "--json-dir",
        type=Path,
        help="write <date>-<device>-<commit>-stage-contention-<stage>.json here",
    )
    args = parser.parse_args(argv)
    if args.stage == "model" and not args.model.is_file():
        parser.error(f"--model {args.model}: no such file (python -m service.tools.export_model)")
    from benchmarks.mps import mps_daemon

    rows = []
    with mps_daemon() if args.mps else contextlib.nullcontext():
        for processes in args.processes:
            for threads in args.threads:
                for batch in args.batch:
                    row = measure(
                        args.stage,
                        processes,
                        threads,
                        batch,
                        args.seconds,
                        blocking=args.blocking_sync,
                        model=args.model,
                    )
                    row["cuda_mps"] = args.mps
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    if args.json_dir:
        command = " ".join(["python -m benchmarks.stage_contention", *(argv or sys.argv[1:])])
        path = write_points(args.json_dir, f"stage-contention-{args.stage}", command, rows)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
