"""The CPU image stages in this process's threads against the same stages in child processes.

``python -m benchmarks.process_stages [--instances 2,8] [--callers 16] [--seconds 5]
[--repeats 2] [--json benchmarks/results/...json]``

One pipeline node, JPEG bytes to a 224x224 RGB tensor
(``Sequential[DecodeMat,ResizeMat,CvtColorMat,Mat2Tensor]``), with ``--instances`` instances:
``threads`` runs them on this process's threads, ``processes`` wraps the same stages in
``Process[...]`` (each instance a child process). ``--callers`` threads call the node as the
RPC threads of a server do. Prints images/s and the CPU time *this* process spends per image
(``time.process_time``, children excluded): what is left for the rest of a server, the RPC
layer, batching and the model, in the one process that owns the GPU. The two layouts
alternate, ``--repeats`` times each, in one run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torchpipe_lite as tp
from benchmarks.synchronised import parse_counts
from clients.images import DEFAULT_IMG_DIR, load_images

STAGES = "Sequential[DecodeMat,ResizeMat,CvtColorMat,Mat2Tensor]"
LAYOUTS = {"threads": STAGES, "processes": f"Process[{STAGES}]"}


@dataclass(frozen=True)
class Point:
    """One measured layout."""

    layout: str
    instances: int
    callers: int
    images: int
    images_per_s: float
    parent_cpu_us_per_image: float
    mean_batch: float


def measure(layout: str, instances: int, args: argparse.Namespace, images: list[bytes]) -> Point:
    """Run ``layout`` with ``instances`` instances for ``args.seconds``; its figures."""
    config = {
        "decode": {
            "backend": LAYOUTS[layout],
            "instance_num": instances,
            "max": args.max_batch,
            "resize_h": 224,
            "resize_w": 224,
            "color": "rgb",
        }
    }
    with tp.pipe(config) as model:
        for image in images:  # warm every path once
            model({"data": image}, strict=True)
        stop = threading.Event()
        counts = [0] * args.callers

        def call(index: int) -> None:
            position = index
            while not stop.is_set():
                model({"data": images[position % len(images)]}, strict=True)
                counts[index] += 1
                position += 1

        callers = [threading.Thread(target=call, args=(i,)) for i in range(args.callers)]
        before = model.stats()["decode"]
        cpu_start_s, start_s = time.process_time(), time.perf_counter()
        for caller in callers:
            caller.start()
        stop.wait(args.seconds)
        stop.set()
        for caller in callers:
            caller.join()
        wall_s, cpu_s = time.perf_counter() - start_s, time.process_time() - cpu_start_s
        after = model.stats()["decode"]
    done = sum(counts)
    batches = after.executions - before.executions
    return Point(
        layout=layout,
        instances=instances,
        callers=args.callers,
        images=done,
        images_per_s=done / wall_s,
        parent_cpu_us_per_image=cpu_s / done * 1e6,
        mean_batch=(after.inferences - before.inferences) / batches if batches else 0.0,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.process_stages")
    parser.add_argument("--instances", type=parse_counts, default=[2], help="e.g. 2,8")
    parser.add_argument("--callers", type=int, default=16, help="threads calling the node")
    parser.add_argument("--max-batch", type=int, default=4, help="the node's max")
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per point")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each layout, alternating")
    parser.add_argument("--img-dir", type=Path, default=DEFAULT_IMG_DIR)
    parser.add_argument("--json", type=Path, help="write the points here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    args = parse_args(argv)
    images = load_images(args.img_dir)
    points = []
    print(f"{os.cpu_count()} CPUs; {len(images)} images from {args.img_dir}")
    header = ("layout", "instances", "images/s", "parent CPU us/image", "batch")
    print(f"{header[0]:<10} {header[1]:>9} {header[2]:>9} {header[3]:>20} {header[4]:>6}")
    for instances in args.instances:
        for _ in range(args.repeats):
            for layout in LAYOUTS:
                point = measure(layout, instances, args, images)
                points.append(point)
                print(
                    f"{layout:<10} {instances:>9} {point.images_per_s:>9.0f} "
                    f"{point.parent_cpu_us_per_image:>20.0f} {point.mean_batch:>6.2f}"
                )
    if args.json:
        record = {
            "benchmark": "process_stages",
            "date": time.strftime("%Y-%m-%d"),
            "cpus": os.cpu_count(),
            "images": len(images),
            "img_dir": str(args.img_dir),
            "seconds": args.seconds,
            "points": [asdict(point) for point in points],
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
