"""Configuration: TOML/dict loading, validation, and the backend-expression parser."""

from ..values import Color, DeviceSpec, Precision
from .expression import BackendSpec, ExpressionError, parse_backend_expression
from .loader import load_config, read_toml
from .schema import NODE_KEYS, NodeConfig, PipelineConfig

__all__ = [
    "NODE_KEYS",
    "BackendSpec",
    "Color",
    "DeviceSpec",
    "ExpressionError",
    "NodeConfig",
    "PipelineConfig",
    "Precision",
    "load_config",
    "parse_backend_expression",
    "read_toml",
]
