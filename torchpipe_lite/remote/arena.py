"""A client's shared-memory arena: where each request's data is written for the server to read.

The arena is one memfd mapping, shared with the server when the client attaches. Space is
handed out as a ring: records are allocated at the head and freed when their request ends,
in any order; the oldest live record bounds the free space, so a request that takes long
delays reuse but never corrupts another. Full means the client has that many bytes of
requests in flight: the caller gets ``OverloadedError``, as from a full queue.
"""

from __future__ import annotations

import mmap
import os
import pickle
import threading
from collections import deque
from typing import Any

from ..errors import InvalidRequestError, OverloadedError
from . import wire
from .wire import DataKind

_ALIGN_BYTES = 64


def _aligned(size: int) -> int:
    return (size + _ALIGN_BYTES - 1) // _ALIGN_BYTES * _ALIGN_BYTES


class RingSpace:
    """The ring's bookkeeping alone (no memory): which offsets are live. Not thread-safe."""

    __slots__ = ("_by_offset", "_head", "_live", "capacity")

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._head = 0
        #: Live records in allocation order: [offset, size, freed].
        self._live: deque[list] = deque()
        self._by_offset: dict[int, list] = {}

    def allocate(self, size: int) -> int | None:
        """The offset of ``size`` free bytes, or None when the ring has no room for them."""
        size = _aligned(max(size, 1))
        if not self._live:
            self._head = 0
        tail = self._live[0][0] if self._live else 0
        head = self._head
        if not self._live or head > tail:
            if head + size <= self.capacity:
                offset = head
            elif size <= tail:
                offset = 0  # wrap: the end of the ring stays unused until the tail passes it
            else:
                return None
        elif head + size <= tail:
            offset = head
        else:
            return None
        record = [offset, size, False]
        self._live.append(record)
        self._by_offset[offset] = record
        self._head = offset + size
        return offset

    def free(self, offset: int) -> None:
        """The record at ``offset`` is no longer needed."""
        record = self._by_offset.pop(offset, None)
        if record is None:
            raise ValueError(f"no live record at offset {offset}")
        record[2] = True
        while self._live and self._live[0][2]:
            self._live.popleft()

    @property
    def live_records(self) -> int:
        return len(self._live)


class Arena:
    """A memfd of ``capacity_bytes``, mapped here; ``fd`` is sent to the server once."""

    def __init__(self, capacity_bytes: int):
        if capacity_bytes < _ALIGN_BYTES:
            raise ValueError(f"an arena needs at least {_ALIGN_BYTES} bytes")
        self.capacity_bytes = capacity_bytes
        self.fd = os.memfd_create("torchpipe-lite-arena")
        try:
            os.ftruncate(self.fd, capacity_bytes)
            self._memory = mmap.mmap(self.fd, capacity_bytes)
        except BaseException:
            os.close(self.fd)
            raise
        self._view = memoryview(self._memory)
        self._space = RingSpace(capacity_bytes)
        self._lock = threading.Lock()

    def write(self, data: Any) -> tuple[int, int, DataKind]:
        """Copy ``data`` into the arena: (offset, length, kind). ``OverloadedError`` when full."""
        kind, parts = _encode(data)
        length = sum(len(part) for part in parts)
        if length > self.capacity_bytes // 2:
            raise InvalidRequestError(
                f"a request's data of {length} bytes is over half the arena "
                f"({self.capacity_bytes} bytes)"
            )
        with self._lock:
            offset = self._space.allocate(length)
        if offset is None:
            raise OverloadedError(
                f"the arena of {self.capacity_bytes} bytes is full of requests in flight"
            )
        position = offset
        for part in parts:
            end = position + len(part)
            self._view[position:end] = part
            position = end
        return offset, length, kind

    def free(self, offset: int) -> None:
        with self._lock:
            self._space.free(offset)

    def reset(self) -> None:
        """Forget every record (the server that read them is gone)."""
        with self._lock:
            self._space = RingSpace(self.capacity_bytes)

    def close(self) -> None:
        os.close(self.fd)
        self._view.release()
        self._memory.close()


def _encode(data: Any) -> tuple[DataKind, list[Any]]:
    """``data`` as a kind and the byte parts to write (views, not copies, where possible)."""
    if isinstance(data, bytes | bytearray):
        return DataKind.BYTES, [data]
    if isinstance(data, memoryview):
        return DataKind.BYTES, [data.cast("B") if data.format != "B" else data]
    module = type(data).__module__
    if module == "numpy" and type(data).__name__ == "ndarray":
        array = data if data.flags.c_contiguous else data.copy(order="C")
        if array.dtype.name in wire.ARRAY_DTYPES:
            header = wire.pack_array_header(array.dtype.name, array.shape)
            return DataKind.NDARRAY, [header, memoryview(array).cast("B")]
    elif module == "torch" and type(data).__name__ == "Tensor" and data.device.type == "cpu":
        dtype_name = str(data.dtype).removeprefix("torch.")
        if dtype_name in wire.ARRAY_DTYPES:
            import torch

            flat = data.detach().contiguous().reshape(-1).view(torch.uint8)
            header = wire.pack_array_header(dtype_name, tuple(data.shape))
            return DataKind.TENSOR, [header, memoryview(flat.numpy())]
    return DataKind.PICKLE, [pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)]


def read_data(memory: memoryview, offset: int, length: int, kind: int) -> Any:
    """The server's side of ``Arena.write``: the data at ``offset``, read in place where it is
    bytes, an array or a tensor (valid while the client keeps the record, i.e. until the
    request ends)."""
    if offset + length > len(memory):
        raise wire.WireError(f"a record at {offset}+{length} outside an arena of {len(memory)}")
    record = memory[offset : offset + length]
    if kind == DataKind.BYTES:
        return record
    if kind == DataKind.PICKLE:
        return pickle.loads(record)
    if kind not in (DataKind.NDARRAY, DataKind.TENSOR):
        raise wire.WireError(f"unknown data kind {kind}")
    dtype_name, shape = wire.unpack_array_header(record)
    body = record[wire.ARRAY_HEADER_BYTES :]
    if kind == DataKind.TENSOR:
        import torch

        dtype = getattr(torch, dtype_name)
        if len(body) == 0:
            return torch.empty(shape, dtype=dtype)
        return torch.frombuffer(body, dtype=torch.uint8).view(dtype).reshape(shape)
    import numpy as np

    return np.frombuffer(body, dtype=dtype_name).reshape(shape)
