"""Decodes calls and encodes replies of a generated Thrift service, with the C codec.

The generated ``Processor`` reads and writes through a transport, one message at a time, on
the thread that owns the connection. The event-loop server instead holds whole messages in
memory (``message_scan`` found their ends), so it decodes a call's arguments straight from
those bytes and encodes a reply to bytes that any thread may send. Both use thrift's C
extension (``fastbinary``) where it is installed, and the generated pure-Python code where not.
"""

from __future__ import annotations

import inspect
import struct
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from thrift.protocol.TBinaryProtocol import TBinaryProtocol, TBinaryProtocolAccelerated
from thrift.Thrift import TApplicationException, TMessageType
from thrift.transport.TTransport import TMemoryBuffer

try:
    from thrift.protocol import fastbinary
except ImportError:  # reported by fastbinary_available(); the generated code falls back
    fastbinary = None

_VERSION_1 = 0x80010000
_NAME_HEADER = struct.Struct("!Ii")
_SEQID = struct.Struct("!i")


def fastbinary_available() -> bool:
    """Whether thrift's C-accelerated binary codec is importable."""
    return fastbinary is not None


@dataclass(frozen=True, slots=True)
class Method:
    """One method of the service: its argument and result structs, and where a declared
    exception goes in the result."""

    name: str
    parameters: tuple[str, ...]
    args_class: type
    result_class: type
    #: (result field, exception class) for each ``throws`` clause, in IDL order.
    exceptions: tuple[tuple[str, type], ...]
    returns_value: bool
    #: The reply message's header up to its sequence id (precomputed: it never changes).
    reply_prefix: bytes


@dataclass(frozen=True, slots=True)
class Call:
    """A decoded call: the method, its sequence id and its arguments by name."""

    method: Method
    seqid: int
    args: tuple[Any, ...]


def service_methods(module: ModuleType) -> dict[str, Method]:
    """Every method of a generated service module (``service.gen.inference.InferenceService``)."""
    methods = {}
    for name, function in inspect.getmembers(module.Iface, inspect.isfunction):
        if name.startswith("_"):
            continue
        result_class = getattr(module, f"{name}_result")
        fields = [spec for spec in result_class.thrift_spec if spec is not None]
        exceptions = tuple((spec[2], spec[3][0]) for spec in fields if spec[0] != 0)
        encoded_name = name.encode()
        methods[name] = Method(
            name=name,
            parameters=tuple(inspect.signature(function).parameters)[1:],
            args_class=getattr(module, f"{name}_args"),
            result_class=result_class,
            exceptions=exceptions,
            returns_value=any(spec[0] == 0 for spec in fields),
            reply_prefix=_NAME_HEADER.pack(_VERSION_1 | TMessageType.REPLY, len(encoded_name))
            + encoded_name,
        )
    return methods


class Codec:
    """Decodes call arguments from message bytes and encodes replies, within size limits."""

    def __init__(self, *, string_length_limit: int, container_length_limit: int):
        # One protocol object, re-pointed at each message: ``decode`` runs on one thread.
        self._protocol = TBinaryProtocolAccelerated(
            TMemoryBuffer(b""),
            strictRead=True,
            string_length_limit=string_length_limit,
            container_length_limit=container_length_limit,
        )

    def decode(self, method: Method, seqid: int, message: bytes, body_offset: int) -> Call:
        """The call whose argument struct starts at ``body_offset`` of ``message`` (from one
        thread at a time).

        Raises what thrift raises for bytes it cannot decode (``TProtocolException``,
        ``OverflowError`` for a length over the limits, ``EOFError``...).
        """
        protocol = self._protocol
        protocol.trans = TMemoryBuffer(message, body_offset)
        args = method.args_class()
        args.read(protocol)
        return Call(method, seqid, tuple(getattr(args, name) for name in method.parameters))

    @staticmethod
    def reply(call: Call, value: Any = None) -> bytes:
        """The REPLY message carrying ``value`` (ignored for a void method)."""
        method = call.method
        result = method.result_class()
        if method.returns_value:
            result.success = value
        return method.reply_prefix + _SEQID.pack(call.seqid) + _encode(result)

    @staticmethod
    def declared_error(call: Call, error: BaseException) -> bytes | None:
        """The REPLY carrying ``error`` in its ``throws`` field; None if the method does not
        declare that exception."""
        method = call.method
        for field, exception_class in method.exceptions:
            if isinstance(error, exception_class):
                result = method.result_class()
                setattr(result, field, error)
                return method.reply_prefix + _SEQID.pack(call.seqid) + _encode(result)
        return None

    @staticmethod
    def application_error(name: str, seqid: int, kind: int, message: str) -> bytes:
        """An EXCEPTION message (``TApplicationException`` of ``kind``), as the generated
        processor sends for an unknown method or an undeclared failure."""
        buffer = TMemoryBuffer()
        protocol = TBinaryProtocol(buffer)
        protocol.writeMessageBegin(name, TMessageType.EXCEPTION, seqid)
        TApplicationException(kind, message).write(protocol)
        protocol.writeMessageEnd()
        return buffer.getvalue()


def _encode(struct_value: Any) -> bytes:
    if fastbinary is not None:
        spec = struct_value.thrift_spec
        return fastbinary.encode_binary(struct_value, [struct_value.__class__, spec])
    buffer = TMemoryBuffer()
    struct_value.write(TBinaryProtocol(buffer))
    return buffer.getvalue()
