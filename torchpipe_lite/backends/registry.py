"""The backend registry: names in backend expressions map to Backend classes."""

from __future__ import annotations

import difflib
import threading
from typing import Any

from .base import UNBOUNDED_BATCH, Backend

_registry: dict[str, type[Backend]] = {}
_lock = threading.Lock()


def register_backend(target: str | type, name: str | None = None) -> Any:
    """Make a backend usable as ``name`` in backend expressions.

    ``@register_backend("Name")`` decorates a ``Backend`` subclass. ``register_backend(cls,
    "Name")`` is TorchPipe's call: ``cls`` is a ``Backend`` subclass, or any class with
    ``forward(batch)`` (and optionally ``init(params)``, ``min()``, ``max()``), which runs as
    TorchPipe runs its Python backends (see :class:`PythonClassBackend`); either is then
    usable as ``Name`` or ``Python[Name]``.
    """
    if isinstance(target, str):
        if name is not None:
            raise TypeError(
                "register_backend(name) decorates; register_backend(cls, name) registers"
            )
        _check_name(target)
        return lambda cls: _register(target, cls)
    if not isinstance(name, str):
        raise TypeError(f"register_backend({target!r}, name): the name must be a string")
    _check_name(name)
    return _register(name, target)


def _check_name(name: str) -> None:
    if not name.isidentifier():
        raise ValueError(f"backend name {name!r} must be an identifier")


def _register(name: str, cls: Any) -> Any:
    if not isinstance(cls, type):
        raise TypeError(f"register_backend({name!r}) needs a class, got {cls!r}")
    if issubclass(cls, Backend):
        registered: type[Backend] = cls
    elif callable(getattr(cls, "forward", None)):
        registered = type(name, (PythonClassBackend,), {"user_class": cls})
    else:
        raise TypeError(f"register_backend({name!r}): {cls.__name__} has no forward(batch)")
    with _lock:
        _registry[name] = registered
    return cls


class PythonClassBackend(Backend):
    """A class registered in TorchPipe's form, run as TorchPipe runs Python backends: its
    ``init`` gets the node's parameters as strings, ``forward`` a list of request dicts; a
    class without ``max()`` takes one request at a time (TorchPipe's default), one without
    ``min()`` accepts a batch of one."""

    user_class: type
    PARAMS = None

    def init(self, params: dict[str, Any]) -> None:
        self.instance = self.user_class()
        init = getattr(self.instance, "init", None)
        if callable(init):
            strings = {
                key: value if isinstance(value, str) else str(value)
                for key, value in params.items()
            }
            if init(strings) is False:
                raise ValueError(f"{self.user_class.__name__}.init returned False")

    def forward(self, batch: list[dict[str, Any]]) -> None:
        self.instance.forward(batch)

    def min(self) -> int:
        found = getattr(self.instance, "min", None)
        return int(found()) if callable(found) else 1

    def max(self) -> int:
        found = getattr(self.instance, "max", None)
        value = int(found()) if callable(found) else 1
        return UNBOUNDED_BATCH if value >= 2**32 - 1 else value


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
