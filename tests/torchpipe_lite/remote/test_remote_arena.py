"""The shared-memory arena of a remote pipeline's client: ring bookkeeping and data layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from torchpipe_lite.errors import OverloadedError
from torchpipe_lite.remote import wire
from torchpipe_lite.remote.arena import Arena, RingSpace, read_data


def test_the_ring_hands_out_disjoint_records_and_reuses_space_once_the_oldest_is_freed():
    ring = RingSpace(256)
    first, second, third = ring.allocate(64), ring.allocate(64), ring.allocate(64)
    assert (first, second, third) == (0, 64, 128)
    assert ring.allocate(128) is None  # 64 left at the end, none before the oldest
    ring.free(second)  # out of order: the oldest still bounds the free space
    assert ring.allocate(128) is None
    ring.free(first)
    assert ring.allocate(100) == 0  # wraps: 128 bytes before the oldest live record
    assert ring.allocate(1) is None  # behind the tail now: nothing until the oldest is freed
    ring.free(third)
    assert ring.allocate(64) == 128


def test_the_ring_never_overlaps_live_records_under_random_use():
    rng = np.random.default_rng(7)
    ring = RingSpace(4096)
    live: dict[int, int] = {}
    for _ in range(5000):
        if live and rng.random() < 0.5:
            offset = list(live)[int(rng.integers(len(live)))]
            ring.free(offset)
            del live[offset]
            continue
        size = int(rng.integers(1, 700))
        offset = ring.allocate(size)
        if offset is None:
            continue
        end = offset + size
        assert end <= 4096
        for other, other_size in live.items():
            assert end <= other or other + other_size <= offset, "records overlap"
        live[offset] = size
    for offset in list(live):
        ring.free(offset)
    assert ring.live_records == 0 and ring.allocate(4096) == 0


def test_freeing_an_offset_that_is_not_live_is_an_error():
    ring = RingSpace(256)
    offset = ring.allocate(10)
    ring.free(offset)
    with pytest.raises(ValueError, match="no live record"):
        ring.free(offset)


@pytest.mark.parametrize(
    "data",
    [
        b"jpeg bytes",
        bytearray(b"\x00\x01"),
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.zeros((1, 3, 5, 5), dtype=np.uint8),
        torch.arange(6, dtype=torch.int64).reshape(2, 3),
        torch.ones(1, 3, 4, 4, dtype=torch.uint8).permute(0, 2, 3, 1),  # not contiguous
        {"any": "object", "travels": [1, 2]},
    ],
)
def test_data_written_by_the_client_reads_back_in_place_on_the_server_side(data):
    arena = Arena(1 << 16)
    try:
        offset, length, kind = arena.write(data)
        memory = memoryview(arena._memory)  # the server maps the same memfd
        back = read_data(memory, offset, length, kind)
        if isinstance(data, bytes | bytearray):
            assert bytes(back) == bytes(data)
        elif isinstance(data, np.ndarray):
            assert isinstance(back, np.ndarray) and np.array_equal(back, data)
        elif isinstance(data, torch.Tensor):
            assert isinstance(back, torch.Tensor) and torch.equal(back, data)
        else:
            assert back == data
        del back
        memory.release()
    finally:
        arena.close()


def test_a_full_arena_refuses_with_overloaded_and_a_huge_request_as_invalid():
    arena = Arena(1024)
    try:
        arena.write(b"x" * 400)
        arena.write(b"x" * 400)
        with pytest.raises(OverloadedError):
            arena.write(b"y" * 400)
        with pytest.raises(Exception, match="over half the arena"):
            arena.write(b"z" * 600)
    finally:
        arena.close()


def test_a_record_outside_the_arena_is_a_protocol_error():
    memory = memoryview(bytearray(128))
    with pytest.raises(wire.WireError):
        read_data(memory, 100, 64, wire.DataKind.BYTES)
    with pytest.raises(wire.WireError):
        read_data(memory, 0, 64, 42)
