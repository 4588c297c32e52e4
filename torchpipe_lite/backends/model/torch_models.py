"""Process-wide model cache for TorchTensor: a model file is converted once, and each
(precision, device, memory format) variant of it is built once and shared by every instance."""

from __future__ import annotations

import copy
import logging
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...errors import ConfigError
from .conv_fusion import maybe_fuse

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

ONNX_SUFFIXES = (".onnx",)
TORCHSCRIPT_SUFFIXES = (".pt", ".ts", ".jit", ".torchscript")


@dataclass(frozen=True)
class SharedModel:
    """A ready-to-run module and what the file says about its input."""

    module: torch.nn.Module
    #: (C, H, W) of one input row, ``None`` where the file does not fix a dimension.
    input_chw: tuple[int | None, int | None, int | None] | None
    source: str  # "onnx" or "torchscript"
    #: How many Conv -> [Add ->] ReLU chains run as one cuDNN kernel (see conv_fusion).
    fused_convolutions: int = 0


_lock = threading.Lock()
_base: dict[tuple[str, int], SharedModel] = {}
_variants: dict[tuple, SharedModel] = {}


def shared_model(
    path: str,
    dtype: torch.dtype,
    device: torch.device,
    channels_last: bool,
    fuse_conv: bool = False,
) -> SharedModel:
    """The cached module for ``path`` on ``device`` in ``dtype`` (eval mode, no grad).

    ``fuse_conv`` rewrites the Conv -> [Add ->] ReLU chains of an ONNX-converted model into
    single cuDNN calls (see conv_fusion); TorchScript models are run as they are.
    """
    import torch

    real = os.path.realpath(path)
    try:
        stamp = os.stat(real).st_mtime_ns  # a rewritten file is converted again
    except OSError as error:
        raise ConfigError(f"cannot read model file {path!r}: {error}", key="model") from None
    key = (real, stamp, dtype, str(device), channels_last, fuse_conv)
    with _lock:  # instances initialise concurrently; the first builds, the others wait
        found = _variants.get(key)
        if found is not None:
            return found
        base = _base.get((real, stamp))
        if base is None:
            base = _load(real)
            _base[(real, stamp)] = base
        module = base.module
        if device.type != "cpu" or dtype != torch.float32 or channels_last or fuse_conv:
            # .to() and the fusion change the module in place: keep the base pristine
            module = copy.deepcopy(module).to(device=device, dtype=dtype)
        fused = 0
        if fuse_conv:
            fused = maybe_fuse(module)
            logger.info(
                "%s: %s",
                path,
                f"{fused} convolutions fused with their ReLU (and residual add)"
                if fused
                else f"no convolution fused (a {base.source} model is run as it is)",
            )
        if channels_last:
            module = module.to(memory_format=torch.channels_last)
        variant = SharedModel(module.eval(), base.input_chw, base.source, fused)
        _variants[key] = variant
        return variant


def _load(path: str) -> SharedModel:
    import torch

    lowered = path.lower()
    if lowered.endswith(ONNX_SUFFIXES):
        from .onnx_import import convert_onnx

        converted = convert_onnx(path)
        shape = converted.input_shape
        chw = tuple(shape[1:4]) if len(shape) == 4 else None
        return SharedModel(converted.module, chw, "onnx")
    if lowered.endswith(TORCHSCRIPT_SUFFIXES):
        module = torch.jit.load(path, map_location="cpu")
        module.eval()
        logger.info("loaded TorchScript model %s", path)
        return SharedModel(module, None, "torchscript")
    raise ConfigError(
        f"unsupported model file {path!r}: expected .onnx or a TorchScript file "
        f"({', '.join(TORCHSCRIPT_SUFFIXES)})",
        key="model",
    )


def clear_cache() -> None:
    """Forget every cached model (tests; a long-lived process reloading models)."""
    with _lock:
        _base.clear()
        _variants.clear()
