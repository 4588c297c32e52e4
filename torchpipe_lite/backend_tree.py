"""Build a live backend (with its children) from a parsed backend expression."""

from __future__ import annotations

from typing import Any

from .backends.base import Backend
from .backends.registry import backend_class
from .config.expression import BackendSpec, parse_backend_expression


def instantiate(spec: BackendSpec) -> Backend:
    """Create the backend tree of ``spec`` (children attached, nothing initialised yet)."""
    backend = backend_class(spec.name)()
    backend.children = [instantiate(child) for child in spec.children]
    if any(child.filter for child in spec.children):
        backend.child_filters = [child.filter for child in spec.children]
    return backend


def create_backend(expression: str | BackendSpec, params: dict[str, Any] | None = None) -> Backend:
    """Create and initialise a backend outside any pipeline, on the calling thread.

    For callers that schedule a backend themselves (the locked baseline of the service does);
    the backend is not thread-safe: serialise calls to ``forward``.
    """
    spec = parse_backend_expression(expression) if isinstance(expression, str) else expression
    backend = instantiate(spec)
    backend.init(dict(params or {}))
    return backend
