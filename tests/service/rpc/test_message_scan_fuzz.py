"""Fuzzing the message scanner and the call decoder behind it (Hypothesis).

Valid calls of every method of the IDL, then the same calls truncated, with bytes flipped,
inserted or deleted, with lengths overwritten by extreme values, spliced into one another; and
values nesting structs, lists, sets and maps in random mixtures, some past ``MAX_DEPTH``.
Whatever the bytes, the scanner answers ``(head, end)``, a length to wait for, or one of its own
typed errors; a message it accepts either decodes or fails with a protocol error the server
handles, with the C codec and with the pure-Python one. Examples are bounded so that the module
runs in seconds on a small CI machine.
"""

from __future__ import annotations

import contextlib
import struct

from hypothesis import given
from hypothesis import strategies as st
from thrift.protocol.TBinaryProtocol import TBinaryProtocol
from thrift.protocol.TProtocol import TProtocolException
from thrift.Thrift import TMessageType
from thrift.transport.TTransport import TMemoryBuffer, TTransportException

from service.gen.inference import InferenceService
from service.rpc.codec import Codec, service_methods
from service.rpc.message_scan import (
    MAX_DEPTH,
    MalformedMessageError,
    scan_message,
)
from tests.support.thrift_messages import (
    EXTREME_I32,
    FUZZ,
    LIMITS,
    MAX_ITEMS,
    MAX_MESSAGE_BYTES,
    calls,
    mutated,
    nested,
    ping_carrying,
)

METHODS = service_methods(InferenceService)
CODEC = Codec(string_length_limit=MAX_MESSAGE_BYTES, container_length_limit=MAX_ITEMS)
#: What the server catches from ``Codec.decode`` as a malformed request (``server._start_call``).
DECODE_ERRORS = (TProtocolException, TTransportException, OverflowError, ValueError, EOFError)


def check_scan(buf: bytes) -> tuple | int | None:
    """Scan ``buf``, asserting the answer is one of the allowed shapes; None for a typed
    refusal."""
    try:
        found = scan_message(buf, LIMITS)
    except MalformedMessageError:  # MessageTooLargeError is one too
        return None
    if isinstance(found, int):
        assert len(buf) < found <= MAX_MESSAGE_BYTES
    else:
        head, end = found
        assert head.body_offset <= end <= len(buf)
    return found


def check_decode(buf: bytes, found: tuple) -> None:
    """A message the scanner accepted decodes, or fails with an error the server handles, with
    the C codec and with the generated pure-Python reader."""
    head, end = found
    method = METHODS.get(head.name)
    if method is None or head.message_type not in (TMessageType.CALL, TMessageType.ONEWAY):
        return  # answered or refused by the server before any decoding
    message = buf[:end]
    with contextlib.suppress(DECODE_ERRORS):
        CODEC.decode(method, head.seqid, message, head.body_offset)
    args = method.args_class()
    with contextlib.suppress(DECODE_ERRORS):
        args.read(TBinaryProtocol(TMemoryBuffer(message[head.body_offset :]), strictRead=True))


@FUZZ
@given(calls, st.binary(max_size=16))
def test_a_valid_call_ends_where_its_encoding_ends_whatever_follows(call, after):
    found = scan_message(call + after, LIMITS)
    assert isinstance(found, tuple)
    head, end = found
    assert end == len(call)
    assert head.name in METHODS and head.message_type == TMessageType.CALL
    decoded = CODEC.decode(METHODS[head.name], head.seqid, call, head.body_offset)
    assert decoded.method.name == head.name


@FUZZ
@given(calls, st.data())
def test_a_truncated_call_asks_for_more_bytes_never_past_its_end(call, data):
    cut = data.draw(st.integers(0, len(call) - 1))
    needed = scan_message(call[:cut], LIMITS)
    assert isinstance(needed, int) and cut < needed <= len(call)


# -- mutated calls -------------------------------------------------------------------------


@FUZZ
@given(mutated())
def test_mutated_calls_get_only_typed_answers(buf):
    found = check_scan(buf)
    if isinstance(found, tuple):
        check_decode(buf, found)


@FUZZ
@given(st.binary(max_size=64))
def test_random_bytes_get_only_typed_answers(buf):
    found = check_scan(buf)
    if isinstance(found, tuple):
        check_decode(buf, found)


# -- nesting of every container kind ---------------------------------------------------------


@FUZZ
@given(nested())
def test_nesting_is_accepted_exactly_to_max_depth_whatever_the_kinds(value):
    message = ping_carrying(value)
    if len(message) > MAX_MESSAGE_BYTES:
        return
    try:
        found = scan_message(message, LIMITS)
    except MalformedMessageError as error:
        assert value[2] > MAX_DEPTH, f"depth {value[2]} refused: {error}"
        return
    assert value[2] <= MAX_DEPTH, f"depth {value[2]} accepted"
    head, end = found
    assert end == len(message)
    CODEC.decode(METHODS["ping"], head.seqid, message, head.body_offset)  # skipped, not refused


@FUZZ
@given(nested(), st.data())
def test_truncated_or_mutated_nesting_gets_only_typed_answers(value, data):
    message = bytearray(ping_carrying(value))
    where = data.draw(st.integers(0, len(message) - 1))
    if data.draw(st.booleans()):
        del message[where:]
    else:
        message[where : where + 4] = struct.pack("!i", data.draw(EXTREME_I32))
    found = check_scan(bytes(message))
    if isinstance(found, tuple):
        check_decode(bytes(message), found)
