"""The per-request preprocessing outside a pipeline: decode, resize, BGR->RGB, uint8 tensor.

The locked baseline runs it in its RPC threads, and the peers' model code (benchmarks/peers)
runs the same, so both do exactly what the pipeline's CPU image stages do, with the stages'
settings read from the same config.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import torch

from service.service_config import ImageSettings, ServiceConfig
from torchpipe_lite import Color
from torchpipe_lite.extend import decode_bgr

#: The size the baseline resizes to when no stage of its config sets one.
DEFAULT_RESIZE_HW = (224, 224)


@dataclass(frozen=True)
class ImagePreprocessing:
    """The image stages' steps, with their settings."""

    settings: ImageSettings

    @classmethod
    def of(cls, config: ServiceConfig) -> ImagePreprocessing:
        """The steps of ``config``'s stages before the model (validated when it was loaded)."""
        return cls(config.images)

    def tensor(self, data: bytes) -> torch.Tensor | None:
        """Image bytes -> uint8 1x3xHxW tensor (channels-last memory); ``None`` when the bytes
        are not an image (``InvalidInputError`` for a header declaring too many pixels)."""
        image = decode_bgr(data, self.settings.max_pixels)
        if image is None:
            return None
        height, width = self.settings.resize_hw or DEFAULT_RESIZE_HW
        if image.shape[:2] != (height, width):
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        if self.settings.color is Color.RGB:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        # The NCHW view made in NumPy, as Mat2Tensor makes it: no torch call to release the
        # interpreter lock and queue to take it back.
        return torch.from_numpy(image.transpose(2, 0, 1)[None])
