"""Readers for the built-in backends' parameters (TOML values or TorchPipe-style strings, or the
typed values ``load_config`` made of them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..values import Color, DeviceSpec, Precision
from .base import param_float_list, param_int

if TYPE_CHECKING:
    import torch

#: Parameters every model stage (TorchTensor, TensorrtTensor) reads.
MODEL_PARAMS = frozenset(
    {"model", "precision", "mean", "std", "min", "max", "device", "device_id", "input_shape"}
)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def param_positive(params: dict[str, Any], key: str, default: int | None = None) -> int:
    """A positive integer; required when ``default`` is ``None``."""
    if default is None and key not in params:
        raise ConfigError("is required", key=key)
    try:
        value = param_int(params, key, default if default is not None else 0)
    except ValueError as error:
        raise ConfigError(str(error), key=key) from None
    if value <= 0:
        raise ConfigError(f"must be a positive integer, got {params.get(key)!r}", key=key)
    return value


def param_color(
    params: dict[str, Any], key: str = "color", default: Color | str | None = None
) -> Color:
    """``color``: a :class:`Color` or its name in any case; required when ``default`` is
    ``None``."""
    value = params.get(key, default)
    if value is None:
        raise ConfigError('is required ("rgb" or "bgr")', key=key)
    try:
        return Color.parse(value)
    except ValueError as error:
        raise ConfigError(str(error), key=key) from None


def param_precision(params: dict[str, Any], default: Precision | str) -> Precision:
    """``precision``: a :class:`Precision` or its name (aliases float16/half, float32)."""
    try:
        return Precision.parse(params.get("precision", default))
    except ValueError as error:
        raise ConfigError(str(error), key="precision") from None


def param_bool(params: dict[str, Any], key: str, default: bool) -> bool:
    """A boolean that may come as a TOML bool or a string ("true", "0"...)."""
    value = params.get(key, default)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"must be true or false, got {value!r}", key=key)


def param_mean_std(params: dict[str, Any], channels: int) -> tuple[list[float], list[float]]:
    """``mean`` and ``std`` in pixel units (0..255): one value per channel, or one for all."""
    values = {}
    for key, default in (("mean", 0.0), ("std", 1.0)):
        try:
            numbers = param_float_list(params, key)
        except ValueError as error:
            raise ConfigError(str(error), key=key) from None
        if numbers is None:
            numbers = [default]
        if len(numbers) == 1:
            numbers = numbers * channels
        if len(numbers) != channels:
            raise ConfigError(f"needs 1 or {channels} values, got {len(numbers)}", key=key)
        values[key] = numbers
    if any(value == 0 for value in values["std"]):
        raise ConfigError("must not contain 0", key="std")
    return values["mean"], values["std"]


def param_batch_range(params: dict[str, Any]) -> tuple[int, int]:
    """``min`` (default 1) and ``max`` (default 1, TorchPipe's) of a model stage."""
    low = param_positive(params, "min", 1)
    high = param_positive(params, "max", 1)
    if low > high:
        raise ConfigError(f"min ({low}) is greater than max ({high})", key="min")
    return low, high


def param_input_chw(
    params: dict[str, Any], from_file: tuple[int | None, ...] | None
) -> tuple[int, int, int]:
    """One input row's (C, H, W): ``input_shape`` ("3,224,224") or what the model file fixes."""
    given = params.get("input_shape")
    if given is not None:
        parts = given if isinstance(given, list | tuple) else str(given).split(",")
        try:
            chw = tuple(int(str(part).strip()) for part in parts)
        except ValueError:
            chw = ()
        if len(chw) != 3 or min(chw) <= 0:
            raise ConfigError(
                f'must be three positive integers "C,H,W", got {given!r}', key="input_shape"
            )
        if from_file and all(dim is not None for dim in from_file) and tuple(from_file) != chw:
            raise ConfigError(
                f"{chw} differs from the model file's {tuple(from_file)}", key="input_shape"
            )
        return chw  # type: ignore[return-value]
    if from_file is None or len(from_file) != 3 or any(dim is None for dim in from_file):
        raise ConfigError(
            'the model file does not fix its input size: set input_shape = "C,H,W" '
            '(e.g. "3,224,224"); static shapes are needed for batching and CUDA graphs',
            key="input_shape",
        )
    return tuple(from_file)  # type: ignore[return-value]


def default_gpu_index(params: dict[str, Any]) -> int:
    """The GPU of a model-stage instance when the node names no ``device_id``: instances are
    spread over every visible GPU, round-robin by ``instance_index``."""
    import torch

    return param_int(params, "instance_index", 0) % max(1, torch.cuda.device_count())


def param_device(params: dict[str, Any], *, spread: bool = False) -> torch.device:
    """``device`` (a :class:`DeviceSpec`, or "cpu", "cuda", "cuda:1"); by default CUDA device
    ``device_id`` when CUDA is available, else the CPU. Without ``device_id``: the instance's
    GPU by :func:`default_gpu_index` when ``spread`` (model stages), else the thread's current
    one."""
    import torch

    value = params.get("device")
    if value is None:
        if not torch.cuda.is_available():
            return torch.device("cpu")
        value = "cuda"
    try:
        spec = DeviceSpec.parse(value)
    except ValueError as error:
        raise ConfigError(str(error), key="device") from None
    if spec.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"is {str(spec)!r} but CUDA is not available here", key="device")
        if spec.index is None:
            fallback = default_gpu_index(params) if spread else torch.cuda.current_device()
            return torch.device("cuda", param_int(params, "device_id", fallback))
    return torch.device(spec.type, spec.index)
