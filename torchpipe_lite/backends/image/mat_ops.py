"""TorchPipe's other CPU mat stages: Tensor2Mat, AlignMat, DynamicResizeMat, ResizePadMat, CropMat.

Each does what the backend of that name in TorchPipe's (v0) C++ core does, read from its
documentation and sources; where this one differs (a typed error where TorchPipe logs and drops
the request, say) its docstring says so. Mats are HxWxC numpy arrays, as in ``image_cpu``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from ...errors import ConfigError, InvalidInputError
from ...keys import TASK_BOX_KEY
from ..base import Backend, param_float_list
from ..params import param_positive
from ..registry import register_backend
from .image_cpu import require_mat

#: TorchPipe's bound on a resize target's side (its stages refuse sides over 1024 * 1024).
MAX_SIDE = 1024 * 1024
#: The channel counts TorchPipe's tensor <-> mat conversions accept.
IMAGE_CHANNELS = (1, 3, 4)


def param_side(params: dict[str, Any], key: str) -> int:
    """A required image side in 1..``MAX_SIDE`` (TorchPipe's bound)."""
    side = param_positive(params, key)
    if side > MAX_SIDE:
        raise ConfigError(f"must be at most {MAX_SIDE}, got {side}", key=key)
    return side


def tensor_to_hwc_array(data: Any) -> np.ndarray:
    """A CPU copy of an HxWxC or 1xCxHxW (C = 1, 3 or 4) uint8 or float32 tensor, as an HxWxC
    array; ``InvalidInputError`` for anything else."""
    torch = sys.modules.get("torch")  # a tensor can only exist if torch is imported
    if torch is None or not isinstance(data, torch.Tensor):
        raise InvalidInputError(f"expected a torch tensor, got {type(data).__name__}")
    shape = tuple(data.shape)
    if len(shape) == 3 and shape[2] in IMAGE_CHANNELS and shape[0] * shape[1] != 0:
        hwc = data
    elif len(shape) == 4 and shape[0] == 1 and shape[1] in IMAGE_CHANNELS and shape[2] * shape[3]:
        hwc = data[0].permute(1, 2, 0)
    else:
        raise InvalidInputError(
            f"expected an HxWxC or 1xCxHxW tensor with C = 1, 3 or 4, got shape {shape}"
        )
    if data.dtype not in (torch.uint8, torch.float32):
        raise InvalidInputError(f"expected a uint8 or float32 tensor, got {data.dtype}")
    # A copy (TorchPipe's deep copy): the mat must not change when the tensor is reused.
    return np.array(hwc.detach().cpu().numpy(), copy=True, order="C")


@register_backend("Tensor2Mat")
class Tensor2Mat(Backend):
    """HxWxC or 1xCxHxW tensor (C = 1, 3, 4; uint8 or float32; any device) -> an HxWxC numpy
    mat of the same dtype, a copy."""

    PARAMS = frozenset()

    def forward(self, batch: list[dict[str, Any]]) -> None:
        results = [tensor_to_hwc_array(item["data"]) for item in batch]
        for item, mat in zip(batch, results, strict=True):
            item["result"] = mat


def aligned_width(resize_h: int, sizes_hw: list[tuple[int, int]], align: int, max_w: int) -> int:
    """AlignMat's shared width: the widest of ``resize_h * w / h`` (rounded down) over the
    batch, rounded up to a multiple of ``align``, at most ``max_w``, at least ``align``."""
    widest = max(resize_h * width // height for height, width in sizes_hw)
    aligned = -(-widest // align) * align
    return max(align, min(aligned, max_w))


@register_backend("AlignMat")
class AlignMat(Backend):
    """Chooses one width for the whole batch: each mat scaled to height ``resize_h`` keeping
    its aspect, the widest of those rounded up to a multiple of ``align`` (default 32), capped
    at ``max_w``. Sets ``resize_h`` and ``resize_w`` in every request (for ``DynamicResizeMat``)
    and passes the mat on unchanged. ``max_w`` must be a multiple of ``align``.

    Unlike TorchPipe's, a width that rounds down to 0 (a mat much taller than wide) becomes
    ``align``, not 0 (which the resize after it could only refuse).
    """

    PARAMS = frozenset({"resize_h", "max_w", "align"})

    def init(self, params: dict[str, Any]) -> None:
        self.resize_h = param_side(params, "resize_h")
        self.max_w = param_side(params, "max_w")
        self.align = param_positive(params, "align", 32)
        if self.max_w % self.align:
            raise ConfigError(
                f"must be a multiple of align ({self.align}), got {self.max_w}", key="max_w"
            )

    def forward(self, batch: list[dict[str, Any]]) -> None:
        sizes_hw = [require_mat(item["data"]).shape[:2] for item in batch]
        width = aligned_width(self.resize_h, sizes_hw, self.align, self.max_w)
        for item in batch:
            item["result"] = item["data"]
            item["resize_w"] = width
            item["resize_h"] = self.resize_h


def request_side(item: dict[str, Any], params: dict[str, Any], key: str) -> int:
    """``item[key]`` (or the node's ``key``) as a side in 1..``MAX_SIDE``; else
    ``InvalidInputError``."""
    value = item.get(key, params.get(key))
    if value is None:
        raise InvalidInputError(f"the request has no {key!r} (set it, or run AlignMat first)")
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    try:
        side = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise InvalidInputError(f"{key!r} must be an integer, got {value!r}") from None
    if not 1 <= side <= MAX_SIDE:
        raise InvalidInputError(f"{key!r} must be in 1..{MAX_SIDE}, got {side}")
    return side


@register_backend("DynamicResizeMat")
class DynamicResizeMat(Backend):
    """Bilinear resize (OpenCV's default) of each mat to the request's own ``resize_h`` x
    ``resize_w`` (as ``AlignMat`` sets them; the node's, when the request has none).

    TorchPipe's logs and leaves the request without a result when a side is out of range; this
    one raises ``InvalidInputError``.
    """

    PARAMS = frozenset({"resize_h", "resize_w"})

    def init(self, params: dict[str, Any]) -> None:
        self.params = {key: params[key] for key in self.PARAMS if key in params}

    def forward(self, batch: list[dict[str, Any]]) -> None:
        for item in batch:
            image = require_mat(item["data"])
            height = request_side(item, self.params, "resize_h")
            width = request_side(item, self.params, "resize_w")
            item["result"] = cv2.resize(image, (width, height))


def round_half_away(value: float) -> int:
    """``std::round`` of a non-negative number (Python's ``round`` rounds half to even)."""
    return math.floor(value + 0.5)


def fit_size(height: int, width: int, max_h: int, max_w: int) -> tuple[int, int]:
    """ResizePadMat's size (h, w) for a ``height`` x ``width`` image: the largest that keeps
    its aspect inside ``max_h`` x ``max_w`` (the ratio in single precision, as TorchPipe's)."""
    ratio = np.float32(width) / np.float32(height)
    if np.float32(max_h) * ratio <= max_w:
        new_w = min(round_half_away(float(np.float32(max_h) * ratio)), max_w)
        new_h = max_h
    else:
        new_w = max_w
        new_h = min(round_half_away(float(np.float32(max_w) / ratio)), max_h)
    return max(1, new_h), max(1, new_w)


def inverse_scaling(x_ratio: float, y_ratio: float) -> Callable[[float, float], tuple]:
    """Maps a point of the resized image back to the original one."""

    def inverse_trans(x: float, y: float) -> tuple[float, float]:
        return x_ratio * x, y_ratio * y

    return inverse_trans


@register_backend("ResizePadMat")
class ResizePadMat(Backend):
    """Resize a uint8 HxWx3 mat keeping its aspect to fit ``max_h`` x ``max_w`` (bilinear),
    then pad the bottom and right to exactly that size with ``pad_value`` (one value, or one per
    channel; default 0). Sets ``inverse_trans``, a function mapping a point (x, y) of the result
    back to the input. A side that would round to 0 is 1 (TorchPipe's fails in OpenCV).
    """

    PARAMS = frozenset({"max_h", "max_w", "pad_value"})

    def init(self, params: dict[str, Any]) -> None:
        self.max_h = param_side(params, "max_h")
        self.max_w = param_side(params, "max_w")
        try:
            pads = param_float_list(params, "pad_value") or [0.0]
        except ValueError as error:
            raise ConfigError(str(error), key="pad_value") from None
        if len(pads) > 3:
            raise ConfigError(f"needs 1 to 3 values, got {len(pads)}", key="pad_value")
        self.pad_values = pads + [pads[-1]] * (3 - len(pads))

    def forward(self, batch: list[dict[str, Any]]) -> None:
        for item in batch:
            image = require_mat(item["data"], channels=3)
            if image.dtype != np.uint8:
                raise InvalidInputError(f"expected a uint8 image, got {image.dtype}")
            height, width = image.shape[:2]
            new_h, new_w = fit_size(height, width, self.max_h, self.max_w)
            item["inverse_trans"] = inverse_scaling(width / new_w, height / new_h)
            if (new_h, new_w) != (height, width):
                image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
            if (new_h, new_w) != (self.max_h, self.max_w):
                image = cv2.copyMakeBorder(
                    image,
                    0,
                    self.max_h - new_h,
                    0,
                    self.max_w - new_w,
                    cv2.BORDER_CONSTANT,
                    value=self.pad_values,
                )
            item["result"] = image


def box_corners(box: Any) -> tuple[int, int, int, int]:
    """The first four integers of a request's box (x1, y1, x2, y2); else ``InvalidInputError``."""
    if isinstance(box, np.ndarray):
        box = box.tolist()
    if not isinstance(box, list | tuple) or len(box) < 4:
        raise InvalidInputError(f"{TASK_BOX_KEY!r} must be [x1, y1, x2, y2], got {box!r}"[:200])
    corners = box[:4]
    if not all(isinstance(value, int) and not isinstance(value, bool) for value in corners):
        raise InvalidInputError(f"{TASK_BOX_KEY!r} must hold integers, got {corners!r}"[:200])
    return tuple(corners)  # type: ignore[return-value]


@register_backend("CropMat")
class CropMat(Backend):
    """The part of a mat inside the request's ``_box`` (``TASK_BOX_KEY``: ``[x1, y1, x2, y2]``,
    integers, x2 and y2 exclusive): a view, not a copy. ``InvalidInputError`` for a missing box
    or one not inside the image."""

    PARAMS = frozenset()

    def forward(self, batch: list[dict[str, Any]]) -> None:
        for item in batch:
            image = require_mat(item["data"])
            if TASK_BOX_KEY not in item:
                raise InvalidInputError(f"the request has no {TASK_BOX_KEY!r} to crop to")
            x1, y1, x2, y2 = box_corners(item[TASK_BOX_KEY])
            height, width = image.shape[:2]
            if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
                raise InvalidInputError(
                    f"box {[x1, y1, x2, y2]} is not inside the {width}x{height} image"
                )
            item["result"] = image[y1:y2, x1:x2]
