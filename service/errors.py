"""Maps library and handler failures to the wire's ``InferenceError`` codes."""

from __future__ import annotations

import logging

from service.gen.inference.ttypes import ErrorCode, InferenceError
from torchpipe_lite.errors import (
    InvalidInputError,
    NoResultError,
    OverloadedError,
    PipelineClosedError,
    RequestTimeoutError,
)

logger = logging.getLogger(__name__)

#: Longest uuid echoed into log lines (a client chooses it: keep logs bounded and on one line).
_LOG_UUID_CHARS = 64


def inference_error(code: int, message: str, uuid: str | None = None) -> InferenceError:
    """An ``InferenceError`` with the given code."""
    return InferenceError(code=code, message=message, uuid=uuid)


def printable_uuid(uuid: object) -> str:
    """The uuid as it may appear in a log line: truncated and repr-quoted (no newlines)."""
    text = str(uuid)
    if len(text) > _LOG_UUID_CHARS:
        text = text[:_LOG_UUID_CHARS] + "..."
    return repr(text)


def to_inference_error(exc: BaseException, uuid: str | None) -> InferenceError:
    """The wire error for a failure of one request.

    Bad input, or no result (a decoder given bytes that are not an image) -> INVALID_IMAGE;
    a full queue or a closing pipeline -> OVERLOADED (retryable); a request that waited past
    its deadline -> TIMEOUT; anything else -> INTERNAL, whose
    details stay in the server log (``is_internal`` tells the caller to log the traceback).
    """
    if isinstance(exc, InferenceError):  # immutable, as thrift makes exceptions
        if exc.uuid is None:
            return InferenceError(code=exc.code, message=exc.message, uuid=uuid)
        return exc
    if isinstance(exc, InvalidInputError):
        return inference_error(ErrorCode.INVALID_IMAGE, f"invalid image: {exc}", uuid)
    if isinstance(exc, NoResultError):
        return inference_error(ErrorCode.INVALID_IMAGE, "not a decodable image", uuid)
    if isinstance(exc, OverloadedError):
        return inference_error(ErrorCode.OVERLOADED, f"server overloaded, retry later: {exc}", uuid)
    if isinstance(exc, PipelineClosedError):
        return inference_error(ErrorCode.OVERLOADED, "server is shutting down, retry later", uuid)
    if isinstance(exc, RequestTimeoutError):
        return inference_error(ErrorCode.TIMEOUT, f"request timed out before it ran: {exc}", uuid)
    return inference_error(
        ErrorCode.INTERNAL,
        f"internal error ({type(exc).__name__}); the server log has the details",
        uuid,
    )


def is_internal(error: InferenceError) -> bool:
    """Whether the failure is the server's fault (log it with a traceback)."""
    return error.code == ErrorCode.INTERNAL


def code_name(code: int) -> str:
    """``ErrorCode`` member name, e.g. ``"INVALID_IMAGE"``."""
    return ErrorCode._VALUES_TO_NAMES.get(code, str(code))
