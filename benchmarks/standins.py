"""Stand-ins for the device work of the real stages, for measuring what the interpreter costs.

Each stand-in is the real backend with only its device work swapped for a wait that releases
the interpreter lock, as the real work does (OpenCV and nvJPEG release it, and a GPU stage's
thread sleeps while it waits for its stream). The GPU stages' tensors live on the CPU, with
images ``SCALE`` times smaller on each side than the photographs' (and the resize target with
them), so their arithmetic costs the 2-core machine little while every Python call and every
dispatch into torch is the same as on CUDA; ``StandInResizeTensor`` takes the batched path
that ResizeTensor takes on a GPU. The waits' durations are functions of the batch size, set
from the H200 measurements in benchmarks/README.md and printed with every result.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from torchpipe_lite.backends.image.image_cpu import DecodeMat
from torchpipe_lite.backends.image.image_gpu import DecodeTensor, ResizeTensor
from torchpipe_lite.backends.image.image_header import ImageHeader
from torchpipe_lite.backends.model.torch_models import SharedModel
from torchpipe_lite.backends.model.torch_tensor import TorchTensor
from torchpipe_lite.backends.registry import register_backend

#: How much smaller than the photographs (on each side) the stand-ins' images are.
SCALE = 8
CPU = torch.device("cpu")


@dataclass(frozen=True)
class DeviceTimes:
    """How long each stand-in waits: ``fixed + per_item * batch`` milliseconds."""

    nvjpeg_fixed_ms: float = 0.22
    nvjpeg_per_image_ms: float = 0.048
    model_fixed_ms: float = 0.36
    model_per_image_ms: float = 0.028
    cpu_decode_per_image_ms: float = 1.8

    def wait(self, fixed_ms: float, per_item_ms: float, count: int) -> None:
        time.sleep((fixed_ms + per_item_ms * count) / 1000.0)


#: The durations in use (``configure`` replaces them, in the serving process).
TIMES = DeviceTimes()


def configure(times: DeviceTimes) -> None:
    """Use ``times`` from now on."""
    global TIMES
    TIMES = times


@register_backend("StandInDecodeTensor")
class StandInDecodeTensor(DecodeTensor):
    """DecodeTensor on the CPU, with the nvJPEG batch decode replaced by a wait."""

    def _decode_device(self, params: dict[str, Any]) -> torch.device:
        return CPU

    def _nvjpeg(
        self, encoded: list[torch.Tensor], headers: list[ImageHeader]
    ) -> list[torch.Tensor | None]:
        TIMES.wait(TIMES.nvjpeg_fixed_ms, TIMES.nvjpeg_per_image_ms, len(encoded))
        # nvJPEG makes its outputs without the interpreter: here they are made once per size.
        return [_decoded(header.height, header.width) for header in headers]

    def _search_markers(self, staged: torch.Tensor, buffers: list[Any]) -> Callable[[], list[int]]:
        # The GPU's search, without the CPU doing its arithmetic: each photograph's positions
        # are found once and remembered (the load sends the same few photographs).
        positions, start = [], 0
        for buf in buffers:
            positions.extend(start + offset for offset in _markers_of(bytes(buf[:64]), buf))
            start += len(buf)
        return lambda: positions


def _markers_of(key: bytes, buf: Any) -> tuple[int, ...]:
    found = _MARKERS.get((key, len(buf)))
    if found is None:
        data = np.frombuffer(buf, dtype=np.uint8)
        found = tuple(np.flatnonzero((data[:-1] == 0xFF) & (data[1:] != 0)).tolist())
        _MARKERS[(key, len(buf))] = found
    return found


_MARKERS: dict[tuple[bytes, int], tuple[int, ...]] = {}


@register_backend("StandInResizeTensor")
class StandInResizeTensor(ResizeTensor):
    """ResizeTensor that resizes CPU batches as it does GPU batches (one gather per batch)."""

    batched_on = frozenset({"cuda", "cpu"})


@functools.cache
def _decoded(height: int, width: int) -> torch.Tensor:
    return torch.zeros((3, _scaled(height), _scaled(width)), dtype=torch.uint8)


def _scaled(length: int) -> int:
    return max(1, length // SCALE)


def _stand_in_decode(buf: bytes | memoryview, header: ImageHeader) -> np.ndarray:
    TIMES.wait(0.0, TIMES.cpu_decode_per_image_ms, 1)
    return np.zeros((_scaled(header.height), _scaled(header.width), 3), dtype=np.uint8)


@register_backend("StandInDecodeMat")
class StandInDecodeMat(DecodeMat):
    """DecodeMat with ``cv2.imdecode`` replaced by a wait (the header checks still run)."""

    decode = staticmethod(_stand_in_decode)


class _WaitingModel(torch.nn.Module):
    """Returns zero logits for a batch after the model's wait."""

    def __init__(self, classes: int):
        super().__init__()
        self.classes = classes

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        TIMES.wait(TIMES.model_fixed_ms, TIMES.model_per_image_ms, batch.shape[0])
        return torch.zeros((batch.shape[0], self.classes))


@register_backend("StandInTorchTensor")
class StandInTorchTensor(TorchTensor):
    """TorchTensor on the CPU whose model is a wait (no model file is read)."""

    FILE_PARAMS = ()

    def init(self, params: dict[str, Any]) -> None:
        super().init({**params, "device": "cpu", "model": "stand-in"})

    def _load_model(self, path: str, channels_last: bool, fuse_conv: bool) -> SharedModel:
        side = 224 // SCALE
        return SharedModel(_WaitingModel(1000), (3, side, side), "stand-in")
