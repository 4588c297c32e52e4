"""The JPEG decoders side by side for benchmarks.gpu_ceiling: one ``step(k)`` per decoder and batch.

Each ``step(k)`` decodes batch ``k`` of the photographs (cycling through them) and returns when
the pixels are ready (a stream sync on the GPU). A decoder that cannot run here is given by
the reason instead of a step (``Unavailable``), so its row says why.
"""

from __future__ import annotations

import ctypes
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from benchmarks.decode_throughput import nvjpeg_step

logger = logging.getLogger(__name__)

Step = Callable[[int], object]
#: nvImageCodec's backends measured here: the GPU's hardware JPEG engines only, and its
#: hybrid one (Huffman decoding on CPU threads, the rest on the GPU).
NVIMGCODEC_KINDS = {"nvimgcodec HW_GPU_ONLY": "HW_GPU_ONLY", "nvimgcodec hybrid": "HYBRID_CPU_GPU"}
#: Decoders that run on the CPU one image after another: measured at one batch size only.
CPU_DECODERS = ("OpenCV imdecode (CPU)", "torchvision decode_jpeg (CPU)")


class Unavailable(Exception):
    """The decoder cannot run here; the message says why (the row's status)."""


def chosen(images: list, batch: int, k: int) -> list:
    """Batch ``k`` of ``batch`` items, cycling through ``images``."""
    return [images[(k * batch + i) % len(images)] for i in range(batch)]


def opencv_step(images: list[bytes], batch: int) -> Step:
    arrays = [np.frombuffer(image, np.uint8) for image in images]
    return lambda k: [cv2.imdecode(a, cv2.IMREAD_COLOR) for a in chosen(arrays, batch, k)]


def torchvision_cpu_step(images: list[bytes], batch: int) -> Step:
    from torchvision.io import ImageReadMode, decode_jpeg

    encoded = [torch.frombuffer(bytearray(image), dtype=torch.uint8) for image in images]
    return lambda k: decode_jpeg(chosen(encoded, batch, k), mode=ImageReadMode.RGB)


def nvimgcodec_module():
    """``nvidia.nvimgcodec``, or ``Unavailable`` saying why it does not import."""
    try:
        from nvidia import nvimgcodec
    except ImportError as error:
        raise Unavailable(f"absent: nvidia.nvimgcodec does not import ({error})") from None
    return nvimgcodec


def preload_nvjpeg() -> str | None:
    """Load ``libnvjpeg.so.13`` from a ``nvidia/cu13/lib`` folder on ``sys.path`` (the
    nvidia-nvjpeg wheel's place), so nvImageCodec's extension finds it by name; the path
    loaded, or None (nvImageCodec then searches the usual library paths itself)."""
    for folder in sys.path:
        path = Path(folder or ".") / "nvidia" / "cu13" / "lib" / "libnvjpeg.so.13"
        if path.is_file():
            ctypes.CDLL(str(path))
            return str(path)
    return None


def nvimgcodec_step(images: list[bytes], batch: int, kind: str) -> Step:
    """nvImageCodec's decoder restricted to the backend ``kind``, a whole batch per call, to
    device memory on the current stream (interleaved RGB, its default)."""
    nvimgcodec = nvimgcodec_module()
    preload_nvjpeg()
    backend = nvimgcodec.Backend(getattr(nvimgcodec.BackendKind, kind))
    try:
        decoder = nvimgcodec.Decoder(backends=[backend])
    except Exception as error:  # the library's own error types: any means "cannot run here"
        raise Unavailable(f"absent: nvimgcodec.Decoder({kind}) failed: {error}") from None
    stream = torch.cuda.current_stream()

    def step(k: int) -> list:
        streams = [nvimgcodec.CodeStream(image) for image in chosen(images, batch, k)]
        decoded = decoder.decode(streams, cuda_stream=stream.cuda_stream)
        stream.synchronize()
        return decoded

    probe = step(0)
    missing = sum(image is None for image in probe)
    if missing:
        raise Unavailable(
            f"absent: the {kind} backend decoded {batch - missing} of {batch} photographs "
            "(None for the rest: no such engine, or libnvjpeg.so.13 not found)"
        )
    return step


def decoder_steps(
    images: list[bytes], batch: int, on_gpu: bool, *, cpu_decoders: bool
) -> dict[str, Step | str]:
    """Every decoder's ``step`` at ``batch`` (the CPU ones only with ``cpu_decoders``), or the
    reason it has none here."""
    steps: dict[str, Step | str] = {}
    if on_gpu:
        steps["torchvision nvJPEG (batched)"] = nvjpeg_step(images, batch)
    else:
        steps["torchvision nvJPEG (batched)"] = "no CUDA"
    for name, kind in NVIMGCODEC_KINDS.items():
        if not on_gpu:
            steps[name] = "no CUDA"
            continue
        try:
            steps[name] = nvimgcodec_step(images, batch, kind)
        except Unavailable as reason:
            logger.warning("%s: %s", name, reason)
            steps[name] = str(reason)
    if cpu_decoders:
        steps[CPU_DECODERS[0]] = opencv_step(images, batch)
        steps[CPU_DECODERS[1]] = torchvision_cpu_step(images, batch)
    return steps


def nvimgcodec_version() -> str | None:
    try:
        return nvimgcodec_module().__version__
    except Unavailable:
        return None
