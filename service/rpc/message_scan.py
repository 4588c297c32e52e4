"""Finds where one Thrift binary-protocol message ends, before any of it is decoded.

Clients of the reference interface use the buffered transport, whose messages carry no length
prefix: a non-blocking server must walk a message's structure to know whether all of it has
arrived. ``scan_message`` does that walk over the bytes received so far, checking every
declared length against the limits first, so a hostile length is refused before anything is
allocated or waited for. Only the strict binary protocol is accepted (every thrift client
writes the version word first), so a framed client, an HTTP request or random bytes are
refused at the first four bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from thrift.Thrift import TType

_VERSION_MASK = 0xFFFF0000
_VERSION_1 = 0x80010000
_TYPE_MASK = 0x000000FF
_I32 = struct.Struct("!i")
_FIELD_HEADER = struct.Struct("!bh")
_MAP_HEADER = struct.Struct("!bbi")
_LIST_HEADER = struct.Struct("!bi")

#: Encoded sizes of the fixed-size types.
_FIXED_BYTES = {
    TType.BOOL: 1,
    TType.BYTE: 1,
    TType.I16: 2,
    TType.I32: 4,
    TType.I64: 8,
    TType.DOUBLE: 8,
}
_CONTAINERS = (TType.LIST, TType.SET)
#: Longest method name a call may carry (the IDL's are a dozen characters).
MAX_METHOD_NAME_BYTES = 256
#: Deepest nesting a message may have: structs, lists, sets and maps all count, one level each
#: (the call's argument struct is level 0).
MAX_DEPTH = 32


class MalformedMessageError(ValueError):
    """The bytes are not a strict binary-protocol message within the limits."""


class MessageTooLargeError(MalformedMessageError):
    """The message declares more bytes than ``max_message_bytes``."""


@dataclass(frozen=True, slots=True)
class MessageHead:
    """A message's header: method name, message type, sequence id, where its body starts."""

    name: str
    message_type: int
    seqid: int
    body_offset: int


@dataclass(frozen=True, slots=True)
class ScanLimits:
    """What one message may declare."""

    max_message_bytes: int
    max_container_items: int


class _Incomplete(Exception):
    """More bytes are needed; ``needed`` is a lower bound on the message's total length."""

    def __init__(self, needed: int):
        self.needed = needed


def scan_message(
    buf: bytes | bytearray | memoryview, limits: ScanLimits
) -> tuple[MessageHead, int] | int:
    """``(head, end)`` when ``buf`` starts with a whole message ending at ``end``; otherwise
    the least total length the message can have (wait until that many bytes have arrived).

    Raises ``MessageTooLargeError`` or ``MalformedMessageError`` as soon as the bytes seen
    so far show the message cannot be valid within ``limits``. One pass over ``buf``; a
    message arriving piece by piece is scanned with one ``MessageScan`` instead.
    """
    return MessageScan(limits).advance(buf)


class MessageScan:
    """A walk over one message that resumes where it stopped when more of it arrives.

    ``advance(buf)`` is given the bytes received so far (each time the same bytes, extended)
    and answers as ``scan_message`` does; it walks only what it has not walked yet, so a
    message's total scanning work is linear in its length however finely it arrives. The
    state kept between calls is small and explicit: the head once read, the offset of the
    next item, and one frame per struct or container open there (at most ``MAX_DEPTH`` + 1).
    A step (one field, element, key or value) moves the walk only once all of its bytes have
    arrived, so a step cut short is simply tried again, from its start, on the next call.
    """

    __slots__ = ("_head", "_limits", "_position", "_stack", "steps")

    def __init__(self, limits: ScanLimits):
        self._limits = limits
        self._head: MessageHead | None = None
        self._position = 0
        #: One frame per open struct or container, innermost last: ``[element types, items
        #: left, index of the next item's type]``; a struct's is ``[None, 0, 0]``.
        self._stack: list[list] = []
        #: Steps walked so far, ones cut short included: the scan's work, which tests and
        #: benchmarks read.
        self.steps = 0

    def advance(self, buf: bytes | bytearray | memoryview) -> tuple[MessageHead, int] | int:
        """``(head, end)`` once the whole message is in ``buf``; otherwise the least total
        length it can have. Raises as ``scan_message`` does."""
        try:
            if self._head is None:
                self.steps += 1
                self._head = _read_head(buf, self._limits)
                self._position = self._head.body_offset
                self._stack.append([None, 0, 0])  # the argument struct, level 0
            if self._stack:
                self._walk(buf)
        except _Incomplete as incomplete:
            if incomplete.needed > self._limits.max_message_bytes:
                raise MessageTooLargeError(
                    f"the message needs over {self._limits.max_message_bytes} bytes"
                ) from None
            return incomplete.needed
        return self._head, self._position

    def _walk(self, buf: bytes | bytearray | memoryview) -> None:
        """Walk items until the message ends (the stack is empty) or the bytes run out.

        An explicit stack instead of recursion: every kind nested counts toward the one
        ``MAX_DEPTH``, and no message can exhaust the interpreter's stack. Each step checks
        that all of its bytes are in before it changes anything, then commits its position.
        """
        size = len(buf)
        limits = self._limits
        stack = self._stack
        position = self._position
        steps = self.steps
        try:
            while stack:
                steps += 1
                frame = stack[-1]
                element_types = frame[0]
                if element_types is None:  # a struct: the next field, or its end
                    if position >= size:
                        raise _Incomplete(position + 1)
                    value_type = buf[position]
                    if value_type == TType.STOP:
                        position += 1
                        stack.pop()
                        continue
                    value_at = position + 3
                    _need(value_at, size)
                else:  # a container: its next key, value or element, or its end
                    if frame[1] == 0:
                        stack.pop()
                        continue
                    value_type = element_types[frame[2]]
                    value_at = position
                opened = None
                fixed = _FIXED_BYTES.get(value_type)
                if fixed is not None:
                    after = value_at + fixed
                    _need(after, size)
                elif value_type == TType.STRING:
                    after = value_at + 4 + _length(buf, value_at, size, limits, "string")
                    _need(after, size)
                else:
                    after, opened = _open(buf, value_type, value_at, size, limits, len(stack))
                # Every byte of the step is in: commit it.
                if element_types is not None:
                    frame[2] += 1
                    if frame[2] == len(element_types):
                        frame[1] -= 1
                        frame[2] = 0
                position = after
                if opened is not None:
                    stack.append(opened)
        finally:
            self._position = position
            self.steps = steps


