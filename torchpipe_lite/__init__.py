"""torchpipe_lite: thread-safe, dynamically batched, multi-instance model pipelines."""

from . import backends as _backends  # noqa: F401  (registers the built-in backends)
from . import errors
from .backends.base import UNBOUNDED_BATCH, Backend
from .backends.registry import register_backend, registered_backends
from .backends.tree import create_backend
from .config import Color, DeviceSpec, Precision, load_config, parse_backend_expression
from .errors import (
    BackendError,
    ConfigError,
    FilterError,
    InvalidInputError,
    NoResultError,
    OverloadedError,
    PipelineClosedError,
    PipelineUnavailableError,
    RequestCancelledError,
    RequestError,
    RequestTimeoutError,
    TorchpipeError,
)
from .filters import Status, register_filter
from .metrics import NodeStats
from .remote import PipelineServer, RemotePipeline, connect, serve
from .schedule import Pipeline, pipe

__version__ = "0.1.0"

__all__ = [
    "UNBOUNDED_BATCH",
    "Backend",
    "BackendError",
    "Color",
    "ConfigError",
    "DeviceSpec",
    "FilterError",
    "InvalidInputError",
    "NoResultError",
    "NodeStats",
    "OverloadedError",
    "Pipeline",
    "PipelineClosedError",
    "PipelineServer",
    "PipelineUnavailableError",
    "Precision",
    "RemotePipeline",
    "RequestCancelledError",
    "RequestError",
    "RequestTimeoutError",
    "Status",
    "TorchpipeError",
    "connect",
    "create_backend",
    "errors",
    "load_config",
    "parse_backend_expression",
    "pipe",
    "register_backend",
    "register_filter",
    "registered_backends",
    "serve",
]
