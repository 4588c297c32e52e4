"""The frames a served pipeline and its clients exchange over a Unix socket, and how a
request's data is laid out in the client's shared memory.

Every frame is a five-byte header (kind, body length) and a body. A client attaches once
(``HELLO``, with its shared-memory arena passed as a file descriptor) and the server answers
``READY`` with the pipeline's shape. Then requests travel in batches both ways:

- client -> server ``SUBMIT``: fixed-size records, one per request, pointing into the arena
  where the request's data already lies; any number of them in one frame;
- server -> client ``RESULTS``: one frame per batch of requests that ended, pickled once.

Data never crosses the socket: bytes, NumPy arrays and tensors are written into the arena by
the client and read in place by the server. The socket is owner-only (both ends are one
user's processes), which is why results may travel pickled.
"""

from __future__ import annotations

import enum
import pickle
import socket
import struct
from dataclasses import dataclass
from typing import Any

from .. import errors

MAGIC = b"TPRM"
VERSION = 1

#: kind (u8), body length (u32).
FRAME_HEADER = struct.Struct("<BI")
#: HELLO body: magic, version, arena size in bytes (the arena's memfd travels alongside).
HELLO = struct.Struct("<4sIQ")
#: One SUBMIT record: request id, arena offset, length, data kind, flags, entry node index,
#: timeout in ms (negative: none).
SUBMIT_RECORD = struct.Struct("<QQIBBHi")
#: One CANCEL record: request id.
CANCEL_RECORD = struct.Struct("<Q")
#: Largest frame either side accepts; a batch's results stay far below it.
MAX_FRAME_BYTES = 64 << 20
#: ``entry`` of a request that names no ``node_name``: the pipeline's one entry.
DEFAULT_ENTRY = 0xFFFF
#: SUBMIT flag: the request ends with ``NoResultError`` when no stage produced a result.
FLAG_STRICT = 1


class FrameKind(enum.IntEnum):
    HELLO = 1
    SUBMIT = 2
    CANCEL = 3
    STATS = 4
    READY = 101
    RESULTS = 102
    STATS_REPLY = 103


class DataKind(enum.IntEnum):
    """How a request's ``data`` lies in the arena."""

    BYTES = 0  # bytes, bytearray or memoryview, raw
    NDARRAY = 1  # a NumPy array: array header, then its bytes
    TENSOR = 2  # a CPU torch tensor: array header, then its bytes
    PICKLE = 3  # anything else, pickled


class WireError(errors.TorchpipeError):
    """The peer broke the protocol (bad magic, version, frame or record); its connection ends."""


@dataclass(frozen=True, slots=True)
class PipelineShape:
    """What a client learns on attaching: the nodes, the entries and each node's batch range."""

    node_names: tuple[str, ...]
    entries: tuple[str, ...]
    batch_ranges: dict[str, tuple[int, int]]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one request ended: its ``result`` (``has_result`` False: none) or its error."""

    request_id: int
    has_result: bool
    result: Any
    error: ErrorRecord | None


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """A request's error, by the name of its type in ``torchpipe_lite.errors`` and its parts."""

    type_name: str
    message: str
    node: str | None
    backend: str | None

    @classmethod
    def of(cls, error: BaseException) -> ErrorRecord:
        if isinstance(error, errors.RequestError):
            message = error.args[0] if error.args else ""
            return cls(type(error).__name__, str(message), error.node, error.backend)
        return cls("BackendError", f"{type(error).__name__}: {error}", None, None)

    def rebuild(self) -> errors.RequestError:
        """The error as the type the server raised (``BackendError`` for one this side does
        not know)."""
        error_type = getattr(errors, self.type_name, None)
        if not (isinstance(error_type, type) and issubclass(error_type, errors.RequestError)):
            error_type = errors.BackendError
        return error_type(self.message, node=self.node, backend=self.backend)


def frame(kind: FrameKind, body: bytes = b"") -> bytes:
    return FRAME_HEADER.pack(kind, len(body)) + body


def pickled_frame(kind: FrameKind, value: Any) -> bytes:
    return frame(kind, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


class FrameReader:
    """Splits a byte stream into frames; ``feed`` returns every whole frame received so far."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, memoryview]]:
        buffer = self._buffer
        buffer += data
        frames: list[tuple[int, memoryview]] = []
        position = 0
        size = len(buffer)
        while size - position >= FRAME_HEADER.size:
            kind, length = FRAME_HEADER.unpack_from(buffer, position)
            if length > MAX_FRAME_BYTES:
                raise WireError(f"a frame of {length} bytes (the limit is {MAX_FRAME_BYTES})")
            end = position + FRAME_HEADER.size + length
            if end > size:
                break
            frames.append((kind, memoryview(bytes(buffer[position + FRAME_HEADER.size : end]))))
            position = end
        del buffer[:position]
        return frames


def recv_frame(sock: socket.socket) -> tuple[int, bytes]:
    """One whole frame from a blocking socket (the handshake)."""
    kind, length = FRAME_HEADER.unpack(_recv_exact(sock, FRAME_HEADER.size))
    if length > MAX_FRAME_BYTES:
        raise WireError(f"a frame of {length} bytes (the limit is {MAX_FRAME_BYTES})")
    return kind, _recv_exact(sock, length)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            raise ConnectionError("the peer closed the connection")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


# -- arrays in the arena ---------------------------------------------------------------------

#: dtypes an array or tensor may have in the arena, by their one-byte code.
ARRAY_DTYPES = (
    "uint8",
    "int8",
    "int16",
    "int32",
    "int64",
    "float16",
    "float32",
    "float64",
    "bool",
    "bfloat16",
)
_ARRAY_HEAD = struct.Struct("<BB")
_DIM = struct.Struct("<Q")
#: Arrays start this far into their record, so their bytes are aligned for any dtype.
ARRAY_HEADER_BYTES = 64
MAX_ARRAY_DIMS = (ARRAY_HEADER_BYTES - _ARRAY_HEAD.size) // _DIM.size


def pack_array_header(dtype_name: str, shape: tuple[int, ...]) -> bytes:
    if len(shape) > MAX_ARRAY_DIMS:
        raise errors.InvalidRequestError(f"an array of {len(shape)} dimensions cannot be sent")
    head = _ARRAY_HEAD.pack(ARRAY_DTYPES.index(dtype_name), len(shape))
    dims = b"".join(_DIM.pack(dim) for dim in shape)
    return (head + dims).ljust(ARRAY_HEADER_BYTES, b"\0")


def unpack_array_header(record: memoryview) -> tuple[str, tuple[int, ...]]:
    if len(record) < ARRAY_HEADER_BYTES:
        raise WireError("an array record shorter than its header")
    code, ndim = _ARRAY_HEAD.unpack_from(record)
    if code >= len(ARRAY_DTYPES) or ndim > MAX_ARRAY_DIMS:
        raise WireError(f"an array header with dtype code {code} and {ndim} dimensions")
    shape = tuple(_DIM.unpack_from(record, _ARRAY_HEAD.size + 8 * i)[0] for i in range(ndim))
    return ARRAY_DTYPES[code], shape
