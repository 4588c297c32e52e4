"""CPU image stages with OpenCV: DecodeMat, ResizeMat, CvtColorMat, Mat2Tensor.

Mats are HxWxC uint8 numpy arrays. Their colour travels in the request dict, TorchPipe style:
the decoder sets ``item["color"] = Color.BGR`` (equal to the string "bgr") and ``CvtColorMat``
converts only when that differs from its ``color`` parameter, then updates the key. An array
that arrives without the key is taken to be BGR (OpenCV's convention). OpenCV releases the GIL
while it works, so several instances of these stages decode and resize in parallel.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from ...errors import ConfigError, InvalidInputError
from ...values import Color
from ..base import Backend
from ..params import param_color, param_device, param_positive
from ..registry import register_backend
from .image_header import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_PIXELS_PER_BYTE,
    ImageHeader,
    check_pixels,
    header_of,
    read_header,
)
from .jpeg_scan import check_jpeg_scan

logger = logging.getLogger(__name__)


def as_bytes(data: Any) -> bytes | memoryview:
    """The encoded image bytes of a request's ``data``; ``InvalidInputError`` for other types."""
    if isinstance(data, bytes | bytearray):
        return bytes(data) if isinstance(data, bytearray) else data
    if isinstance(data, memoryview):
        return data.cast("B") if data.contiguous else data.tobytes()
    if isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 1:
        return memoryview(np.ascontiguousarray(data))
    torch = sys.modules.get("torch")  # a tensor can only exist if torch is imported
    if (
        torch is not None
        and isinstance(data, torch.Tensor)
        and (data.dtype == torch.uint8 and data.dim() == 1 and data.device.type == "cpu")
    ):
        return memoryview(data.contiguous().numpy())
    raise InvalidInputError(
        f"expected encoded image bytes (bytes, bytearray, memoryview or a 1-D uint8 array), "
        f"got {type(data).__name__}"
    )


def opencv_decode(buf: bytes | memoryview, header: ImageHeader) -> np.ndarray | None:
    """``cv2.imdecode`` to 3-channel BGR (``None`` where OpenCV cannot decode it)."""
    return cv2.imdecode(np.frombuffer(buf, dtype=np.uint8), cv2.IMREAD_COLOR)


def decode_bgr(
    data: Any,
    max_pixels: int,
    decode: Callable[[bytes | memoryview, ImageHeader], np.ndarray | None] = opencv_decode,
    *,
    max_pixels_per_byte: int = DEFAULT_MAX_PIXELS_PER_BYTE,
) -> np.ndarray | None:
    """Decode image bytes to a 3-channel BGR uint8 HxWx3 array; ``None`` when not an image.

    The header is checked against ``max_pixels`` and ``max_pixels_per_byte`` before anything
    is decoded or allocated (``InvalidInputError`` naming the declared size). Grayscale
    becomes 3 channels, alpha is dropped, 16-bit samples become 8-bit and EXIF orientation is
    applied (``cv2.IMREAD_COLOR``). ``decode`` does the decoding itself, once the checks passed.
    """
    buf = as_bytes(data)
    return decode_read(buf, read_header(buf), max_pixels, decode, max_pixels_per_byte)


def decode_read(
    buf: bytes | memoryview,
    header: ImageHeader | None,
    max_pixels: int,
    decode: Callable[[bytes | memoryview, ImageHeader], np.ndarray | None] = opencv_decode,
    max_pixels_per_byte: int = DEFAULT_MAX_PIXELS_PER_BYTE,
) -> np.ndarray | None:
    """``decode_bgr`` of ``buf`` whose header has been read already (``header``)."""
    if header is None:
        logger.debug("not an image (%d bytes, starts %r): no result", len(buf), bytes(buf[:8]))
        return None
    check_pixels(
        header, max_pixels, encoded_bytes=len(buf), max_pixels_per_byte=max_pixels_per_byte
    )
    if header.format == "jpeg":
        check_jpeg_scan(buf)  # libjpeg would decode corrupt scan data as noise, only warning
    image = decode(buf, header)
    if image is None:
        logger.debug("%s header read but OpenCV could not decode it: no result", header.format)
        return None
    return image


def require_mat(data: Any, channels: int | None = None) -> np.ndarray:
    """``data`` as an HxW or HxWxC non-empty array; ``InvalidInputError`` otherwise."""
    if not isinstance(data, np.ndarray) or data.ndim not in (2, 3) or data.size == 0:
        shape = getattr(data, "shape", None)
        raise InvalidInputError(
            f"expected an HxWxC image array, got {type(data).__name__}"
            + (f" of shape {tuple(shape)}" if shape is not None else "")
        )
    if channels is not None and (data.ndim != 3 or data.shape[2] != channels):
        raise InvalidInputError(f"expected {channels} channels, got shape {data.shape}")
    return data


