"""Names the device the engine runs on, by the very rule TorchTensor applies to its params."""

from __future__ import annotations

from typing import Any

import torch

from torchpipe_lite.extend import param_device


def engine_device(params: dict[str, Any]) -> str:
    """``"cuda:0 (NVIDIA H100 80GB HBM3)"`` or ``"cpu"`` for a model node's parameters."""
    device = param_device(params)
    if device.type != "cuda":
        return str(device)
    return f"{device} ({torch.cuda.get_device_name(device)})"
