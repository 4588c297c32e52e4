"""The per-request preprocessing outside a pipeline: decode, resize, BGR->RGB, uint8 tensor.

The locked baseline runs it in its RPC threads, and the peers' model code (benchmarks/peers)
runs the same, so both do exactly what the pipeline's CPU image stages do, with the stages'
settings read from the same config.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import torch

from service.service_config import ServiceConfig
from torchpipe_lite.backends.base import param_int
from torchpipe_lite.backends.image.image_cpu import decode_bgr
from torchpipe_lite.backends.image.image_header import DEFAULT_MAX_PIXELS
from torchpipe_lite.backends.params import param_color


@dataclass(frozen=True)
class ImagePreprocessing:
    """The image stages' settings of a config, and the steps they take."""

    resize_hw: tuple[int, int] = (224, 224)
    to_rgb: bool = True
    max_pixels: int = DEFAULT_MAX_PIXELS

    @classmethod
    def of(cls, config: ServiceConfig) -> ImagePreprocessing:
        """The settings of ``config``'s stages before the model; a misspelt ``color`` is a
        ``ConfigError``."""
        pre = config.preprocess_params()
        return cls(
            resize_hw=(param_int(pre, "resize_h", 224), param_int(pre, "resize_w", 224)),
            to_rgb=param_color(pre, "color", "rgb") == "rgb",
            max_pixels=param_int(pre, "max_pixels", DEFAULT_MAX_PIXELS),
        )

    def tensor(self, data: bytes) -> torch.Tensor | None:
        """Image bytes -> uint8 1x3xHxW tensor (channels-last memory); ``None`` when the bytes
        are not an image (``InvalidInputError`` for a header declaring too many pixels)."""
        image = decode_bgr(data, self.max_pixels)
        if image is None:
            return None
        height, width = self.resize_hw
        if image.shape[:2] != (height, width):
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        if self.to_rgb:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        # The NCHW view made in NumPy, as Mat2Tensor makes it: no torch call to release the
        # interpreter lock and queue to take it back.
        return torch.from_numpy(image.transpose(2, 0, 1)[None])
