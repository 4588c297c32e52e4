"""Bilinear resize of a batch of images of different sizes, with one resampling kernel.

Resizing each image alone costs a handful of kernel launches per image, each a trip through
the interpreter; at the batch sizes a loaded server forms, that per-image Python dominates the
stage. Here the images are padded into one buffer and resampled together by
``torchvision.ops.roi_align`` with one region per image, its whole extent: with one sample per
output pixel and half-pixel alignment, RoIAlign samples each image at exactly the source
coordinates of ``interpolate(mode="bilinear", align_corners=False)``, clamped at the edges the
same way (where an image is enlarged, its last row and column are repeated into the padding,
which is otherwise never read). So each image comes out as it would alone (OpenCV's
INTER_LINEAR up to its fixed-point rounding), for a fixed handful of launches per batch.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# The strided nested tensor is only the padding step here (its API being a prototype does not
# change what to_padded_tensor returns); its once-per-process warning would only alarm.
warnings.filterwarnings("ignore", message="The PyTorch API of nested tensors", category=UserWarning)


def resize_bilinear(images: list[torch.Tensor], height: int, width: int) -> torch.Tensor:
    """``images`` (each C x H_i x W_i, same C and device) resized to one N x C x ``height`` x
    ``width`` tensor: uint8 when every input is uint8 (rounded and clamped), else float32."""
    import torch
    from torchvision.ops import roi_align

    first = images[0]
    count = len(images)
    shapes = [image.shape for image in images]
    heights = [shape[-2] for shape in shapes]
    widths = [shape[-1] for shape in shapes]
    if min(heights) >= height and min(widths) >= width:
        # Shrinking only (the usual case): RoIAlign never reads the padding, so one nested
        # tensor pads the whole batch in a fixed number of calls, whatever its size. It is
        # made float before padding: CUDA pads float nested tensors in one kernel, other
        # dtypes one image at a time.
        padded = torch.nested.nested_tensor(images).float().to_padded_tensor(0)
    else:
        padded = _padded_with_edges(images, heights, widths, height, width)
    regions = np.zeros((count, 5), dtype=np.float32)  # (image index, x1, y1, x2, y2)
    regions[:, 0] = np.arange(count)
    regions[:, 3] = widths
    regions[:, 4] = heights
    boxes = torch.from_numpy(regions)
    if first.device.type == "cuda":  # pinned, so the copy does not wait for the stream
        boxes = boxes.pin_memory().to(first.device, non_blocking=True)
    resized = roi_align(
        padded, boxes, (height, width), spatial_scale=1.0, sampling_ratio=1, aligned=True
    )
    if all(image.dtype is torch.uint8 for image in images):
        return resized.round_().clamp_(0, 255).to(torch.uint8)
    return resized


def _padded_with_edges(
    images: list[torch.Tensor], heights: list[int], widths: list[int], height: int, width: int
) -> torch.Tensor:
    """The images in one float buffer, each followed by a copy of its last row and column
    where it is enlarged: there RoIAlign's last samples reach one pixel past the image, where
    interpolate clamps to the edge."""
    import torch

    first = images[0]
    tallest, widest = max(heights), max(widths)
    padded = torch.empty(
        (len(images), first.shape[0], tallest, widest), dtype=torch.float32, device=first.device
    )
    for index, image in enumerate(images):
        rows, cols = heights[index], widths[index]
        padded[index, :, :rows, :cols].copy_(image)
        if cols < width and cols < widest:
            padded[index, :, :rows, cols].copy_(image[:, :, cols - 1])
        if rows < height and rows < tallest:
            reach = min(cols + 1, widest)
            padded[index, :, rows, :reach].copy_(padded[index, :, rows - 1, :reach])
    return padded
