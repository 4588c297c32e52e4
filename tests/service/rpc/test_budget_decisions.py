"""The server-wide budgets: the connection cap a file limit allows, the buffer budget a
machine's memory allows, and which connections are cut when the buffers pass it."""

from __future__ import annotations

import socket

import pytest

from benchmarks.protocol_attacks import encoded
from service.rpc.budgets import (
    RESERVED_FDS,
    BudgetError,
    BufferLedger,
    FileLimit,
    connection_cap,
    default_buffer_budget_bytes,
    holders_to_cut,
    parse_cgroup_memory_limit,
    reserved_fds,
    server_budgets,
    wanted_soft_limit,
)
from service.rpc.connection import Connection
from service.rpc.limits import TransportLimits
from service.rpc.message_scan import ScanLimits

MIB = 1 << 20


def test_the_cap_is_what_was_asked_when_the_file_limit_has_room():
    assert connection_cap(1024, FileLimit(soft=20000, hard=20000, in_use=30)) == 1024
    assert connection_cap(1024, FileLimit(soft=None, hard=None, in_use=30)) == 1024


def test_the_cap_never_exceeds_the_file_limit_less_descriptors_in_use_and_the_reserve():
    # ulimit -n 1024 with --max-connections 1024: the cap leaves room for everything else.
    limit = FileLimit(soft=1024, hard=1024, in_use=40)
    assert connection_cap(1024, limit) == 1024 - 40 - RESERVED_FDS
    assert connection_cap(100, limit) == 100


def test_a_tiny_file_limit_keeps_a_quarter_in_reserve_and_one_with_no_room_is_an_error():
    assert reserved_fds(64) == 16 and reserved_fds(4096) == RESERVED_FDS
    assert connection_cap(1024, FileLimit(soft=64, hard=64, in_use=10)) == 64 - 10 - 16
    with pytest.raises(BudgetError, match="ulimit -n 32"):
        connection_cap(1024, FileLimit(soft=32, hard=32, in_use=30))


def test_the_soft_file_limit_is_raised_towards_what_the_cap_needs_within_the_hard_limit():
    needed = 1024 + 40 + RESERVED_FDS
    assert wanted_soft_limit(1024, FileLimit(soft=1024, hard=4096, in_use=40)) == needed
    assert wanted_soft_limit(1024, FileLimit(soft=1024, hard=1100, in_use=40)) == 1100
    assert wanted_soft_limit(1024, FileLimit(soft=1024, hard=None, in_use=40)) == needed
    assert wanted_soft_limit(1024, FileLimit(soft=1024, hard=1024, in_use=40)) is None
    assert wanted_soft_limit(1024, FileLimit(soft=20000, hard=20000, in_use=40)) is None
    assert wanted_soft_limit(1024, FileLimit(soft=None, hard=None, in_use=40)) is None


def test_cgroup_memory_limits_are_read_in_both_versions():
    assert parse_cgroup_memory_limit("max\n") is None  # v2, no limit
    assert parse_cgroup_memory_limit("4294967296\n") == 4 << 30
    assert parse_cgroup_memory_limit("9223372036854771712\n") is None  # v1, no limit
    with pytest.raises(ValueError):
        parse_cgroup_memory_limit("lots")


def test_the_buffer_budget_is_a_share_of_memory_and_never_less_than_one_whole_message():
    assert default_buffer_budget_bytes(16 << 30, 64 * MIB) == 2 << 30
    assert default_buffer_budget_bytes(256 * MIB, 64 * MIB) == 64 * MIB


def test_a_buffer_budget_set_below_one_message_is_refused():
    def budgets(buffered_bytes: int):
        limits = TransportLimits(
            max_message_bytes=64 * MIB, max_connections=16, max_buffered_bytes=buffered_bytes
        )
        return server_budgets(limits)

    with pytest.raises(BudgetError, match="smaller than one message"):
        budgets(1 * MIB)
    assert budgets(128 * MIB).max_buffered_bytes == 128 * MIB


def test_the_largest_holders_are_cut_first_and_no_more_than_needed():
    held = [(1 * MIB, "small"), (40 * MIB, "big"), (30 * MIB, "bigger than small"), (0, "idle")]
    assert holders_to_cut(held, 10 * MIB) == ["big"]
    assert holders_to_cut(held, 41 * MIB) == ["big", "bigger than small"]
    assert holders_to_cut(held, 0) == []
    # Even when cutting everything cannot pay for it, a connection holding nothing is kept.
    assert "idle" not in holders_to_cut(held, 500 * MIB)


def test_every_change_to_a_connections_buffered_bytes_reaches_the_ledger():
    ledger = BufferLedger(budget_bytes=100)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        first = Connection(ours, "a", 0.0, ledger)
        second = Connection(theirs, "b", 0.0, ledger)
        ping = encoded("ping")
        first.receive(ping + b"x" * (40 - len(ping)), now_s=0.0)
        first.receive(b"x" * 20, now_s=0.0)
        second.receive(b"y" * 50, now_s=0.0)
        assert (ledger.held_bytes, ledger.over_bytes) == (110, 10)
        taken = first.next_message(ScanLimits(1 << 20, 64), now_s=1.0)  # the ping is taken
        assert taken is not None and taken[1] == ping
        assert ledger.held_bytes == 110 - len(ping)
        second.drop_input()
        assert (ledger.held_bytes, ledger.peak_bytes) == (60 - len(ping), 110)