@register_backend("DecodeMat")
class DecodeMat(Backend):
    """Encoded image bytes -> BGR uint8 HxWx3 (``color`` = "bgr"); no result for non-images.

    Decodes what OpenCV reads whose size can be checked first (JPEG, PNG, BMP, GIF, WebP, and
    through Pillow's header reader TIFF, PNM and others). ``max_pixels`` (default 50 M) bounds
    the declared size, ``max_pixels_per_byte`` (default 20,000) the declared size per byte of
    the file (decompression bombs).
    """

    PARAMS = frozenset({"max_pixels", "max_pixels_per_byte"})
    #: What decodes the bytes once their header passed the checks.
    decode = staticmethod(opencv_decode)

    def init(self, params: dict[str, Any]) -> None:
        self.max_pixels = param_positive(params, "max_pixels", DEFAULT_MAX_PIXELS)
        self.max_pixels_per_byte = param_positive(
            params, "max_pixels_per_byte", DEFAULT_MAX_PIXELS_PER_BYTE
        )

    def forward(self, batch: list[dict[str, Any]]) -> None:
        for item in batch:
            buf = as_bytes(item["data"])
            image = decode_read(
                buf, header_of(item, buf), self.max_pixels, self.decode, self.max_pixels_per_byte
            )
            if image is not None:
                item["result"] = image
                item["color"] = Color.BGR


@register_backend("ResizeMat")
class ResizeMat(Backend):
    """Resize to ``resize_h`` x ``resize_w`` with bilinear interpolation (cv2.INTER_LINEAR)."""

    PARAMS = frozenset({"resize_h", "resize_w"})

    def init(self, params: dict[str, Any]) -> None:
        self.resize_h = param_positive(params, "resize_h")
        self.resize_w = param_positive(params, "resize_w")

    def forward(self, batch: list[dict[str, Any]]) -> None:
        for item in batch:
            image = require_mat(item["data"])
            if image.shape[:2] == (self.resize_h, self.resize_w):
                item["result"] = image
            else:
                size = (self.resize_w, self.resize_h)
                item["result"] = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)


class ChannelSwap(Backend):
    """Base of CvtColorMat and CvtColorTensor: swap RGB<->BGR when ``item["color"]`` (or
    ``DEFAULT_COLOR`` when absent) differs from the ``color`` parameter, then set the key."""

    PARAMS = frozenset({"color"})
    #: The colour of data that arrives without a "color" key.
    DEFAULT_COLOR = Color.BGR

    def init(self, params: dict[str, Any]) -> None:
        self.color = param_color(params)

    def check(self, data: Any) -> Any:
        """``data`` as a 3-channel image; ``InvalidInputError`` otherwise."""
        raise NotImplementedError

    def swap(self, image: Any) -> Any:
        """``image`` with its channel order reversed."""
        raise NotImplementedError

    def forward(self, batch: list[dict[str, Any]]) -> None:
        # Compute every item before writing any: if one raises, no item's "color" has moved
        # ahead of its data, so the scheduler's per-item re-run converts correctly.
        results = []
        for item in batch:
            image = self.check(item["data"])
            same = item.get("color", self.DEFAULT_COLOR) == self.color
            results.append(image if same else self.swap(image))
        for item, image in zip(batch, results, strict=True):
            item["result"] = image
            item["color"] = self.color


@register_backend("CvtColorMat")
class CvtColorMat(ChannelSwap):
    """Convert a 3-channel mat to ``color`` ("rgb" or "bgr") when its ``item["color"]`` differs
    (no key: BGR)."""

    def check(self, data: Any) -> np.ndarray:
        return require_mat(data, channels=3)

    def swap(self, image: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)  # its own inverse


@register_backend("Mat2Tensor")
class Mat2Tensor(Backend):
    """HxWxC (or HxW) uint8 or float32 mat -> a tensor of its dtype on ``device`` ("cpu" or
    "cuda"), 1xCxHxW (``data_format = "nchw"``, the default) or HxWxC (``"hwc"``); sets the
    request's ``data_format``, as TorchPipe's does.

    On the CPU the tensor shares the mat's memory (no copy): the nchw one is the NCHW view of
    the HWC pixels, i.e. a channels-last tensor, which is the layout the model stage wants.
    """

    PARAMS = frozenset({"device", "data_format"})
    DATA_FORMATS = ("nchw", "hwc")

    def init(self, params: dict[str, Any]) -> None:
        import torch

        self._torch = torch
        self.device = param_device(params) if "device" in params else torch.device("cpu")
        self.data_format = str(params.get("data_format", "nchw")).strip().lower()
        if self.data_format not in self.DATA_FORMATS:
            raise ConfigError(
                f'must be "nchw" or "hwc", got {params["data_format"]!r}', key="data_format"
            )

    def placement(self) -> str | None:
        return str(self.device) if self.device.type != "cpu" else None

    def forward(self, batch: list[dict[str, Any]]) -> None:
        torch = self._torch
        nchw = self.data_format == "nchw"
        for item in batch:
            image = require_mat(item["data"])
            if image.dtype not in (np.uint8, np.float32):
                raise InvalidInputError(f"expected a uint8 or float32 image, got {image.dtype}")
            if image.ndim == 2:
                image = image[:, :, None]
            if not image.flags.writeable:  # torch.from_numpy wants writeable memory
                image = image.copy()
            if self.device.type == "cpu":
                # The NCHW view made in NumPy: no torch call (each would release and retake
                # the interpreter lock, a thread switch when other threads wait for it).
                item["result"] = torch.from_numpy(image.transpose(2, 0, 1)[None] if nchw else image)
            else:
                tensor = torch.from_numpy(image).to(self.device)
                item["result"] = tensor.permute(2, 0, 1)[None] if nchw else tensor
            item["data_format"] = self.data_format
