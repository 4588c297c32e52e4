"""Decode-stage throughput: the image stages alone, images/s and CPU time per image.

Run: ``python -m benchmarks.decode_throughput [--img-dir DIR] [--seconds 2]
[--json-dir DIR]``. The images are the load tester's (longest side 640, q95).

Per batch size, each on one backend instance called directly (no scheduler):
- ``nvjpeg``: ``torchvision.io.decode_jpeg(list, device="cuda")`` and a stream sync, the floor
  under the GPU stage (GPU only);
- ``gpu stage``: the GPU-decode config's stage,
  ``SyncTensor[Sequential[DecodeTensor,ResizeTensor,CvtColorTensor]]`` to 224x224 RGB (GPU only);
- ``cpu stage``: ``DecodeMat`` then ``Sequential[ResizeMat,CvtColorMat,Mat2Tensor]``, one thread.

CPU time is the process's (``time.process_time``) per image: the share of a core the stage
costs, which is what limits a server process (each spinning CUDA wait counts here too).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import torch

import torchpipe_lite as tp
from benchmarks.report import name_slug
from benchmarks.result_files import LOCAL_RESULTS_DIR, claim_result_path, git_commit, result_stem
from clients.images import load_images

logger = logging.getLogger("benchmarks.decode_throughput")

BATCHES = (1, 2, 16)
GPU_STAGE = "SyncTensor[Sequential[DecodeTensor,ResizeTensor,CvtColorTensor]]"
STAGE_PARAMS = {"resize_h": 224, "resize_w": 224, "color": "rgb"}


def measure(step: Callable[[int], None], images_per_step: int, seconds: float) -> dict:
    """Images/s and CPU ms per image of ``step(k)`` run back to back for about ``seconds``."""
    for warm in range(3):
        step(warm)
    steps = 0
    wall_began, cpu_began = time.perf_counter(), time.process_time()
    while steps < 10 or time.perf_counter() - wall_began < seconds:
        step(steps)
        steps += 1
    wall_s = time.perf_counter() - wall_began
    images = steps * images_per_step
    return {
        "images_per_s": images / wall_s,
        "cpu_ms_per_image": 1000 * (time.process_time() - cpu_began) / images,
    }


def nvjpeg_step(images: list[bytes], batch: int) -> Callable[[int], None]:
    from torchvision.io import ImageReadMode, decode_jpeg

    encoded = [torch.frombuffer(bytearray(image), dtype=torch.uint8) for image in images]
    device = torch.device("cuda")

    def step(k: int) -> None:
        chosen = [encoded[(k * batch + i) % len(encoded)] for i in range(batch)]
        decode_jpeg(chosen, mode=ImageReadMode.RGB, device=device)
        torch.cuda.current_stream(device).synchronize()

    return step


def stage_step(stages: list[tp.Backend], images: list[bytes], batch: int) -> Callable[[int], None]:
    def step(k: int) -> None:
        items = [{"data": images[(k * batch + i) % len(images)]} for i in range(batch)]
        for stage in stages:
            stage.forward(items)
            for item in items:
                item["data"] = item.pop("result")

    return step


def main(argv: list[str] | None = None) -> int:
    """Measure, print the table, write the JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decode_throughput")
    parser.add_argument("--img-dir", default="tests/data/images")
    parser.add_argument("--seconds", type=float, default=2.0, help="per figure")
    parser.add_argument(
        "--json-dir",
        default=str(LOCAL_RESULTS_DIR),
        help="where the JSON goes (the default is ignored by git)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    images = load_images(args.img_dir)
    on_gpu = torch.cuda.is_available()
    if not on_gpu:
        logger.warning("no CUDA here: measuring the CPU stage only")
    kinds: dict[str, Callable[[int], Callable[[int], None]]] = {}
    if on_gpu:
        gpu_stage = [tp.create_backend(GPU_STAGE, {**STAGE_PARAMS, "max": max(BATCHES)})]
        kinds["nvjpeg"] = lambda batch: nvjpeg_step(images, batch)
        kinds["gpu stage"] = lambda batch: stage_step(gpu_stage, images, batch)
    cpu_stages = [
        tp.create_backend("DecodeMat", {}),
        tp.create_backend("Sequential[ResizeMat,CvtColorMat,Mat2Tensor]", STAGE_PARAMS),
    ]
    kinds["cpu stage"] = lambda batch: stage_step(cpu_stages, images, batch)

    figures = []
    for kind, make_step in kinds.items():
        for batch in BATCHES:
            logger.info("%s, batch %d: measuring", kind, batch)
            figures.append(
                {"kind": kind, "batch": batch, **measure(make_step(batch), batch, args.seconds)}
            )

    device = torch.cuda.get_device_name(0) if on_gpu else "cpu"
    mean_kib = sum(map(len, images)) / len(images) / 1024
    print(f"\nDecode stages to 224x224 RGB, {device}, {len(images)} images ({mean_kib:.0f} KiB)")
    print(f"{'stage':<10} {'batch':>5} {'images/s':>10} {'CPU ms/image':>13}")
    for row in figures:
        print(
            f"{row['kind']:<10} {row['batch']:>5} {row['images_per_s']:>10,.0f}"
            f" {row['cpu_ms_per_image']:>13.3f}"
        )
    slug = name_slug(device)
    output = claim_result_path(Path(args.json_dir), result_stem(slug, "decode-stages"))
    record = {
        "date": date.today().isoformat(),
        "git_commit": git_commit(),
        "device": device,
        "torch": torch.__version__,
        "images": len(images),
        "image_mean_kib": mean_kib,
        "seconds_per_figure": args.seconds,
        "figures": figures,
        "command": "python -m benchmarks.decode_throughput",
    }
    output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
