"""The model engine's socket protocol and the layout of its shared-memory slots.

A client (``EngineTensor``) and the engine (``EngineServer``) talk over a Unix stream socket:

1. engine -> client ``HELLO``: the input geometry (H, W, C, uint8 pixels), the number of
   float32 values one result holds, and the largest batch the engine runs;
2. client -> engine ``ATTACH``: how many slots the client made, with the slots' memory (a
   memfd) passed as a file descriptor; engine -> client ``READY``;
3. then per request: client -> engine one ``u32`` slot index, once the slot's pixels are
   written; engine -> client one ``REPLY`` (slot, status, message length) plus the message,
   once the slot's result is written (status OK) or the request failed.

Pixels and results never cross the socket: each slot is a fixed region of the client's memfd,
input pixels first, then the result. A record is four bytes, so the engine's per-request work
is a few small reads and writes, whatever the image.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

MAGIC = b"TPEN"
VERSION = 1

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

STATUS_OK = 0
#: The request ended without a result (the backend wrote none): no error.
STATUS_NO_RESULT = 1
#: The request failed; the message is "<ErrorClass>: <text>".
STATUS_ERROR = 2

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


class EngineProtocolError(Exception):
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
