"""Typed parameter values (colour, precision, device), parsed by `config`, read by `backends`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

_C = TypeVar("_C", bound="_Choice")


class _Choice(str, Enum):
    """A string enum whose ``str()`` and f-string form are its value (Python 3.10 has no
    ``StrEnum``); equal to that value as a string, so it also goes into JSON and TOML as one."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @classmethod
    def _aliases(cls) -> dict[str, str]:
        return {}

    @classmethod
    def _missing_(cls, value: object) -> _Choice | None:
        # Any case and surrounding spaces, as TorchPipe's configs write them ("RGB", " fp16").
        if isinstance(value, str):
            text = value.strip().lower()
            text = cls._aliases().get(text, text)
            for member in cls:
                if member.value == text:
                    return member
        return None

    @classmethod
    def parse(cls: type[_C], value: Any) -> _C:
        """The member ``value`` names; ``ValueError`` saying what is accepted otherwise."""
        try:
            return cls(value)
        except ValueError:
            accepted = " or ".join(f'"{member.value}"' for member in cls)
            aliases = ", ".join(cls._aliases())
            also = f" (or {aliases})" if aliases else ""
            raise ValueError(f"must be {accepted}{also}, got {value!r}") from None


class Color(_Choice):
    """The channel order of a 3-channel image."""

    RGB = "rgb"
    BGR = "bgr"


class Precision(_Choice):
    """The floating-point precision a model stage computes in."""

    FP16 = "fp16"
    FP32 = "fp32"

    @classmethod
    def _aliases(cls) -> dict[str, str]:
        return {"float16": "fp16", "half": "fp16", "float32": "fp32"}


#: The device types the built-in backends place tensors on.
DEVICE_TYPES = ("cpu", "cuda")
_DEVICE = re.compile(r"([a-z]+)(?::(\d+))?")


@dataclass(frozen=True)
class DeviceSpec:
    """A device as a config names it (``"cpu"``, ``"cuda"``, ``"cuda:1"``), checked without
    importing torch; whether CUDA is there is checked when a backend is created."""

    type: str
    #: ``None``: the backend picks (for CUDA, ``device_id`` or the instance's GPU).
    index: int | None = None

    @classmethod
    def parse(cls, value: Any) -> DeviceSpec:
        """``value`` (a string, a ``torch.device`` or a ``DeviceSpec``) as a ``DeviceSpec``;
        ``ValueError`` for anything else."""
        if isinstance(value, DeviceSpec):
            return value
        match = _DEVICE.fullmatch(str(value).strip().lower())
        if match is None or match.group(1) not in DEVICE_TYPES:
            raise ValueError(f'must be "cpu", "cuda" or "cuda:<index>", got {value!r}')
        index = match.group(2)
        return cls(match.group(1), None if index is None else int(index))

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"
