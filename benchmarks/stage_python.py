"""The GPU image stage's own per-batch Python, timed on the CPU with its CUDA calls stood in for.

``python -m benchmarks.stage_python [--batches 8,16,32] [--repeats 5] [--profile]``

The GPU image stage (``Sequential[DecodeTensor,ResizeTensor,CvtColorTensor]``) spends part of
each batch in the interpreter around nvJPEG: header reads and size checks, staging the bytes,
the corrupt-JPEG scan, per-item bookkeeping, the resize's padding and regions. While that runs,
the GPU waits, and so does every other thread that needs the interpreter lock. Here the same
code runs on the CPU with the photographs' real bytes, and only what would run on the GPU is
replaced: nvJPEG returns cached tiny images of the declared aspect (1/16 of each side; the
resize target shrinks by as much, so the same resize path is taken), and the device search
for markers returns the positions found once per batch with NumPy. What is timed is then the
stage's Python and its torch calls' dispatch on tiny tensors, close to what each batch costs
the interpreter on the GPU box, minus the CUDA launch overhead itself.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time
from typing import Any

import numpy as np
import torch

from benchmarks.synchronised import parse_counts
from clients.images import DEFAULT_IMG_DIR, load_images
from torchpipe_lite.backends.builtin import Sequential
from torchpipe_lite.backends.image.image_gpu import CvtColorTensor, DecodeTensor, ResizeTensor
from torchpipe_lite.backends.image.image_header import ImageHeader

#: Each side of a stand-in decoded image (and of the resize target) is this much smaller.
SHRINK = 16
OUTPUT_SIDE = 224


class StandInDecode(DecodeTensor):
    """DecodeTensor on the CPU: nvJPEG and the device-side marker search are stand-ins."""

    def _decode_device(self, params: dict[str, Any]) -> torch.device:
        self._images: dict[tuple[int, int, int], torch.Tensor] = {}
        self._markers: dict[tuple[int, ...], np.ndarray] = {}
        return torch.device("cpu")

    def _search_markers(self, staged: torch.Tensor, buffers: list[Any]):
        key = tuple(map(id, buffers))
        found = self._markers.get(key)
        if found is None:  # once per distinct batch, untimed after the warm-up
            data = staged.numpy()
            found = np.flatnonzero((data[:-1] == 0xFF) & (data[1:] != 0))
            self._markers[key] = found
        return lambda: found

    def _nvjpeg(self, encoded: list[torch.Tensor], headers: list[ImageHeader]) -> list:
        images = []
        for header in headers:
            key = (3, max(1, header.height // SHRINK), max(1, header.width // SHRINK))
            image = self._images.get(key)
            if image is None:
                image = self._images[key] = torch.zeros(key, dtype=torch.uint8)
            images.append(image)
        return images


class BatchedResize(ResizeTensor):
    """ResizeTensor taking its GPU path (one resize for the whole batch) on CPU tensors."""

    batched_on = frozenset({"cpu", "cuda"})


def stand_in_stage() -> Sequential:
    """The GPU image stage with the stand-ins, initialised as the GPU-decode config's."""
    stage = Sequential()
    stage.children = [StandInDecode(), BatchedResize(), CvtColorTensor()]
    side = OUTPUT_SIDE // SHRINK
    stage.init({"resize_h": side, "resize_w": side, "color": "rgb"})
    return stage


def batches_of(images: list[bytes], batch: int, count: int) -> list[list[bytes]]:
    """``count`` batches of ``batch`` photographs, cycling through ``images``."""
    return [[images[(k * batch + i) % len(images)] for i in range(batch)] for k in range(count)]


def time_per_batch_us(
    stage: Sequential, batches: list[list[bytes]], repeats: int
) -> tuple[float, list[float]]:
    """Median over ``repeats`` of this thread's CPU microseconds per ``stage.forward``, each
    repeat running every batch once (after one untimed pass)."""
    for images in batches:  # warm-up, and the stand-ins' caches
        stage.forward([{"data": data} for data in images])
    per_repeat = []
    for _ in range(repeats):
        items = [[{"data": data} for data in images] for images in batches]
        began = time.thread_time()
        for batch in items:
            stage.forward(batch)
        per_repeat.append(1e6 * (time.thread_time() - began) / len(items))
    for batch in items:
        if any("result" not in item for item in batch):
            raise RuntimeError("the stand-in stage left an item without a result")
    return statistics.median(per_repeat), per_repeat


def measure(
    images: list[bytes], batch_sizes: list[int], repeats: int, batches_per_repeat: int = 20
) -> list[dict[str, Any]]:
    """One row per batch size: the stand-in stage's CPU microseconds per batch and per image.
    Torch runs its CPU kernels on this thread alone meanwhile, so that the thread's CPU time
    is the stage's and not other threads' spinning."""
    stage = stand_in_stage()
    rows = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        timed = [
            time_per_batch_us(stage, batches_of(images, batch, batches_per_repeat), repeats)
            for batch in batch_sizes
        ]
    finally:
        torch.set_num_threads(threads)
    for batch, (median_us, per_repeat) in zip(batch_sizes, timed, strict=True):
        rows.append(
            {
                "batch": batch,
                "cpu_us_per_batch": median_us,
                "cpu_us_per_batch_min": min(per_repeat),
                "cpu_us_per_image": median_us / batch,
                "repeats_us": per_repeat,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stage_python")
    parser.add_argument("--batches", type=parse_counts, default=[8, 16, 32])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--img-dir", default=DEFAULT_IMG_DIR)
    parser.add_argument("--profile", action="store_true", help="cProfile the largest batch")
    args = parser.parse_args(argv)
    images = load_images(args.img_dir)
    for row in measure(images, args.batches, args.repeats):
        print(
            f"batch {row['batch']:>3}: {row['cpu_us_per_batch']:8.0f} us per batch (median; "
            f"least {row['cpu_us_per_batch_min']:.0f}), {row['cpu_us_per_image']:6.1f} us per image"
        )
    if args.profile:
        stage = stand_in_stage()
        batches = batches_of(images, max(args.batches), 50)
        time_per_batch_us(stage, batches[:1], 1)
        profiler = cProfile.Profile()
        profiler.enable()
        time_per_batch_us(stage, batches, 1)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
