"""Waiting for a CUDA stream: by default on a blocking-sync event, so the CPU thread sleeps.

``stream.synchronize()`` under CUDA's default scheduling spins a CPU core for as long as the
GPU work takes. A server runs one such wait per model instance and process, and each spinning
core is one the CPU image stages (decode, resize) no longer get. A blocking-sync event puts
the thread to sleep on an OS primitive instead, for a wake-up cost of tens of microseconds.

Inside ``SyncTensor`` the per-backend waits are deferred: its children queue their work on one
stream and SyncTensor waits once at the end, rather than once per child.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# Events are per thread (and per device): record+synchronize on a shared one would race.
_events = threading.local()


def wait_for_stream(stream: torch.cuda.Stream) -> None:
    """Return once everything queued on ``stream`` so far has run (releases the GIL)."""
    import torch

    by_device = getattr(_events, "by_device", None)
    if by_device is None:
        by_device = _events.by_device = {}
    event = by_device.get(stream.device_index)
    if event is None:
        event = by_device[stream.device_index] = torch.cuda.Event(blocking=True)
    event.record(stream)
    event.synchronize()


def wait_for_current_stream(device: torch.device | int | None = None) -> None:
    """``wait_for_stream`` on the calling thread's current stream of ``device``, unless
    inside ``deferred_waits()``: then the owner of the stream waits later, once."""
    if getattr(_events, "deferred", 0):
        return
    import torch

    if isinstance(device, torch.device) and device.type != "cuda":
        return  # nothing runs asynchronously there
    wait_for_stream(torch.cuda.current_stream(device))


@contextlib.contextmanager
def deferred_waits() -> Iterator[None]:
    """Within it, ``wait_for_current_stream`` returns at once; the caller must wait for the
    stream itself when the block ends (as ``SyncTensor`` does)."""
    _events.deferred = getattr(_events, "deferred", 0) + 1
    try:
        yield
    finally:
        _events.deferred -= 1
