"""GPU image stages on torch tensors: DecodeTensor (nvJPEG), ResizeTensor, CvtColorTensor.

Images are 1xCxHxW uint8 tensors; their colour travels in ``item["color"]`` as with the CPU
stages (a tensor that arrives without the key is taken to be RGB, torch's convention). Each
stage synchronises its CUDA stream before returning, since the next stage may run on another
thread and stream.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import ConfigError, InvalidInputError
from ...values import Color
from ..base import Backend
from ..cuda_wait import wait_for_current_stream
from ..params import param_bool, param_color, param_device, param_positive
from ..registry import register_backend
from .batch_resize import resize_bilinear
from .image_cpu import ChannelSwap, as_bytes, decode_bgr
from .image_header import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_PIXELS_PER_BYTE,
    ImageHeader,
    check_pixels,
    header_of,
)
from .jpeg_scan import jpeg_scan_errors, raise_for_scan_error

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

    # Called for every item of every batch: the shape is read once.
    shape = data.shape if isinstance(data, torch.Tensor) else None
    if shape is not None and len(shape) == 3:
        data = data[None]
        shape = data.shape
    if (
        shape is None
        or len(shape) != 4
        or shape[0] != 1
        or 0 in shape
        or (channels is not None and shape[1] != channels)
    ):
        raise InvalidInputError(
            f"expected a 1x{channels or 'C'}xHxW image tensor, got {type(data).__name__}"
            + (f" of shape {tuple(shape)}" if shape is not None else "")
        )
    return data


#: Largest host buffer a DecodeTensor instance keeps for its batches' bytes.
_MAX_STAGING_BYTES = 64 << 20

# torch.frombuffer warns, once, that the request's bytes are read-only: nvJPEG never writes
# its input, so the warning would only alarm whoever reads the log.
warnings.filterwarnings("ignore", message="The given buffer is not writable", category=UserWarning)


def _synchronize(tensor: torch.Tensor) -> None:
    if tensor.is_cuda:
        wait_for_current_stream(tensor.device)


@register_backend("DecodeTensor")
class DecodeTensor(Backend):
    """Encoded image bytes -> 1x3xHxW uint8 CUDA tensor in ``color`` (default "rgb").

    JPEGs are decoded with nvJPEG (``torchvision.io.decode_jpeg(..., device="cuda")``), a whole
    batch in one call. Other formats, and JPEGs nvJPEG refuses (CMYK, corrupt), are decoded on
    the CPU with OpenCV and uploaded (logged at debug), unless ``cpu_fallback = false``: they
    then end without a result, for a graph to send them to a CPU decoder node of its own
    (``filter = "or"``; service/configs/resnet50_gpu_decode_fallback.toml). Non-images end
    without a result.
    ``max_pixels`` bounds the declared size before anything is decoded.
    """

    PARAMS = frozenset(
        {"color", "max_pixels", "max_pixels_per_byte", "device", "device_id", "cpu_fallback"}
    )

    def init(self, params: dict[str, Any]) -> None:
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        self._torch = torch
        self._decode_jpeg = decode_jpeg
        self._rgb_mode = ImageReadMode.RGB
        self.device = self._decode_device(params)
        self._staging: torch.Tensor | None = None
        self.color = param_color(params, default=Color.RGB)
        self.max_pixels = param_positive(params, "max_pixels", DEFAULT_MAX_PIXELS)
        self.max_pixels_per_byte = param_positive(
            params, "max_pixels_per_byte", DEFAULT_MAX_PIXELS_PER_BYTE
        )
        self.cpu_fallback = param_bool(params, "cpu_fallback", default=True)

    def _decode_device(self, params: dict[str, Any]) -> torch.device:
        device = param_device(params)
        if device.type != "cuda":
            raise ConfigError(
                "DecodeTensor decodes with nvJPEG and needs a CUDA device; use DecodeMat on the "
                "CPU",
                key="device",
            )
        return device

    def placement(self) -> str | None:
        return str(self.device)

    def forward(self, batch: list[dict[str, Any]]) -> None:
        items: list[dict[str, Any]] = []
        buffers: list[Any] = []
        headers: list[ImageHeader] = []
        max_pixels, per_byte = self.max_pixels, self.max_pixels_per_byte
        for item in batch:
            buf = as_bytes(item["data"])
            header = header_of(item, buf)
            if header is None:
                logger.debug("not an image (%d bytes): no result", len(buf))
                continue
            check_pixels(header, max_pixels, encoded_bytes=len(buf), max_pixels_per_byte=per_byte)
            if header.format == "jpeg" and header.channels in (1, 3):
                items.append(item)
                buffers.append(buf)
                headers.append(header)
            else:  # decode_bgr checks it as DecodeMat does
                self._decode_on_cpu(item, buf, f"{header.format} with {header.channels} channels")
        if items:
            self._decode_jpegs(items, buffers, headers)
        wait_for_current_stream(self.device)

    def _decode_jpegs(
        self, items: list[dict[str, Any]], buffers: list[Any], headers: list[ImageHeader]
    ) -> None:
        """Decode the batch with nvJPEG in one call, checking its scan data on the device."""
        lengths = [len(buf) for buf in buffers]
        staged = self._stage(buffers, sum(lengths))
        # The scan check's search is queued on the device before nvJPEG runs and read back
        # after: the two overlap instead of waiting for each other. A corrupt image is then
        # decoded for nothing, and refused below.
        markers = self._search_markers(staged, buffers)
        # nvJPEG reads each image from a view of the staged bytes (one split for the batch).
        decoded = self._nvjpeg(list(staged.split(lengths)), headers)
        for error in jpeg_scan_errors(buffers, staged.numpy(), markers()):
            raise_for_scan_error(error)  # the scheduler then runs each request alone
        for item, buf, image, header in zip(items, buffers, decoded, headers, strict=True):
            if image is None:
                self._decode_on_cpu(item, buf, "a JPEG nvJPEG could not decode")
                continue
            if header.orientation != 1:
                image = apply_orientation(image, header.orientation)
            self._finish(item, image, Color.RGB)

    def _stage(self, buffers: list[Any], total: int) -> torch.Tensor:
        """The batch's bytes (``total`` of them) in one host buffer of this instance (pinned on
        a GPU, so that the copy to the device does not wait for the stream), valid until the
        next batch."""
        torch = self._torch
        if total > _MAX_STAGING_BYTES:  # a rare, huge batch: not worth keeping pinned
            return torch.frombuffer(b"".join(buffers), dtype=torch.uint8)
        staging = self._staging
        if staging is None or len(staging) < total:
            grown = 2 * len(staging) if staging is not None else 1 << 20
            size = min(_MAX_STAGING_BYTES, max(total, grown))
            pinned = self.device.type == "cuda"
            staging = self._staging = torch.empty(size, dtype=torch.uint8, pin_memory=pinned)
            self._staging_view = memoryview(staging.numpy())
        target, start = self._staging_view, 0
        for buf in buffers:  # a memoryview's slice assignment: one memcpy, no array objects
            end = start + len(buf)
            target[start:end] = buf
            start = end
        return staging[:total]

    def _search_markers(self, staged: torch.Tensor, buffers: list[Any]) -> Callable[[], np.ndarray]:
        """Start finding where ``staged`` (``buffers`` concatenated) holds 0xFF followed by a
        non-zero byte (see jpeg_scan), on the device; the returned call waits for the sorted
        positions."""
        if len(staged) < 2:
            return lambda: np.empty(0, dtype=np.int64)
        data = staged.to(self.device, non_blocking=True)
        found = (data[:-1] == 0xFF) & (data[1:] != 0)
        return lambda: found.nonzero().flatten().cpu().numpy()

    def _nvjpeg(
        self, encoded: list[torch.Tensor], headers: list[ImageHeader]
    ) -> list[torch.Tensor | None]:
        """Decode every JPEG of ``encoded`` (``headers``: what their headers said); None for
        each that nvJPEG refuses."""
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
        if not self.cpu_fallback:
            logger.debug("DecodeTensor: %s: no result (cpu_fallback = false)", what)
            return
        logger.debug("DecodeTensor: %s, decoding on the CPU with OpenCV", what)
        image = decode_bgr(buf, self.max_pixels, max_pixels_per_byte=self.max_pixels_per_byte)
        if image is None:
            return
        tensor = self._torch.from_numpy(image).to(self.device).permute(2, 0, 1)
        self._finish(item, tensor, Color.BGR)

    def _finish(self, item: dict[str, Any], image: torch.Tensor, color: Color) -> None:
        if color is not self.color:
            image = image.flip(0)
        item["result"] = image[None]
        item["color"] = self.color


@register_backend("ResizeTensor")
class ResizeTensor(Backend):
    """Bilinear resize of 1xCxHxW tensors to ``resize_h`` x ``resize_w`` (half-pixel centres,
    no antialiasing: OpenCV's INTER_LINEAR); uint8 stays uint8 (rounded).

    On a GPU, a batch of images of any sizes is resized together (``batch_resize``): a fixed
    number of kernel launches per batch instead of per image. On the CPU, where that gather
    would cost more than it saves, images of the same size are resized together with one
    ``interpolate``.
    """

    PARAMS = frozenset({"resize_h", "resize_w"})
    #: Device types whose images are resized as one batch, whatever their sizes.
    batched_on: frozenset[str] = frozenset({"cuda"})

    def init(self, params: dict[str, Any]) -> None:
        import torch

        self._torch = torch
        self.size = (param_positive(params, "resize_h"), param_positive(params, "resize_w"))

    def forward(self, batch: list[dict[str, Any]]) -> None:
        groups: dict[tuple, list[tuple[dict[str, Any], torch.Tensor]]] = {}
        size = self.size
        for item in batch:
            image = require_image_tensor(item["data"])
            shape = image.shape
            if (shape[2], shape[3]) == size:
                item["result"] = image
                continue
            key = (shape[1], image.dtype, image.device)
            groups.setdefault(key, []).append((item, image))
        last = None
        for (_, _, device), members in groups.items():
            batched = device.type in self.batched_on
            if not batched:  # one interpolate per distinct size
                by_shape: dict[tuple, list[tuple[dict[str, Any], torch.Tensor]]] = {}
                for item, image in members:
                    by_shape.setdefault(tuple(image.shape), []).append((item, image))
                subgroups = list(by_shape.values())
            else:
                subgroups = [members]
            for subgroup in subgroups:
                images = [image for _, image in subgroup]
                if len(images) == 1:
                    last = self._resize(images[0])
                elif batched:
                    last = resize_bilinear([image[0] for image in images], *self.size)
                else:
                    last = self._resize(self._torch.cat(images))
                # One split gives every item its 1xCxHxW view of the batch.
                for (item, _), resized in zip(subgroup, last.split(1), strict=True):
                    item["result"] = resized
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

    DEFAULT_COLOR = Color.RGB

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
