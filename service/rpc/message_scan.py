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
    so far show the message cannot be valid within ``limits``.
    """
    scanner = _Scanner(buf, limits)
    try:
        head = scanner.head()
        end = scanner.skip_body(head.body_offset)
    except _Incomplete as incomplete:
        if incomplete.needed > limits.max_message_bytes:
            raise MessageTooLargeError(
                f"the message needs over {limits.max_message_bytes} bytes"
            ) from None
        return incomplete.needed
    return head, end


class _Scanner:
    __slots__ = ("buf", "limits", "size")

    def __init__(self, buf: bytes | bytearray | memoryview, limits: ScanLimits):
        self.buf = buf
        self.size = len(buf)
        self.limits = limits

    def _need(self, position: int) -> None:
        if position > self.size:
            raise _Incomplete(position)

    def _i32(self, position: int) -> int:
        self._need(position + 4)
        return _I32.unpack_from(self.buf, position)[0]

    def _length(self, position: int, what: str) -> int:
        length = self._i32(position)
        if length < 0:
            raise MalformedMessageError(f"negative {what} length {length}")
        if length > self.limits.max_message_bytes:
            raise MessageTooLargeError(f"{what} of {length} bytes")
        return length

    def head(self) -> MessageHead:
        word = self._i32(0) & 0xFFFFFFFF
        if word & _VERSION_MASK != _VERSION_1:
            raise MalformedMessageError(f"no binary-protocol version word (0x{word:08x})")
        name_length = self._length(4, "method name")
        if name_length > MAX_METHOD_NAME_BYTES:
            raise MalformedMessageError(f"a method name of {name_length} bytes")
        name_end = 8 + name_length
        seqid = self._i32(name_end)
        self._need(name_end)
        name = bytes(self.buf[8:name_end]).decode("utf-8", errors="replace")
        return MessageHead(name, word & _TYPE_MASK, seqid, name_end + 4)

    def skip_body(self, position: int) -> int:
        """Skip the argument struct that starts at ``position``; returns where it ends.

        An explicit stack instead of recursion: every struct, list, set and map open at
        ``position`` is one frame, so the nesting a message may have is ``MAX_DEPTH`` whatever
        the kinds nested, and no message can exhaust the interpreter's stack. A frame is
        ``[element types, items left, next type]``; a struct's is ``[None, ...]``.
        """
        buf = self.buf
        need = self._need
        stack: list[list] = [[None, 0, 0]]
        while stack:
            frame = stack[-1]
            element_types = frame[0]
            if element_types is None:  # a struct: the next field, or its end
                need(position + 1)
                value_type = buf[position]
                if value_type == TType.STOP:
                    position += 1
                    stack.pop()
                    continue
                need(position + 3)
                position += 3
            else:  # a container: its next key, value or element, or its end
                if frame[1] == 0:
                    stack.pop()
                    continue
                value_type = element_types[frame[2]]
                frame[2] += 1
                if frame[2] == len(element_types):
                    frame[1] -= 1
                    frame[2] = 0
            fixed = _FIXED_BYTES.get(value_type)
            if fixed is not None:
                position += fixed
                need(position)
            elif value_type == TType.STRING:
                position += 4 + self._length(position, "string")
                need(position)
            else:
                position = self._open(value_type, position, stack)
        return position

    def _open(self, value_type: int, position: int, stack: list[list]) -> int:
        """Open a frame for the struct or container that starts at ``position`` (its items are
        skipped by ``skip_body``'s loop); returns where its items start (or, for items of fixed
        size, where it ends)."""
        if value_type == TType.STRUCT:
            types: tuple[int, ...] | None = None
            count = 0
        elif value_type in _CONTAINERS:
            self._need(position + 5)
            element_type, count = _LIST_HEADER.unpack_from(self.buf, position)
            types, position = (element_type,), position + 5
        elif value_type == TType.MAP:
            self._need(position + 6)
            key_type, value_type_, count = _MAP_HEADER.unpack_from(self.buf, position)
            types, position = (key_type, value_type_), position + 6
        else:
            raise MalformedMessageError(f"unknown field type {value_type}")
        if len(stack) > MAX_DEPTH:
            raise MalformedMessageError(f"structs and containers nested deeper than {MAX_DEPTH}")
        if types is None:
            stack.append([None, 0, 0])
            return position
        self._check_count(count)
        sizes = [_FIXED_BYTES.get(kind) for kind in types]
        if None not in sizes:  # fixed-size items: one jump
            end = position + count * sum(sizes)
            self._need(end)
            return end
        if count:
            stack.append([types, count, 0])
        return position

    def _check_count(self, count: int) -> None:
        if count < 0:
            raise MalformedMessageError(f"negative container size {count}")
        if count > self.limits.max_container_items:
            raise MalformedMessageError(
                f"a container of {count} items (the limit is {self.limits.max_container_items})"
            )
