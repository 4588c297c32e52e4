"""The GPU decode stage in several processes at once: how far its batch-1 throughput scales.

``python -m benchmarks.decode_contention [--processes 1,8] [--threads 1,2] [--mps]
[--blocking-sync] [--json-dir benchmarks/results]``. Each process runs ``--threads`` threads,
each with its own instance of the GPU-decode config's stage
(``SyncTensor[Sequential[DecodeTensor,ResizeTensor,CvtColorTensor]]``; ``--stage cpu``: the CPU
stages, decode to tensor), decoding the load
tester's images one at a time, as the service's workers do at 40 clients. No Thrift, no model:
what the service's decode stage could do at best with batches of one. Prints images/s in all, ms
per batch, and CPU ms per image. ``--blocking-sync`` sets the CUDA runtime's
``cudaDeviceScheduleBlockingSync`` in each process first, so library waits (nvJPEG's) sleep.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import multiprocessing
import os
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

from clients.images import load_images

STAGES = {
    "gpu": "SyncTensor[Sequential[DecodeTensor,ResizeTensor,CvtColorTensor]]",
    "cpu": "Sequential[DecodeMat,ResizeMat,CvtColorMat,Mat2Tensor]",
}
STAGE_PARAMS = {"resize_h": 224, "resize_w": 224, "color": "rgb"}
#: Every process starts timing at the same moment, this long after launch (CUDA and nvJPEG
#: initialise first).
START_DELAY_S = float(os.environ.get("DECODE_CONTENTION_START_S", 25.0))


def _blocking_sync() -> int:
    """cudaSetDeviceFlags(cudaDeviceScheduleBlockingSync) on the runtime PyTorch loaded."""
    import torch  # noqa: F401  (loads libcudart)

    with open("/proc/self/maps") as maps:
        path = next(line.split()[-1] for line in maps if "libcudart.so" in line)
    return ctypes.CDLL(path).cudaSetDeviceFlags(0x04)


def _process(
    stage: str, threads: int, seconds: float, start_at: float, blocking: bool, queue: Any
) -> None:
    if blocking and _blocking_sync() != 0:
        raise RuntimeError("cudaSetDeviceFlags(cudaDeviceScheduleBlockingSync) failed")
    import torchpipe_lite as tp

    images = load_images(Path(__file__).resolve().parents[1] / "tests" / "data" / "images")
    stages = [tp.create_backend(STAGES[stage], STAGE_PARAMS) for _ in range(threads)]
    for stage in stages:  # warm-up: every image size once per instance
        for image in images:
            stage.forward([{"data": image}])
    counts, busy_s = [0] * threads, [0.0] * threads

    def run(index: int) -> None:
        threading.Event().wait(max(0.0, start_at - time.time()))
        step = 0
        while time.time() < start_at + seconds:
            began = time.perf_counter()
            stages[index].forward([{"data": images[step % len(images)]}])
            busy_s[index] += time.perf_counter() - began
            counts[index] += 1
            step += 1

    workers = [threading.Thread(target=run, args=(index,)) for index in range(threads)]
    cpu_began = time.process_time()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    queue.put((sum(counts), sum(busy_s), time.process_time() - cpu_began))


def measure(
    stage: str, processes: int, threads: int, seconds: float, blocking: bool
) -> dict[str, Any]:
    """One point: ``processes`` x ``threads`` stage instances decoding for ``seconds``."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    start_at = time.time() + START_DELAY_S
    children = [
        context.Process(target=_process, args=(stage, threads, seconds, start_at, blocking, queue))
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    results = [queue.get(timeout=START_DELAY_S + seconds + 120) for _ in children]
    for child in children:
        child.join()
    images = sum(result[0] for result in results)
    return {
        "stage": STAGES[stage],
        "processes": processes,
        "threads": threads,
        "blocking_sync": blocking,
        "images_per_s": images / seconds,
        "ms_per_batch": 1000 * sum(result[1] for result in results) / images,
        "cpu_ms_per_image": 1000 * sum(result[2] for result in results) / images,
    }


def main(argv: list[str] | None = None) -> int:
    """Measure every processes x threads point; print and optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--stage", choices=sorted(STAGES), default="gpu", help="the GPU or the CPU image stages"
    )
    parser.add_argument("--processes", default="1,8", help="process counts, e.g. 1,8")
    parser.add_argument("--threads", default="1,2", help="threads (instances) per process")
    parser.add_argument("--seconds", type=float, default=6.0, help="timed seconds per point")
    parser.add_argument("--mps", action="store_true", help="under a private CUDA MPS daemon")
    parser.add_argument("--blocking-sync", action="store_true", help="see the module doc")
    parser.add_argument("--json-dir", type=Path, help="write <date>-decode-contention.json here")
    args = parser.parse_args(argv)
    from benchmarks.mps import mps_daemon

    rows = []
    with mps_daemon() if args.mps else contextlib.nullcontext():
        for processes in map(int, args.processes.split(",")):
            for threads in map(int, args.threads.split(",")):
                row = measure(args.stage, processes, threads, args.seconds, args.blocking_sync)
                row["cuda_mps"] = args.mps
                print(json.dumps(row), flush=True)
                rows.append(row)
    if args.json_dir:
        path = args.json_dir / f"{date.today().isoformat()}-decode-contention-{args.stage}.json"
        path.write_text(json.dumps({"points": rows}, indent=2) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
