"""Batch assembly for the model stages (TorchTensor, TensorrtTensor): check each request's
1xCxHxW tensor, stack the batch once into a static device buffer, normalise on the device.

CPU uint8 rows go through one pinned host buffer and a single non-blocking host-to-device copy;
the cast to float happens on the device (on a CPU-only machine, while copying). Other inputs
(float, or already on a GPU) are copied row by row, casting on the way; GPU rows are stacked
and copied once per batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import InvalidInputError

if TYPE_CHECKING:
    import torch


class BatchAssembler:
    """One model instance's static input buffer and the code that fills it.

    ``static_input`` (max_batch x C x H x W, float32, on ``device``) keeps its address for the
    instance's life, so CUDA graphs and TensorRT bindings can read it directly.
    """

    def __init__(
        self,
        chw: tuple[int, int, int],
        max_batch: int,
        device: torch.device,
        *,
        channels_last: bool,
        mean: list[float],
        std: list[float],
    ) -> None:
        import torch

        self._torch = torch
        self.chw = chw
        self.max_batch = max_batch
        channels, height, width = chw
        on_gpu = device.type == "cuda"
        self._staged = on_gpu
        if on_gpu:
            # NHWC storage: Mat2Tensor's rows are NHWC pixels viewed as NCHW, so each row copies
            # in as one memcpy, and the whole batch goes to the device as one.
            shape = (max_batch, height, width, channels)
            self._host_nhwc = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
            self._host_nhwc_np = self._host_nhwc.numpy()
            self._device_nhwc = torch.empty(shape, dtype=torch.uint8, device=device)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        self.static_input = torch.empty(
            (max_batch, *chw), dtype=torch.float32, device=device
        ).contiguous(memory_format=layout)
        self._static_np = self.static_input.numpy() if device.type == "cpu" else None
        self._scale = torch.tensor([1.0 / value for value in std], device=device).view(1, -1, 1, 1)
        self._bias = torch.tensor(
            [-m / s for m, s in zip(mean, std, strict=True)], device=device
        ).view(1, -1, 1, 1)
        self._identity = all(value == 1.0 for value in std) and all(value == 0 for value in mean)

    def tensors(self, batch: list[dict[str, Any]]) -> list[torch.Tensor]:
        """Each item's CxHxW tensor; ``InvalidInputError`` for the first item that has none."""
        torch = self._torch
        accepted = (torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64)
        rows = []
        for index, item in enumerate(batch):
            data = item.get("data")
            row = data[0] if isinstance(data, torch.Tensor) and data.dim() == 4 else data
            if (
                not isinstance(row, torch.Tensor)
                or tuple(row.shape) != self.chw
                or (data.dim() == 4 and data.shape[0] != 1)
                or row.dtype not in accepted
            ):
                raise InvalidInputError(f"item {index}: {self._expected()}, got {_describe(data)}")
            rows.append(row)
        if len(rows) > self.max_batch:
            raise ValueError(f"batch of {len(rows)} is over this stage's max of {self.max_batch}")
        return rows

    def load(self, rows: list[torch.Tensor]) -> None:
        """Copy ``rows`` into ``static_input[:len(rows)]`` (on the current CUDA stream)."""
        torch = self._torch
        count = len(rows)
        # Host rows are copied with numpy, all in one call: a memcpy per row that releases
        # the GIL once, where torch's CPU copy_ between channels-last views is ~50x slower
        # (measured), and a torch call per row would release and retake the GIL each time.
        cpu_u8 = [row.dtype == torch.uint8 and row.device.type == "cpu" for row in rows]
        if self._staged and all(cpu_u8):
            np.stack(
                [row.numpy().transpose(1, 2, 0) for row in rows], out=self._host_nhwc_np[:count]
            )
            # The pinned rows are free again once this stream has run the copy; the model
            # stages synchronise before returning, so the next load cannot overwrite them early.
            self._device_nhwc[:count].copy_(self._host_nhwc[:count], non_blocking=True)
            self.static_input[:count].copy_(self._device_nhwc[:count].permute(0, 3, 1, 2))
            return
        device = self.static_input.device
        if (
            self._staged
            and count > 1
            and all(row.device == device and row.dtype == rows[0].dtype for row in rows)
        ):
            # Rows already on the GPU (GPU decode): one stack and one cast-copy per batch.
            self.static_input[:count].copy_(torch.stack(rows))
            return
        for index, row in enumerate(rows):
            if self._static_np is not None and cpu_u8[index]:
                np.copyto(self._static_np[index], row.detach().numpy(), casting="unsafe")
            else:
                self.static_input[index].copy_(row)

    def normalized(self, count: int) -> torch.Tensor:
        """``(static_input[:count] - mean) / std`` as one fused multiply-add (graph-capturable)."""
        batch = self.static_input[:count]
        if self._identity:
            return batch
        return self._torch.addcmul(self._bias, batch, self._scale)

    def _expected(self) -> str:
        channels, height, width = self.chw
        return f"expected a 1x{channels}x{height}x{width} uint8 or float tensor"


def _describe(data: Any) -> str:
    shape = getattr(data, "shape", None)
    if shape is None:
        return type(data).__name__
    dtype = getattr(data, "dtype", "?")
    return f"{type(data).__name__} of shape {'x'.join(map(str, shape))} ({dtype})"


def instance_stream(device: torch.device) -> torch.cuda.Stream:
    """The CUDA stream a model stage instance runs on: the thread's current stream when it is
    an instance's own (SyncTensor sets one), else a new one, since CUDA graphs cannot be
    captured on the legacy default stream."""
    import torch

    current = torch.cuda.current_stream(device)
    if current == torch.cuda.default_stream(device):
        return torch.cuda.Stream(device)
    return current


def split_rows(output: torch.Tensor, batch: list[dict[str, Any]]) -> None:
    """Give each item its own row of ``output`` as ``result`` (shape 1 x ...)."""
    for index, item in enumerate(batch):
        item["result"] = output[index : index + 1]
