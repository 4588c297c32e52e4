"""The backend registry: names in backend expressions map to Backend classes."""

from __future__ import annotations

import threading
from collections.abc import Callable

from .base import Backend

_registry: dict[str, type[Backend]] = {}
_lock = threading.Lock()


def register_backend(name: str) -> Callable[[type[Backend]], type[Backend]]:
    """Class decorator: make a Backend usable as ``name`` in backend expressions."""
    if not name.isidentifier():
        raise ValueError(f"backend name {name!r} must be an identifier")

    def decorate(cls: type[Backend]) -> type[Backend]:
        if not (isinstance(cls, type) and issubclass(cls, Backend)):
            raise TypeError(f"@register_backend({name!r}) needs a Backend subclass, got {cls!r}")
        with _lock:
            _registry[name] = cls
        return cls

    return decorate


def backend_class(name: str) -> type[Backend]:
    """The class registered as ``name``; ``KeyError`` naming the known ones otherwise."""
    try:
        return _registry[name]
    except KeyError:
        known = ", ".join(sorted(_registry))
        raise KeyError(f"unknown backend {name!r} (registered: {known})") from None


def registered_backends() -> list[str]:
    """Names of every registered backend, sorted."""
    return sorted(_registry)
