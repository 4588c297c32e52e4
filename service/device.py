"""Names the device the engine runs on, by the rule TorchTensor applies to its ``device`` key."""

from __future__ import annotations

from typing import Any

import torch


def engine_device(params: dict[str, Any]) -> str:
    """``"cuda:0 (NVIDIA H100 80GB HBM3)"`` or ``"cpu"``: the node's ``device`` when set,
    otherwise CUDA when available (TorchTensor's default)."""
    requested = str(params.get("device", "")).strip()
    if not requested:
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type != "cuda":
        return str(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
