"""GPU image stages on torch tensors: DecodeTensor (nvJPEG), ResizeTensor, CvtColorTensor.

Images are 1xCxHxW uint8 tensors; their colour travels in ``item["color"]`` as with the CPU
stages (a tensor that arrives without the key is taken to be RGB, torch's convention). Each
stage synchronises its CUDA stream before returning, since the next stage may run on another
thread and stream.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, InvalidInputError
from .base import Backend
from .cuda_wait import wait_for_current_stream
from .image_cpu import ChannelSwap, as_bytes, decode_bgr
from .image_header import DEFAULT_MAX_PIXELS, check_pixels, read_header
from .jpeg_scan import check_jpeg_scan
from .params import param_color, param_device, param_positive
from .registry import register_backend

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


def apply_orientation(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """Turn a decoded ...xHxW image as its EXIF ``orientation`` (1-8) says, to display upright
    (nvJPEG ignores EXIF; OpenCV applies it, so both decoders agree)."""
    if orientation == 2:  # mirrored left-right
        return image.flip(-1)
    if orientation == 3:  # rotated 180
        return image.flip(-1).flip(-2)
    if orientation == 4:  # mirrored top-bottom
        return image.flip(-2)
    if orientation == 5:  # transposed
        return image.transpose(-1, -2).contiguous()
    if orientation == 6:  # stored rotated 90 counter-clockwise: turn it clockwise
        return image.transpose(-1, -2).flip(-1)
    if orientation == 7:  # transverse
        return image.transpose(-1, -2).flip(-1).flip(-2)
    if orientation == 8:  # stored rotated 90 clockwise: turn it counter-clockwise
        return image.transpose(-1, -2).flip(-2)
    return image


def require_image_tensor(data: Any, channels: int | None = None) -> torch.Tensor:
    """``data`` as a 1xCxHxW tensor (a CxHxW one gets its batch axis); else InvalidInputError."""
    import torch

    if isinstance(data, torch.Tensor) and data.dim() == 3:
        data = data.unsqueeze(0)
    if (
        not isinstance(data, torch.Tensor)
        or data.dim() != 4
        or data.shape[0] != 1
        or data.numel() == 0
        or (channels is not None and data.shape[1] != channels)
    ):
        shape = getattr(data, "shape", None)
        raise InvalidInputError(
            f"expected a 1x{channels or 'C'}xHxW image tensor, got {type(data).__name__}"
            + (f" of shape {tuple(shape)}" if shape is not None else "")
        )
    return data


def _synchronize(tensor: torch.Tensor) -> None:
    if tensor.is_cuda:
        wait_for_current_stream(tensor.device)


@register_backend("DecodeTensor")
class DecodeTensor(Backend):
    """Encoded image bytes -> 1x3xHxW uint8 CUDA tensor in ``color`` (default "rgb").

    JPEGs are decoded with nvJPEG (``torchvision.io.decode_jpeg(..., device="cuda")``), a whole
    batch in one call. Other formats, and JPEGs nvJPEG refuses (CMYK, corrupt), are decoded on
    the CPU with OpenCV and uploaded (logged at debug); non-images end without a result.
    ``max_pixels`` bounds the declared size before anything is decoded.
    """

    PARAMS = frozenset({"color", "max_pixels", "device", "device_id"})

    def init(self, params: dict[str, Any]) -> None:
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        self._torch = torch
        self._decode_jpeg = decode_jpeg
        self._rgb_mode = ImageReadMode.RGB
        self.device = param_device(params)
        if self.device.type != "cuda":
            raise ConfigError(
                "DecodeTensor decodes with nvJPEG and needs a CUDA device; use DecodeMat on the "
                "CPU",
                key="device",
            )
        self.color = param_color(params, default="rgb")
        self.max_pixels = param_positive(params, "max_pixels", DEFAULT_MAX_PIXELS)

    def placement(self) -> str | None:
        return str(self.device)

    def forward(self, batch: list[dict[str, Any]]) -> None:
        torch = self._torch
        jpegs: list[tuple[dict[str, Any], Any, int]] = []
        for item in batch:
            buf = as_bytes(item["data"])
            header = read_header(buf)
            if header is None:
                logger.debug("not an image (%d bytes): no result", len(buf))
                continue
            check_pixels(header, self.max_pixels)
            if header.format == "jpeg":
                check_jpeg_scan(buf)  # as DecodeMat: corrupt scan data is not an image
            if header.format == "jpeg" and header.channels in (1, 3):
                jpegs.append((item, buf, header.orientation))
            else:
                self._decode_on_cpu(item, buf, f"{header.format} with {header.channels} channels")
        if jpegs:
            encoded = []
            for _, buf, _ in jpegs:
                tensor = torch.empty(len(buf), dtype=torch.uint8)  # one copy, writable
                tensor.numpy()[:] = np.frombuffer(buf, dtype=np.uint8)
                encoded.append(tensor)
            for (item, buf, orientation), image in zip(jpegs, self._nvjpeg(encoded), strict=True):
                if image is None:
                    self._decode_on_cpu(item, buf, "a JPEG nvJPEG could not decode")
                    continue
                self._finish(item, apply_orientation(image, orientation), "rgb")
        wait_for_current_stream(self.device)

    def _nvjpeg(self, encoded: list[torch.Tensor]) -> list[torch.Tensor | None]:
        try:
            return list(self._decode_jpeg(encoded, mode=self._rgb_mode, device=self.device))
        except RuntimeError as error:
            if len(encoded) == 1:
                logger.debug("nvJPEG failed: %s", error)
                return [None]
            logger.debug("batched nvJPEG decode failed (%s): decoding one by one", error)
        images: list[torch.Tensor | None] = []
        for tensor in encoded:
            try:
                images.append(self._decode_jpeg(tensor, mode=self._rgb_mode, device=self.device))
            except RuntimeError as error:
                logger.debug("nvJPEG failed: %s", error)
                images.append(None)
        return images

    def _decode_on_cpu(self, item: dict[str, Any], buf: Any, what: str) -> None:
        logger.debug("DecodeTensor: %s, decoding on the CPU with OpenCV", what)
        image = decode_bgr(buf, self.max_pixels)
        if image is None:
            return
        tensor = self._torch.from_numpy(image).to(self.device).permute(2, 0, 1)
        self._finish(item, tensor, "bgr")

    def _finish(self, item: dict[str, Any], image: torch.Tensor, color: str) -> None:
        if color != self.color:
            image = image.flip(0)
        item["result"] = image.unsqueeze(0)
        item["color"] = self.color


@register_backend("ResizeTensor")
class ResizeTensor(Backend):
    """Bilinear resize of 1xCxHxW tensors to ``resize_h`` x ``resize_w`` (half-pixel centres,
    no antialiasing: OpenCV's INTER_LINEAR); uint8 stays uint8 (rounded).

    Images of the same size, type and device are resized together, as one batch: a handful of
    kernel launches per group instead of per image, which matters when a batch repeats sizes
    (one camera, one upstream resizer). Each pixel is computed as it would be alone.
    """

    PARAMS = frozenset({"resize_h", "resize_w"})

    def init(self, params: dict[str, Any]) -> None:
        import torch

        self._torch = torch
        self.size = (param_positive(params, "resize_h"), param_positive(params, "resize_w"))

    def forward(self, batch: list[dict[str, Any]]) -> None:
        groups: dict[tuple, list[tuple[dict[str, Any], torch.Tensor]]] = {}
        for item in batch:
            image = require_image_tensor(item["data"])
            if tuple(image.shape[-2:]) == self.size:
                item["result"] = image
                continue
            key = (tuple(image.shape), image.dtype, image.device)
            groups.setdefault(key, []).append((item, image))
        last = None
        for members in groups.values():
            images = [image for _, image in members]
            last = self._resize(images[0] if len(images) == 1 else self._torch.cat(images))
            for index, (item, _) in enumerate(members):
                item["result"] = last[index : index + 1]
        if last is not None:
            _synchronize(last)

    def _resize(self, images: torch.Tensor) -> torch.Tensor:
        torch = self._torch
        resized = torch.nn.functional.interpolate(
            images.float(), size=self.size, mode="bilinear", align_corners=False
        )
        if images.dtype == torch.uint8:
            return resized.round_().clamp_(0, 255).to(torch.uint8)
        return resized.to(images.dtype)


@register_backend("CvtColorTensor")
class CvtColorTensor(ChannelSwap):
    """Reverse the channels of 1x3xHxW tensors (RGB<->BGR) when ``item["color"]`` differs
    from ``color`` (no key: RGB)."""

    DEFAULT_COLOR = "rgb"

    def check(self, data: Any) -> torch.Tensor:
        return require_image_tensor(data, channels=3)

    def swap(self, image: torch.Tensor) -> torch.Tensor:
        return image.flip(1)

    def forward(self, batch: list[dict[str, Any]]) -> None:
        super().forward(batch)
        for item in batch:
            if item["result"].is_cuda:
                _synchronize(item["result"])
                break
