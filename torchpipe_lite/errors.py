"""The typed error hierarchy of torchpipe_lite: every failure a caller can see is one of these."""

from __future__ import annotations


class TorchpipeError(Exception):
    """Base class of every error raised by torchpipe_lite."""

    #: True when the same request may succeed if sent again later (e.g. overload).
    retryable: bool = False


class ConfigError(TorchpipeError, ValueError, RuntimeError):
    """The configuration is invalid; names the node and key at fault.

    Also a ``RuntimeError``: what TorchPipe raises for a configuration it cannot load."""

    def __init__(self, message: str, *, node: str | None = None, key: str | None = None):
        self.node = node
        self.key = key
        where = ""
        if node is not None:
            where = f"[{node}]" + (f".{key}" if key else "") + ": "
        elif key is not None:
            where = f"{key}: "
        super().__init__(where + message)


class BackendInitError(TorchpipeError, RuntimeError):
    """A backend instance failed to initialise while the pipeline was being built."""

    def __init__(self, message: str, *, node: str, backend: str):
        self.node = node
        self.backend = backend
        super().__init__(f"node {node!r}, backend {backend!r}: {message}")


class RequestError(TorchpipeError, RuntimeError):
    """A single request failed; ``node`` and ``backend`` say where, when known.

    A ``RuntimeError`` too, as TorchPipe's failed calls are, so its callers' handlers catch it."""

    def __init__(self, message: str = "", *, node: str | None = None, backend: str | None = None):
        self.node = node
        self.backend = backend
        super().__init__(message)

    def __str__(self) -> str:
        message = super().__str__()
        if self.node is None:
            return message
        if self.backend is None:
            return f"node {self.node!r}: {message}"
        return f"node {self.node!r}, backend {self.backend!r}: {message}"


class BackendError(RequestError):
    """A backend raised while running this request; the original exception is ``__cause__``.

    Where that was one of Python's common errors (``IndexError``, ``KeyError``...), the
    ``BackendError`` is an instance of it too (:func:`backend_error_for`), so a handler for
    the original type still catches it, as TorchPipe's callers catch libtorch's errors."""


#: The built-in error types a BackendError keeps, most specific first.
_KEPT_TYPES = (
    IndexError,
    KeyError,
    LookupError,
    ValueError,
    TypeError,
    AttributeError,
    ArithmeticError,
    NotImplementedError,
)
_KEEPING: dict[type, type] = {}
for _kept in _KEPT_TYPES:
    _name = f"Backend{_kept.__name__}"
    _KEEPING[_kept] = globals()[_name] = type(
        _name,
        (BackendError, _kept),
        {"__doc__": f"A BackendError whose cause is a {_kept.__name__}.", "__module__": __name__},
    )


def backend_error_for(cause: BaseException) -> type[BackendError]:
    """The BackendError class for a backend's ``cause``: one that is also the first of the
    common built-in types ``cause`` is an instance of, else ``BackendError`` itself."""
    for kept in _KEPT_TYPES:
        if isinstance(cause, kept):
            return _KEEPING[kept]
    return BackendError


class InvalidInputError(RequestError):
    """The request's input cannot be processed (e.g. bytes that are not an image).

    Backends raise it for bad input; it reaches the caller as it is, with node and backend set.
    """


class OverloadedError(RequestError):
    """A node's queue was full (``max_queue_size``); the request was not run. Retry later."""

    retryable = True


class RequestTimeoutError(RequestError, TimeoutError):
    """The request waited longer than ``request_timeout`` in a queue, or past its own
    deadline (``timeout_s`` of the call), and was not run."""

    retryable = True


class RequestCancelledError(RequestError):
    """The caller cancelled the request (its client went away) before a stage ran it; it was
    dropped there, unrun."""


class FilterError(RequestError):
    """A node's filter failed the request (it said Error, or raised); ``node`` says where."""


class NoResultError(RequestError):
    """The request ended without a result (asked for with ``strict=True``): a stage had nothing
    to produce for it, e.g. a decoder given bytes that are not an image. ``node`` is where."""


class PipelineClosedError(RequestError):
    """The pipeline is closed (or closing) and accepts no new requests."""


class PipelineUnavailableError(RequestError):
    """The process serving the pipeline (``tp.serve``) could not be reached, or went away
    while the request was with it. Retry: a supervisor restarts it."""

    retryable = True


class InvalidRequestError(RequestError, ValueError):
    """The request itself is malformed (not a dict, no ``data``, unknown ``node_name``...)."""


class EntryNodeError(InvalidRequestError, IndexError):
    """The request names no entry node where the graph has several, or one that is not an
    entry (an ``IndexError`` too, as TorchPipe's out-of-range ``node_name`` is)."""


__all__ = [
    "BackendError",
    "BackendInitError",
    "ConfigError",
    "EntryNodeError",
    "FilterError",
    "InvalidInputError",
    "InvalidRequestError",
    "NoResultError",
    "OverloadedError",
    "PipelineClosedError",
    "PipelineUnavailableError",
    "RequestCancelledError",
    "RequestError",
    "RequestTimeoutError",
    "TorchpipeError",
]
