"""The connection sweep's deadline rule and the loop's wake-up pipes, without a server."""

from __future__ import annotations

import select
import threading

from service.rpc.limits import Overdue, TransportLimits, overdue
from service.rpc.wakeup import LoopWaker

LIMITS = TransportLimits(message_timeout_s=2.0, idle_timeout_s=10.0)


def test_a_message_arriving_too_slowly_is_overdue_whatever_the_idle_time():
    assert overdue(100.0, 101.5, 102.5, LIMITS) is Overdue.SLOW_MESSAGE
    assert overdue(100.0, 100.0, 101.9, LIMITS) is None  # within its deadline


def test_a_silent_connection_between_messages_is_overdue_after_the_idle_timeout():
    assert overdue(None, 100.0, 110.5, LIMITS) is Overdue.IDLE
    assert overdue(None, 100.0, 109.5, LIMITS) is None


def test_a_post_from_another_thread_wakes_a_waiting_loop_and_is_taken_once():
    waker: LoopWaker[str] = LoopWaker()
    try:
        poster = threading.Thread(target=waker.post, args=("connection",))
        poster.start()
        readable, _, _ = select.select([waker.wake_read_fd], [], [], 5.0)
        poster.join(timeout=5.0)
        assert readable == [waker.wake_read_fd]
        waker.drain(waker.wake_read_fd)
        assert select.select([waker.wake_read_fd], [], [], 0)[0] == []  # drained
        assert waker.take_posted() == ["connection"]
        assert waker.take_posted() == []
    finally:
        waker.close()
    waker.wake()  # after close: does nothing, raises nothing
