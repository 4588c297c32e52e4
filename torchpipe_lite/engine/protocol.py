"""The model engine's socket protocol and the layout of its shared-memory slots.

A client (``EngineTensor``) and the engine (``EngineServer``) talk over a Unix stream socket:

1. engine -> client ``HELLO``: the input geometry (H, W, C, uint8 pixels), the number of
   float32 values one result holds, and the largest batch the engine runs;
2. client -> engine ``ATTACH``: how many slots the client made, with the slots' memory (a
   memfd) passed as a file descriptor; engine -> client ``READY``;
3. then per request: client -> engine one ``u32`` slot index, once the slot's pixels are
   written; engine -> client one ``REPLY`` (slot, status, message length) plus the message,
   once the slot's result is written (status OK) or the request failed (a typed status).

Pixels and results never cross the socket: each slot is a fixed region of the client's memfd,
input pixels first, then the result. A record is four bytes, so the engine's per-request work
is a few small reads and writes, whatever the image.
"""

from __future__ import annotations

import enum
import socket
import struct
from dataclasses import dataclass

from torchpipe_lite import errors

MAGIC = b"TPEN"
VERSION = 2  # 2: typed failure statuses

#: engine -> client: magic, version, height, width, channels, result values, max batch.
HELLO = struct.Struct("<4sIIIIII")
#: client -> engine: magic, slot count (the memfd travels alongside as SCM_RIGHTS).
ATTACH = struct.Struct("<4sI")
#: engine -> client: magic, status (0: attached).
READY = struct.Struct("<4sI")
#: client -> engine, one per request: the slot whose pixels are ready.
SUBMIT = struct.Struct("<I")
#: engine -> client, one per request: slot, status, length of the UTF-8 message that follows.
REPLY = struct.Struct("<III")


class Status(enum.IntEnum):
    """A reply's status: the result is in the slot, there is none, or how the request failed.

    A failure travels as its error type's code and its text, and is raised on the client's
    side as that same type (``error_for``): no error class name is parsed back from text.
    """

    OK = 0
    #: The request ended without a result (the backend wrote none): no error.
    NO_RESULT = 1
    BACKEND_ERROR = 2
    INVALID_INPUT = 3
    OVERLOADED = 4
    TIMED_OUT = 5
    CANCELLED = 6


_ERROR_TYPES: dict[Status, type[errors.RequestError]] = {
    Status.BACKEND_ERROR: errors.BackendError,
    Status.INVALID_INPUT: errors.InvalidInputError,
    Status.OVERLOADED: errors.OverloadedError,
    Status.TIMED_OUT: errors.RequestTimeoutError,
    Status.CANCELLED: errors.RequestCancelledError,
}


def status_for(error: BaseException) -> Status:
    """The status that carries ``error`` to the client: its request error type, or (any
    other exception, e.g. from a backend) ``BACKEND_ERROR``."""
    for status, error_type in _ERROR_TYPES.items():
        if type(error) is error_type:
            return status
    return Status.BACKEND_ERROR


def failure_text(error: BaseException) -> str:
    """What a failed reply says: the error's text, after its type's name when that type has
    no status of its own (for the reader only: the status carries the type)."""
    if isinstance(error, errors.RequestError) and status_for(error) is not Status.BACKEND_ERROR:
        return str(error)
    return f"{type(error).__name__}: {error}"


def error_for(status: Status, message: str) -> errors.RequestError:
    """The error a failed reply stands for, as the type the engine raised."""
    error_type = _ERROR_TYPES.get(status, errors.BackendError)
    return error_type(f"model engine: {message}" if error_type is errors.BackendError else message)


#: Most slots one connection may attach; bounds the engine's per-connection bookkeeping.
MAX_SLOTS_PER_CONNECTION = 1024
#: Longest error message a reply carries (longer ones are cut).
MAX_MESSAGE_BYTES = 4096

_ALIGN_BYTES = 64


def _aligned(size: int) -> int:
    return (size + _ALIGN_BYTES - 1) // _ALIGN_BYTES * _ALIGN_BYTES


@dataclass(frozen=True, slots=True)
class SlotLayout:
    """Where one slot's pixels and result lie in a client's memfd."""

    height: int
    width: int
    channels: int
    result_values: int

    @property
    def input_bytes(self) -> int:
        return self.height * self.width * self.channels

    @property
    def result_offset(self) -> int:
        """Offset of the float32 result inside a slot (cache-line aligned)."""
        return _aligned(self.input_bytes)

    @property
    def slot_bytes(self) -> int:
        return self.result_offset + _aligned(4 * self.result_values)


class EngineProtocolError(errors.TorchpipeError):
    """The peer broke the protocol (bad magic, version, slot or size); the connection ends."""


def recv_exact(sock: socket.socket, size: int) -> bytes:
    """Exactly ``size`` bytes; ``ConnectionError`` when the peer closes first."""
    chunks = []
    remaining = size
    while remaining:
        chunk = sock.recv(remaining)
        if not chunk:
            raise ConnectionError("the peer closed the connection")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def check_magic(magic: bytes, what: str) -> None:
    """``EngineProtocolError`` unless ``magic`` is the engine's."""
    if magic != MAGIC:
        raise EngineProtocolError(f"{what}: not a torchpipe_lite engine peer (magic {magic!r})")
