"""torchpipe_lite: thread-safe, dynamically batched, multi-instance model pipelines."""

from . import backends as _backends  # noqa: F401  (registers the built-in backends)
from . import errors
from .backend_tree import create_backend
from .backends.base import UNBOUNDED_BATCH, Backend
from .backends.registry import register_backend, registered_backends
from .compat import Event, parse_toml
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
from .keys import (
    TASK_BOX_KEY,
    TASK_CONTEXT_KEY,
    TASK_DATA_KEY,
    TASK_EVENT_KEY,
    TASK_INFO_KEY,
    TASK_NODE_NAME_KEY,
    TASK_RESULT_KEY,
)
from .metrics import NodeStats
from .remote import PipelineServer, RemotePipeline, RemotePool, connect, serve
from .schedule import Pipeline, pipe

__version__ = "0.1.0"

__all__ = [
    "TASK_BOX_KEY",
    "TASK_CONTEXT_KEY",
    "TASK_DATA_KEY",
    "TASK_EVENT_KEY",
    "TASK_INFO_KEY",
    "TASK_NODE_NAME_KEY",
    "TASK_RESULT_KEY",
    "UNBOUNDED_BATCH",
    "Backend",
    "BackendError",
    "Color",
    "ConfigError",
    "DeviceSpec",
    "Event",
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
    "RemotePool",
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
    "parse_toml",
    "pipe",
    "register_backend",
    "register_filter",
    "registered_backends",
    "serve",
]
