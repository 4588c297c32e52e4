"""The extension API: what backend authors and servers built on the library use beyond ``tp.*``.

``import torchpipe_lite as tp`` is the API for running pipelines. Code that writes backends,
reads their parameters the way the built-in ones do, checks images before it decodes them, or
reports node figures of its own (a server that schedules a backend itself) imports from here;
the modules behind these names are internal and may move.

- Backends: ``backend_class`` (a registered class by name), ``request_error`` (an exception
  as a request's typed error, naming node and backend).
- Parameters, read as the built-in backends read them: ``param_positive``, ``param_color``,
  ``param_precision``, ``param_device``; ``running_precision`` (what TorchTensor would run).
- Images: ``read_header`` (an ``ImageHeader``: format, size and orientation from the first
  bytes, no decode), ``check_pixels`` with its limits ``DEFAULT_MAX_PIXELS`` and
  ``DEFAULT_MAX_PIXELS_PER_BYTE``, ``decode_bgr`` (OpenCV's decode, as DecodeMat does it),
  ``HEADER_KEY`` (the request key under which a server hands the decoders the header it read).
- Configuration: ``NodeConfig``, ``PipelineConfig``, ``BackendSpec``, ``read_toml``.
- Figures: ``InstanceCounters`` (one worker's lock-free counters), the ``NodeStats`` schema's
  ``FIGURES`` and its ``Figure``/``Merge`` metadata, ``add_figures`` and ``total_of``.
"""

from __future__ import annotations

from .backends.image.image_cpu import decode_bgr
from .backends.image.image_header import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_PIXELS_PER_BYTE,
    HEADER_KEY,
    ImageHeader,
    check_pixels,
    read_header,
)
from .backends.model.torch_tensor import running_precision
from .backends.params import param_color, param_device, param_positive, param_precision
from .backends.registry import backend_class
from .config import BackendSpec, NodeConfig, PipelineConfig, read_toml
from .metrics import FIGURES, Figure, InstanceCounters, Merge, NodeStats, add_figures, total_of
from .schedule.execution import request_error

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_PIXELS_PER_BYTE",
    "FIGURES",
    "HEADER_KEY",
    "BackendSpec",
    "Figure",
    "ImageHeader",
    "InstanceCounters",
    "Merge",
    "NodeConfig",
    "NodeStats",
    "PipelineConfig",
    "add_figures",
    "backend_class",
    "check_pixels",
    "decode_bgr",
    "param_color",
    "param_device",
    "param_positive",
    "param_precision",
    "read_header",
    "read_toml",
    "request_error",
    "running_precision",
    "total_of",
]
