"""The backend registry: names in backend expressions map to Backend classes."""

from __future__ import annotations

import difflib
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
    """The class registered as ``name``, matched without regard to case when no exact match
    exists (TorchPipe's own configs write ``cvtColorMat``); ``KeyError`` naming a near miss and
    the known ones otherwise."""
    found = _registry.get(name)
    if found is not None:
        return found
    folded = [key for key in _registry if key.lower() == name.lower()]
    if len(folded) == 1:
        return _registry[folded[0]]
    close = difflib.get_close_matches(name.lower(), [key.lower() for key in _registry], n=1)
    by_lower = {key.lower(): key for key in _registry}
    hint = f" (did you mean {by_lower[close[0]]!r}?)" if close else ""
    known = ", ".join(sorted(_registry))
    raise KeyError(f"unknown backend {name!r}{hint} (registered: {known})")


def registered_backends() -> list[str]:
    """Names of every registered backend, sorted."""
    return sorted(_registry)
