"""The Backend interface: what every stage of a pipeline implements."""

from __future__ import annotations

import sys
from typing import Any, ClassVar

#: ``Backend.max()`` returns this when any batch size is fine (per-item backends).
UNBOUNDED_BATCH = sys.maxsize


class Backend:
    """One stage's computation. The scheduler owns threading; a backend may assume that only
    one thread calls its ``forward`` at a time (each instance runs on its own worker thread).

    Lifecycle, all on the instance's worker thread: the class is created with no arguments,
    ``children`` is set from the backend expression (``A[B]`` gives ``A`` the child ``B``),
    then ``init(params)`` is called once, then ``forward(batch)`` for every batch.

    ``forward`` receives a list of request dicts. It reads ``item["data"]`` and writes
    ``item["result"]``; an item left without ``result`` ends its request with no result and no
    error. Raising fails the batch; when the batch held several requests the scheduler runs
    each again alone, so only the request that fails on its own gets the error. ``forward`` must
    therefore be safe to re-run on an item (do not consume ``data`` destructively).
    """

    #: Parameter names this backend reads (used to warn on typos). ``None``: not declared.
    PARAMS: ClassVar[frozenset[str] | None] = None
    #: Parameters naming files that must exist at load time (checked by the config loader).
    FILE_PARAMS: ClassVar[tuple[str, ...]] = ()
    #: How many children the backend expression may give it (``None``: any number).
    MAX_CHILDREN: ClassVar[int | None] = 0

    children: list[Backend]
    #: The filter written before each child (``S[(or)A,B]``); None where none was.
    child_filters: list[str | None] | None = None

    def __init__(self) -> None:
        self.children = []

    def init(self, params: dict[str, Any]) -> None:
        """Initialise from the node's parameters (TOML values or strings).

        The default initialises the children in order; wrappers that need to set something up
        first (a CUDA stream, say) override this and initialise their children themselves.
        """
        for child in self.children:
            child.init(params)

    def forward(self, batch: list[dict[str, Any]]) -> None:
        """Process a batch of requests in place."""
        raise NotImplementedError(f"{type(self).__name__}.forward is not implemented")

    def min(self) -> int:
        """Smallest batch this backend accepts."""
        return 1

    def max(self) -> int:
        """Largest batch this backend accepts (``UNBOUNDED_BATCH`` for any size)."""
        return UNBOUNDED_BATCH

    def placement(self) -> str | None:
        """Where this instance computes (e.g. ``"cuda:1"``), for stats; ``None``: no device.

        The default reports the first child's placement, so wrappers need not override it.
        """
        for child in self.children:
            where = child.placement()
            if where is not None:
                return where
        return None

    def close(self) -> None:
        """Release resources; called on the worker thread when the pipeline closes."""


def param_int(params: dict[str, Any], key: str, default: int) -> int:
    """Read an integer parameter that may come as a TOML int or a string (``"4"``)."""
    value = params.get(key, default)
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"parameter {key!r} must be an integer, got {value!r}") from None


def param_device_ids(params: dict[str, Any]) -> list[int] | None:
    """Read ``device_id`` as GPU indices: ``1``, ``"0,1"`` or ``[0, 1]``; ``None`` when absent."""
    value = params.get("device_id")
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    parts = value if isinstance(value, list | tuple) else str(value).split(",")
    try:
        ids = [int(str(part).strip()) for part in parts]
    except ValueError:
        raise ValueError(f"device_id must be GPU indices like '0,1', got {value!r}") from None
    if not ids or min(ids) < 0:
        raise ValueError(f"device_id must be GPU indices like '0,1', got {value!r}")
    return ids


def param_float_list(params: dict[str, Any], key: str) -> list[float] | None:
    """Read ``"1, 2, 3"`` or ``[1, 2, 3]`` as a list of floats; ``None`` when absent."""
    value = params.get(key)
    if value is None:
        return None
    parts = value if isinstance(value, list | tuple) else str(value).split(",")
    try:
        return [float(str(part).strip()) for part in parts]
    except ValueError:
        raise ValueError(f"parameter {key!r} must be numbers, got {value!r}") from None
