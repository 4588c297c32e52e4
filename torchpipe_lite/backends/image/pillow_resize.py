"""PillowResizeMat and PillowResizeTensor: TorchPipe's resizes that give Pillow's pixels.

TorchPipe's are ports of Pillow's bilinear filter (a mat one in C++, a CUDA one), written so a
model trained on images ``PIL.Image.resize`` made sees the same pixels at serving time. Here
Pillow itself does the resize, so the pixels are Pillow's by construction. Pillow's bilinear
filter is not OpenCV's: it averages over the whole source footprint when shrinking.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from ...errors import InvalidInputError
from ..base import Backend
from ..registry import register_backend
from .image_cpu import require_mat
from .mat_ops import param_side, tensor_to_hwc_array


def pillow_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` (uint8 HxWx3) resized to ``height`` x ``width`` by ``PIL.Image.resize`` with
    its bilinear filter; the channels are resized independently, so their order is kept."""
    if image.shape[:2] == (height, width):
        return image
    resized = Image.fromarray(np.ascontiguousarray(image)).resize(
        (width, height), Image.Resampling.BILINEAR
    )
    return np.array(resized)  # writeable, unlike np.asarray of an Image


class PillowResize(Backend):
    """The parameters both share: ``resize_h`` and ``resize_w`` (1..1024*1024, required)."""

    PARAMS = frozenset({"resize_h", "resize_w"})

    def init(self, params: dict[str, Any]) -> None:
        self.resize_h = param_side(params, "resize_h")
        self.resize_w = param_side(params, "resize_w")


def require_uint8_bgr(image: np.ndarray) -> np.ndarray:
    """``image`` if it is uint8 with 3 channels; ``InvalidInputError`` otherwise."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InvalidInputError(
            f"expected a uint8 HxWx3 image, got {image.dtype} of shape {image.shape}"
        )
    return image


@register_backend("PillowResizeMat")
class PillowResizeMat(PillowResize):
    """uint8 HxWx3 mat -> the mat resized to ``resize_h`` x ``resize_w`` as Pillow's bilinear
    ``Image.resize`` does it."""

    def forward(self, batch: list[dict[str, Any]]) -> None:
        for item in batch:
            image = require_uint8_bgr(require_mat(item["data"]))
            item["result"] = pillow_bilinear(image, self.resize_h, self.resize_w)


@register_backend("PillowResizeTensor")
class PillowResizeTensor(PillowResize):
    """uint8 tensor, HxWx3 or 1x3xHxW -> uint8 1x3x``resize_h``x``resize_w``, resized as
    Pillow's bilinear ``Image.resize`` does it, on the tensor's device. TorchPipe's runs on CUDA
    only; this one resizes on the CPU (Pillow) and moves the result back."""

    def forward(self, batch: list[dict[str, Any]]) -> None:
        import torch

        for item in batch:
            data = item["data"]
            if not isinstance(data, torch.Tensor) or data.dtype != torch.uint8:
                raise InvalidInputError(
                    f"expected a uint8 tensor, got {getattr(data, 'dtype', type(data).__name__)}"
                )
            image = require_uint8_bgr(tensor_to_hwc_array(data))
            resized = pillow_bilinear(image, self.resize_h, self.resize_w)
            tensor = torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1)[None]
            item["result"] = tensor.to(data.device)
