"""Filters: what happens to a request at a node, decided before the node's backend runs.

TorchPipe's statuses and built-in filters, with its spellings: a node's ``filter`` key names a
status (the filter always returns it) or a filter (a function of the request's dict, which it
may change, returning a status). ``register_filter`` adds your own, as ``register_backend``
adds backends.

- ``Run`` (``Continue``): run the node's backend on the dict.
- ``Skip``: do not run it; the dict goes on as the node's output.
- ``SerialSkip`` / ``SubGraphSkip``: skip the longest serial chain / the largest independent
  subgraph starting here (every node of it whose predecessors are all inside it).
- ``Break``: the request leaves the graph now; the dict is its final state.
- ``Error``: the request fails (``FilterError`` naming the node).
- ``swap`` (the default of a node with one predecessor and no ``map``): no ``result`` means
  Break; otherwise ``result`` becomes ``data`` and the node runs.
- ``or``: no ``result`` means Run (the predecessor produced nothing: try here); otherwise Skip.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any


class Status(enum.Enum):
    """What a filter decides for one request at one node."""

    RUN = "Run"
    SKIP = "Skip"
    SERIAL_SKIP = "SerialSkip"
    SUBGRAPH_SKIP = "SubGraphSkip"
    BREAK = "Break"
    ERROR = "Error"


#: A filter: the request's dict in (it may change it), a status out.
Filter = Callable[[dict[str, Any]], Status]


def _swap(item: dict[str, Any]) -> Status:
    if "result" not in item:
        return Status.BREAK
    item["data"] = item.pop("result")
    return Status.RUN


def _or(item: dict[str, Any]) -> Status:
    return Status.RUN if "result" not in item else Status.SKIP


def _always(status: Status) -> Filter:
    def decide(item: dict[str, Any]) -> Status:
        return status

    decide.__name__ = status.value
    return decide


#: TorchPipe's spellings of each status, all of which its ``filter`` key accepts.
_STATUS_SPELLINGS = {
    Status.RUN: ("Run", "run", "Continue", "continue"),
    Status.SKIP: ("Skip", "skip"),
    Status.SERIAL_SKIP: ("SerialSkip", "serial_skip", "serialskip"),
    Status.SUBGRAPH_SKIP: ("SubGraphSkip", "subgraph_skip", "subgraphskip"),
    Status.BREAK: ("Break", "break"),
    Status.ERROR: ("Error", "error"),
}

_FILTERS: dict[str, Filter] = {"swap": _swap, "or": _or}
for _status, _spellings in _STATUS_SPELLINGS.items():
    for _spelling in _spellings:
        _FILTERS[_spelling] = _always(_status)

#: The filters a node gets when it sets none (``swap`` is the fast path of the router).
SWAP = "swap"
RUN = "Run"


def constant_status(name: str) -> Status | None:
    """The status a filter named ``name`` always returns (None: it looks at the request)."""
    for status, spellings in _STATUS_SPELLINGS.items():
        if name in spellings:
            return status
    return None


def register_filter(name: str) -> Callable[[Filter], Filter]:
    """Decorator: make ``function(item) -> Status`` available as ``filter = "<name>"``."""

    def register(function: Filter) -> Filter:
        if name in _FILTERS:
            raise ValueError(f"a filter named {name!r} exists already (the built-ins included)")
        _FILTERS[name] = function
        return function

    return register


def filter_function(name: str) -> Filter:
    """The filter called ``name``; ``KeyError`` naming the known ones otherwise."""
    try:
        return _FILTERS[name]
    except KeyError:
        known = ", ".join(sorted(_FILTERS))
        raise KeyError(f"unknown filter {name!r}; known: {known}") from None


def filter_names() -> list[str]:
    """Every filter name that ``filter`` accepts now."""
    return sorted(_FILTERS)
