"""The message scan resumes across partial reads: any split of a message gives the answers a
scan of each prefix from the start would, and the work is linear in the message's length.

Work is counted in the scan's own steps (one per field, element, key, value or end examined,
those cut short and tried again included), never in wall time.
"""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.protocol_attacks import encoded, small_items_call
from service.rpc import connection as connection_module
from service.rpc.budgets import BufferLedger
from service.rpc.connection import Connection
from service.rpc.message_scan import MalformedMessageError, MessageScan, ScanLimits
from tests.support.thrift_messages import (
    FUZZ,
    LIMITS,
    calls,
    mutated,
    nested,
    ping_carrying,
)

#: A message of one-byte items (empty structs in lists of 64): every byte is about one step.
SMALL_ITEMS = small_items_call(10_000, items_per_list=64)
ITEM_LIMITS = ScanLimits(max_message_bytes=1 << 20, max_container_items=256)
#: Steps a linear scan may take per byte of the message, plus one per read: a step either
#: consumes a byte or closes a frame that one did open, and each read retries one step.
STEPS_PER_BYTE = 2


def answer(scan: MessageScan, buf: bytes | bytearray) -> object:
    """What ``scan.advance(buf)`` answers, an error as its type and text."""
    try:
        return scan.advance(buf)
    except MalformedMessageError as error:
        return type(error), str(error)


def feed(message: bytes, cuts: list[int], limits: ScanLimits = LIMITS) -> list[object]:
    """The answers of one scan fed ``message`` up to each cut in turn, then whole (it stops
    at the first error, as the server does)."""
    scan, received, answers = MessageScan(limits), bytearray(), []
    for start, end in zip([0, *cuts], [*cuts, len(message)], strict=True):
        received += message[start:end]
        answers.append(answer(scan, received))
        if isinstance(answers[-1], tuple) and isinstance(answers[-1][0], type):
            break
    return answers


@st.composite
def split(draw, messages) -> tuple[bytes, list[int]]:
    """A message and sorted cut points inside it (sometimes every byte)."""
    message = draw(messages)
    if len(message) > 1 and draw(st.integers(0, 4)) == 0:
        return message, list(range(1, len(message)))
    cuts = draw(st.lists(st.integers(1, max(1, len(message) - 1)), unique=True, max_size=12))
    return message, sorted(cut for cut in cuts if cut < len(message))


def check_split(message: bytes, cuts: list[int]) -> None:
    answers = feed(message, cuts)
    from_start = [answer(MessageScan(LIMITS), message[:cut]) for cut in cuts[: len(answers)]]
    from_start.append(answer(MessageScan(LIMITS), message))
    assert answers == from_start[: len(answers)]
    assert answers[-1] == from_start[-1]  # the whole message: the same as fed in one piece


@FUZZ
@given(split(calls))
def test_a_split_valid_call_gets_each_prefixs_answer_and_the_same_end(case):
    check_split(*case)


@FUZZ
@given(split(mutated()))
def test_a_split_mutated_call_gets_each_prefixs_answer_and_the_same_end(case):
    check_split(*case)


@FUZZ
@given(split(nested().map(ping_carrying)))
def test_split_nesting_gets_each_prefixs_answer_and_the_same_end(case):
    check_split(*case)


def test_the_walk_resumes_mid_item_and_ends_where_the_message_does():
    message = encoded("ping") + b"next"
    scan = MessageScan(LIMITS)
    assert scan.advance(message[:3]) == 4  # not even the version word yet
    body = len(message) - 5  # the arguments' STOP: the last byte of the ping
    assert scan.advance(message[:body]) == body + 1
    head, end = scan.advance(message)
    assert (head.name, end) == ("ping", len(message) - 4)


@pytest.mark.parametrize("chunk_bytes", [1, 100])
def test_the_scans_work_is_linear_however_finely_the_message_arrives(chunk_bytes):
    cuts = list(range(chunk_bytes, len(SMALL_ITEMS), chunk_bytes))
    scan, received = MessageScan(ITEM_LIMITS), bytearray()
    for start, end in zip([0, *cuts], [*cuts, len(SMALL_ITEMS)], strict=True):
        received += SMALL_ITEMS[start:end]
        found = scan.advance(received)
    assert found[1] == len(SMALL_ITEMS)
    assert scan.steps <= STEPS_PER_BYTE * len(SMALL_ITEMS) + len(cuts) + 1


def test_scanning_from_the_start_at_each_read_breaks_that_bound():
    """The measure can fail: the walk a restarting scan does (the server's before the scan
    resumed) is far past the bound at 100-byte reads."""
    steps = 0
    for end in [*range(100, len(SMALL_ITEMS), 100), len(SMALL_ITEMS)]:
        scan = MessageScan(ITEM_LIMITS)
        scan.advance(SMALL_ITEMS[:end])
        steps += scan.steps
    assert steps > 10 * STEPS_PER_BYTE * len(SMALL_ITEMS)


@pytest.mark.parametrize("chunk_bytes", [1, 100])
def test_a_connection_scans_a_message_in_pieces_with_linear_work(monkeypatch, chunk_bytes):
    """As the server reads: each piece is received, then the next message asked for."""
    made: list[MessageScan] = []

    class CountedScan(MessageScan):
        """Every scan the connection makes, so that their steps can be added up."""

        def __init__(self, limits: ScanLimits):
            super().__init__(limits)
            made.append(self)

    monkeypatch.setattr(connection_module, "MessageScan", CountedScan)
    ping = encoded("ping", seqid=7)
    sent = SMALL_ITEMS + ping
    ours, theirs = socket.socketpair()
    with ours, theirs:
        connection = Connection(ours, "peer", 0.0, BufferLedger(budget_bytes=1 << 30))
        taken = []
        for start in range(0, len(sent), chunk_bytes):
            connection.receive(sent[start : start + chunk_bytes], now_s=1.0)
            while (found := connection.next_message(ITEM_LIMITS, now_s=2.0)) is not None:
                taken.append(found[1])
        assert taken == [SMALL_ITEMS, ping]
        assert connection.buffered_bytes == 0 and connection.message_started_s is None
    steps = sum(scan.steps for scan in made)
    reads = -(-len(sent) // chunk_bytes)
    assert steps <= STEPS_PER_BYTE * len(sent) + 2 * reads
