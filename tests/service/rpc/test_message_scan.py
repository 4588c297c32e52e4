"""The message scanner's one depth limit, over every kind of struct and container."""

from __future__ import annotations

import pytest
from thrift.Thrift import TType

from benchmarks.protocol_attacks import nested_call
from service.rpc.message_scan import MAX_DEPTH, MalformedMessageError, ScanLimits, scan_message

LIMITS = ScanLimits(max_message_bytes=8 << 20, max_container_items=64)
KINDS = [TType.LIST, TType.SET, TType.MAP, TType.STRUCT]


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: TType._VALUES_TO_NAMES[kind])
def test_every_kind_is_accepted_to_max_depth_and_refused_past_it(kind):
    deepest = nested_call(MAX_DEPTH, kind)
    head, end = scan_message(deepest, LIMITS)
    assert (head.name, end) == ("ping", len(deepest))
    with pytest.raises(MalformedMessageError, match="nested deeper"):
        scan_message(nested_call(MAX_DEPTH + 1, kind), LIMITS)


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: TType._VALUES_TO_NAMES[kind])
def test_nesting_far_past_the_interpreter_stack_is_a_typed_refusal(kind):
    """200,000 levels: a recursive walk would raise RecursionError (or overflow the C stack)."""
    with pytest.raises(MalformedMessageError, match="nested deeper"):
        scan_message(nested_call(200_000, kind), LIMITS)
