"""cuda_wait without a GPU: the per-thread blocking event, deferral."""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import pytest
import torch

from torchpipe_lite.backends import cuda_wait


class FakeStream:
    device_index = 0

    def __init__(self) -> None:
        self.synchronized = 0

    def synchronize(self) -> None:
        self.synchronized += 1


class FakeEvent:
    created: ClassVar[list[FakeEvent]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.calls: list[tuple[str, Any]] = []
        FakeEvent.created.append(self)

    def record(self, stream: Any) -> None:
        self.calls.append(("record", stream))

    def synchronize(self) -> None:
        self.calls.append(("synchronize", None))


@pytest.fixture
def fake_events(monkeypatch: pytest.MonkeyPatch) -> type[FakeEvent]:
    FakeEvent.created = []
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(cuda_wait, "_events", threading.local())
    return FakeEvent


def test_block_mode_records_and_waits_on_one_blocking_event_per_thread(
    fake_events: type[FakeEvent],
) -> None:
    stream = FakeStream()
    cuda_wait.wait_for_stream(stream)
    cuda_wait.wait_for_stream(stream)
    assert len(fake_events.created) == 1
    event = fake_events.created[0]
    assert event.kwargs == {"blocking": True}
    assert event.calls == [("record", stream), ("synchronize", None)] * 2
    assert stream.synchronized == 0  # never the spinning wait

    other = threading.Thread(target=cuda_wait.wait_for_stream, args=(stream,))
    other.start()
    other.join(timeout=5)
    assert len(fake_events.created) == 2  # a thread never shares another's event


def test_deferred_waits_skip_the_current_stream_wait_until_the_block_ends(
    monkeypatch: pytest.MonkeyPatch, fake_events: type[FakeEvent]
) -> None:
    stream = FakeStream()
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: stream)
    with cuda_wait.deferred_waits():
        with cuda_wait.deferred_waits():
            cuda_wait.wait_for_current_stream()
        cuda_wait.wait_for_current_stream()
        assert fake_events.created == []
        cuda_wait.wait_for_stream(stream)  # an explicit wait is never deferred
        assert len(fake_events.created) == 1
    cuda_wait.wait_for_current_stream()
    assert fake_events.created[0].calls.count(("synchronize", None)) == 2
