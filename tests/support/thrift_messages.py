"""Thrift call messages built by hand for the tests: raw calls, and Hypothesis strategies of
valid calls of every IDL method, the same calls mutated, and values nesting every container kind."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from thrift.protocol.TBinaryProtocol import TBinaryProtocol
from thrift.Thrift import TMessageType, TType
from thrift.transport.TTransport import TMemoryBuffer

from benchmarks.protocol_attacks import UNKNOWN_FIELD_ID, encoded
from service.gen.inference.ttypes import InferenceParams
from service.rpc.message_scan import MAX_DEPTH, ScanLimits

MAX_MESSAGE_BYTES = 1 << 16
MAX_ITEMS = 64
LIMITS = ScanLimits(MAX_MESSAGE_BYTES, MAX_ITEMS)
#: Bounded for CI; no per-example deadline: a shared 2-core machine stalls at random.
FUZZ = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def raw_call(method: str, write_args) -> bytes:
    """A binary-protocol call message whose arguments ``write_args(protocol)`` writes."""
    buffer = TMemoryBuffer()
    protocol = TBinaryProtocol(buffer)
    protocol.writeMessageBegin(method, TMessageType.CALL, 1)
    protocol.writeStructBegin("args")
    write_args(protocol)
    return buffer.getvalue()


# -- valid calls of the IDL's methods ------------------------------------------------------

params = st.builds(
    InferenceParams,
    uuid=st.text(max_size=12),
    data=st.binary(max_size=64),
)
int32 = st.integers(-(2**31), 2**31 - 1)
seqids = st.integers(-(2**31), 2**31 - 1)
calls = st.one_of(
    st.builds(lambda s: encoded("ping", seqid=s), seqids),
    st.builds(lambda s: encoded("stats", seqid=s), seqids),
    st.builds(lambda p, s: encoded("infer_batch", p, seqid=s), params, seqids),
    st.builds(lambda p, k, s: encoded("infer_topk", p, k, seqid=s), params, int32, seqids),
    st.builds(
        lambda ps, k, s: encoded("infer_many", ps, k, seqid=s),
        st.lists(params, max_size=5),
        int32,
        seqids,
    ),
)


# -- mutated calls -------------------------------------------------------------------------

EXTREME_I32 = st.sampled_from([-1, -(2**31), 2**31 - 1, MAX_MESSAGE_BYTES, MAX_ITEMS + 1, 0])


@st.composite
def mutated(draw) -> bytes:
    """A valid call, then a few random edits."""
    buf = bytearray(draw(calls))
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(buf)))
        edit = draw(st.sampled_from(["flip", "insert", "delete", "i32", "splice", "cut"]))
        if edit == "flip" and where < len(buf):
            buf[where] = draw(st.integers(0, 255))
        elif edit == "insert":
            buf[where:where] = draw(st.binary(min_size=1, max_size=8))
        elif edit == "delete":
            del buf[where : where + draw(st.integers(1, 8))]
        elif edit == "i32":  # a length or count overwritten with an extreme value
            buf[where : where + 4] = struct.pack("!i", draw(EXTREME_I32))
        elif edit == "splice":  # part of another call pasted in
            other = draw(calls)
            start = draw(st.integers(0, len(other)))
            buf[where:where] = other[start : start + draw(st.integers(1, 64))]
        elif edit == "cut":
            del buf[where:]
    return bytes(buf)


# -- nesting of every container kind ---------------------------------------------------------

# A value is (thrift type, encoded bytes, nesting depth): a scalar is depth 0, a struct or a
# container one more than its deepest item (an empty one: 1).
scalars = st.one_of(
    st.builds(lambda v: (TType.I32, struct.pack("!i", v), 0), int32),
    st.builds(lambda v: (TType.BOOL, bytes([v]), 0), st.integers(0, 1)),
    st.builds(lambda v: (TType.STRING, struct.pack("!i", len(v)) + v, 0), st.binary(max_size=8)),
)
CONTAINER_KINDS = st.sampled_from([TType.LIST, TType.SET, TType.MAP, TType.STRUCT])


def container(kind: int, item: tuple, count: int, item_is_key: bool = False) -> tuple:
    """A struct or container of ``kind`` holding ``count`` copies of ``item`` (a map: as its
    values with i32 keys, or as its keys with i32 values; a struct: as fields 1..count)."""
    item_type, item_bytes, item_depth = item
    depth = item_depth if count else 0  # an empty one holds nothing to nest
    if kind == TType.STRUCT:
        fields = b"".join(struct.pack("!bh", item_type, i + 1) + item_bytes for i in range(count))
        return kind, fields + b"\x00", depth + 1
    if kind == TType.MAP:
        if item_is_key:
            entries = b"".join(item_bytes + struct.pack("!i", i) for i in range(count))
            header = struct.pack("!bbi", item_type, TType.I32, count)
        else:
            entries = b"".join(struct.pack("!i", i) + item_bytes for i in range(count))
            header = struct.pack("!bbi", TType.I32, item_type, count)
        return kind, header + entries, depth + 1
    return kind, struct.pack("!bi", item_type, count) + item_bytes * count, depth + 1


@st.composite
def nested(draw) -> tuple:
    """Structs and containers of random kinds nested ``depth`` deep (often just at or past
    ``MAX_DEPTH``) around a scalar; a level may hold two copies of what it nests, the
    innermost may be empty."""
    depth = draw(st.sampled_from([MAX_DEPTH, MAX_DEPTH + 1]) | st.integers(1, MAX_DEPTH + 8))
    value = draw(scalars)
    for level in range(depth):
        copies = 2 if len(value[1]) < 256 else 1  # copies double the size: keep it small
        count = draw(st.integers(0 if level == 0 else 1, copies))
        value = container(draw(CONTAINER_KINDS), value, count, draw(st.booleans()))
    assert value[2] == depth
    return value


def ping_carrying(value: tuple) -> bytes:
    value_type, value_bytes, _depth = value
    field = struct.pack("!bh", value_type, UNKNOWN_FIELD_ID) + value_bytes
    return encoded("ping")[:-1] + field + b"\x00"  # before the arguments' STOP
