"""Filters: what happens to a request at a node, decided before the node's backend runs.

TorchPipe's statuses and built-in filters, with its spellings: a node's ``filter`` key names a
status (the filter always returns it) or a filter (a function of the request's dict, which it
may change, returning a status). ``register_filter`` adds your own, as ``register_backend``
adds backends: a function, or (TorchPipe's form, ``register_filter(cls, name)``) a class whose
instances have ``forward(item) -> Status`` and may have ``init(params, shared)``; each node
using it gets its own instance, initialised with that node's parameters.

A filter replaces the default ``swap``: as in TorchPipe, the dict it passes to the backend is
the predecessor's output as it stands, ``data`` unchanged. A filter meant to compute on the
predecessor's ``result`` moves it to ``data`` itself (``item["data"] = item.pop("result")``).
Whatever the filter leaves in ``result`` is dropped when the node runs, so a backend that
writes no result ends the request with none.

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
    # TorchPipe's member spellings: the same members under its names.
    Run = "Run"
    Continue = "Run"
    Skip = "Skip"
    SerialSkip = "SerialSkip"
    SubGraphSkip = "SubGraphSkip"
    Break = "Break"
    Error = "Error"


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

_FILTERS: dict[str, Filter | type] = {"swap": _swap, "or": _or}
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


def register_filter(target: str | Callable | type, name: str | None = None) -> Any:
    """Make a filter available as ``filter = "<name>"``.

    ``@register_filter("name")`` decorates a function ``(item) -> Status``;
    ``register_filter(cls, "name")`` (TorchPipe's call) registers a class, instantiated once
    per node that names it (see the module docstring); a function may be given so too.
    """
    if isinstance(target, str):
        if name is not None:
            raise TypeError("register_filter(name) decorates; register_filter(cls, name) registers")
        return lambda function: _register(target, function)
    if not isinstance(name, str):
        raise TypeError(f"register_filter({target!r}, name): the name must be a string")
    return _register(name, target)


def _register(name: str, target: Any) -> Any:
    if not name or not isinstance(name, str):
        raise ValueError(f"a filter name must be a non-empty string, got {name!r}")
    if isinstance(target, type):
        if not callable(getattr(target, "forward", None)):
            raise TypeError(f"filter class {target.__name__} needs a forward(item) method")
    elif not callable(target):
        raise TypeError(f"a filter is a function or a class, got {target!r}")
    if name in _FILTERS:
        raise ValueError(f"a filter named {name!r} exists already (the built-ins included)")
    _FILTERS[name] = target
    return target


def _lookup(name: str) -> Filter | type:
    try:
        return _FILTERS[name]
    except KeyError:
        known = ", ".join(sorted(_FILTERS))
        raise KeyError(f"unknown filter {name!r}; known: {known}") from None


def filter_function(name: str, params: dict[str, Any] | None = None) -> Filter:
    """The filter called ``name`` as a function of the item: a registered class is
    instantiated here and initialised with ``params`` (a node's). ``KeyError`` naming the
    known ones when there is no such filter."""
    found = _lookup(name)
    if not isinstance(found, type):
        return found
    instance = found()
    init = getattr(instance, "init", None)
    # TorchPipe hands filters its string-valued node parameters and a shared dict.
    strings = {key: str(value) for key, value in (params or {}).items()}
    if callable(init) and init(strings, None) is False:
        raise ValueError(f"filter {name!r}: init returned False")
    return instance.forward


def check_filter(name: str) -> None:
    """``KeyError`` naming the known filters when ``name`` is not one."""
    _lookup(name)


def filter_names() -> list[str]:
    """Every filter name that ``filter`` accepts now."""
    return sorted(_FILTERS)
