"""The event loop against hostile nesting, failures inside one connection's handling, and
calls written back to back: one connection's trouble stays its own, every call is answered.

A handler that answers at once (no model) keeps these fast; the attacks are
``benchmarks.protocol_attacks``, as ``python -m benchmarks.hostile_clients`` runs them.
"""

from __future__ import annotations

import logging

import pytest
from thrift.Thrift import TMessageType, TType

from benchmarks import protocol_attacks as attacks
from service.rpc.codec import Codec
from service.rpc.message_scan import MAX_DEPTH
from tests.support.live_service import serve_in_thread
from tests.support.service_fakes import GatedHandler

HOST = "127.0.0.1"
#: How long a test waits for an answer that must come (never reached when it passes).
ANSWER_WAIT_S = 10.0
KINDS = [TType.LIST, TType.SET, TType.MAP, TType.STRUCT]


@pytest.fixture
def live():
    handler = GatedHandler()
    handler.release.set()  # classifications answer at once
    with serve_in_thread(handler) as service:
        yield service


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: TType._VALUES_TO_NAMES[kind])
@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 600, 200_000])
def test_nesting_past_the_limit_closes_only_its_connection(live, kind, depth):
    outcome = attacks.deep_nesting(HOST, live.port, depth, kind, wait_s=ANSWER_WAIT_S)
    assert not outcome.answered and outcome.closed_after_s is not None, outcome
    assert outcome.ping_after_s is not None, f"the server stopped serving: {outcome}"
    assert live.server.figures.closed_malformed == 1


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: TType._VALUES_TO_NAMES[kind])
def test_nesting_at_the_limit_is_decoded_and_answered(live, kind):
    message = attacks.nested_call(MAX_DEPTH, kind)
    answered = attacks.back_to_back(HOST, live.port, "deepest allowed", [message], ANSWER_WAIT_S)
    assert answered.answers == [("ping", TMessageType.REPLY, 1)]


class _FailingCodec(Codec):
    """Raises what a server bug would (an exception no protocol check expects) when asked to
    decode a call carrying ``MARK``."""

    MARK = b"raise-in-decode"

    def decode(self, method, seqid, message, body_offset):
        if self.MARK in message:
            raise RecursionError("injected: maximum recursion depth exceeded")
        return super().decode(method, seqid, message, body_offset)


@pytest.mark.parametrize("ahead", [0, 1], ids=["alone", "after-a-ping-in-the-same-write"])
def test_an_exception_inside_one_connection_closes_it_and_the_server_serves_on(live, caplog, ahead):
    """Raised on the read path (the call alone) or on the follow-up path after a reply (the
    call queued behind a ping): either way only that connection ends."""
    live.server._codec = _FailingCodec(string_length_limit=1 << 20, container_length_limit=64)
    poisoned = attacks.encoded("infer_batch", attacks.InferenceParams("u", _FailingCodec.MARK))
    pings = [attacks.encoded("ping", seqid=1)] * ahead
    with caplog.at_level(logging.ERROR, logger="service.rpc"):
        seen = attacks.back_to_back(HOST, live.port, "poisoned", [*pings, poisoned], ANSWER_WAIT_S)
    assert [name for name, _, _ in seen.answers] == ["ping"] * ahead  # nothing for the poison
    assert seen.took_s < ANSWER_WAIT_S, "the connection was left open instead of closed"
    assert attacks.ping_s(HOST, live.port, timeout_s=ANSWER_WAIT_S) is not None
    assert live.server.figures.closed_on_error == 1
    errors = [r for r in caplog.records if "unexpected RecursionError" in r.getMessage()]
    assert len(errors) == 1 and errors[0].exc_info is not None


def test_two_calls_in_one_write_are_both_answered_in_order(live, photos):
    seen = attacks.two_infer_batches(HOST, live.port, photos["chelsea"], ANSWER_WAIT_S)
    assert seen.answers == [
        ("infer_batch", TMessageType.REPLY, 1),
        ("infer_batch", TMessageType.REPLY, 2),
    ]


def test_an_unknown_method_then_a_ping_in_one_write_are_both_answered(live):
    seen = attacks.unknown_then_ping(HOST, live.port, ANSWER_WAIT_S)
    assert seen.answers == [("nosuch", TMessageType.EXCEPTION, 1), ("ping", TMessageType.REPLY, 2)]


def test_a_thousand_pings_in_one_write_are_each_answered_in_order(live):
    seen = attacks.many_pings(HOST, live.port, 1000, ANSWER_WAIT_S)
    assert seen.in_order, f"{len(seen.answers)} of {seen.calls} answered"
    assert {name for name, _, _ in seen.answers} == {"ping"}


def test_a_call_of_small_items_in_small_pieces_is_answered_and_pings_go_on(live):
    """Many partial reads of one message through the loop (the scan resumes at each): it is
    answered once whole, and another client's pings are served meanwhile."""
    outcome = attacks.small_items_in_pieces(
        HOST, live.port, 256 * 1024, chunk_bytes=1024, wait_s=ANSWER_WAIT_S
    )
    assert outcome.sent_bytes == outcome.message_bytes, outcome
    assert outcome.answered_after_s is not None, outcome
    assert outcome.pings_failed == 0, outcome
    assert live.server.figures.closed_malformed == 0


def test_calls_fed_a_byte_at_a_time_then_one_more_in_the_same_write_are_answered_in_order(live):
    """The last piece ends one message and holds the whole of the next."""
    first, second = attacks.encoded("ping", seqid=1), attacks.encoded("stats", seqid=2)
    writes = [bytes([byte]) for byte in first[:-1]] + [first[-1:] + second]
    answered = attacks.back_to_back(
        HOST, live.port, "byte at a time", [first, second], ANSWER_WAIT_S, writes
    )
    assert [(name, seqid) for name, _kind, seqid in answered.answers] == [
        ("ping", 1),
        ("stats", 2),
    ]