def _need(position: int, size: int) -> None:
    if position > size:
        raise _Incomplete(position)


def _i32(buf: bytes | bytearray | memoryview, position: int, size: int) -> int:
    _need(position + 4, size)
    return _I32.unpack_from(buf, position)[0]


def _length(
    buf: bytes | bytearray | memoryview, position: int, size: int, limits: ScanLimits, what: str
) -> int:
    length = _i32(buf, position, size)
    if length < 0:
        raise MalformedMessageError(f"negative {what} length {length}")
    if length > limits.max_message_bytes:
        raise MessageTooLargeError(f"{what} of {length} bytes")
    return length


def _read_head(buf: bytes | bytearray | memoryview, limits: ScanLimits) -> MessageHead:
    size = len(buf)
    word = _i32(buf, 0, size) & 0xFFFFFFFF
    if word & _VERSION_MASK != _VERSION_1:
        raise MalformedMessageError(f"no binary-protocol version word (0x{word:08x})")
    name_length = _length(buf, 4, size, limits, "method name")
    if name_length > MAX_METHOD_NAME_BYTES:
        raise MalformedMessageError(f"a method name of {name_length} bytes")
    name_end = 8 + name_length
    seqid = _i32(buf, name_end, size)
    name = bytes(buf[8:name_end]).decode("utf-8", errors="replace")
    return MessageHead(name, word & _TYPE_MASK, seqid, name_end + 4)


def _open(
    buf: bytes | bytearray | memoryview,
    value_type: int,
    position: int,
    size: int,
    limits: ScanLimits,
    depth: int,
) -> tuple[int, list | None]:
    """The struct or container that starts at ``position``, ``depth`` frames already open:
    where its items start, and the frame to open for them; or, for a container of
    fixed-size items (skipped in one jump) or an empty one, where it ends and None."""
    if value_type == TType.STRUCT:
        types: tuple[int, ...] | None = None
        count = 0
    elif value_type in _CONTAINERS:
        _need(position + 5, size)
        element_type, count = _LIST_HEADER.unpack_from(buf, position)
        types, position = (element_type,), position + 5
    elif value_type == TType.MAP:
        _need(position + 6, size)
        key_type, value_type_, count = _MAP_HEADER.unpack_from(buf, position)
        types, position = (key_type, value_type_), position + 6
    else:
        raise MalformedMessageError(f"unknown field type {value_type}")
    if depth > MAX_DEPTH:
        raise MalformedMessageError(f"structs and containers nested deeper than {MAX_DEPTH}")
    if types is None:
        return position, [None, 0, 0]
    if count < 0:
        raise MalformedMessageError(f"negative container size {count}")
    if count > limits.max_container_items:
        raise MalformedMessageError(
            f"a container of {count} items (the limit is {limits.max_container_items})"
        )
    sizes = [_FIXED_BYTES.get(kind) for kind in types]
    if None not in sizes:  # fixed-size items: one jump
        end = position + count * sum(sizes)
        _need(end, size)
        return end, None
    return position, ([types, count, 0] if count else None)
