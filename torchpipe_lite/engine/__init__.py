"""A model stage shared by several processes: ``EngineServer`` runs it in one process and
the ``EngineTensor`` backend sends it requests from others through shared-memory slots."""

from __future__ import annotations

from typing import Any

__all__ = ["EngineFigures", "EngineServer"]


def __getattr__(name: str) -> Any:
    # Imported on first use: the backends package imports this package's protocol while it
    # registers EngineTensor, before the scheduler the server builds on is importable.
    if name in __all__:
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
