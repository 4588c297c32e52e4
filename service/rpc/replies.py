"""Sending a call's reply: at once from the thread that finished it, the rest from the loop."""

from __future__ import annotations

import threading

from .connection import Connection
from .limits import ConnectionFigures
from .poller import READ, Poller
from .wakeup import LoopWaker


class ReplyWriter:
    """Writes replies and ends calls; hands the loop thread what a thread could not finish.

    A reply the socket takes whole costs no hand-off; a partial one is posted to the loop,
    which watches the socket for writing and sends the rest (``flush``).
    """

    def __init__(
        self,
        poller: Poller,
        waker: LoopWaker[Connection],
        figures: ConnectionFigures,
        stopping: threading.Event,
    ):
        self._poller = poller
        self._waker = waker
        self._figures = figures
        self._stopping = stopping

    def finish(self, connection: Connection, data: bytes) -> None:
        """Send a call's reply and end the call (any thread)."""
        sent = 0
        if not connection.closing:
            try:
                sent = connection.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                sent = len(data)  # the client is gone: nothing more to send
                connection.closing = True
                self._count_undelivered()
        else:
            self._count_undelivered()
            sent = len(data)
        if sent < len(data):
            connection.out = memoryview(data)[sent:]
            self._waker.post(connection)  # busy until the loop has sent the rest
            return
        self.end_call(connection)

    def flush(self, connection: Connection) -> None:
        """Send more of a partly sent reply, once its socket can take it (the loop thread)."""
        out = connection.out
        if out is None:
            return
        try:
            sent = connection.sock.send(out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            sent = len(out)
            connection.closing = True
        if sent < len(out):
            connection.out = out[sent:]
            return
        connection.out = None
        self._poller.change(connection.fd, READ)
        self.end_call(connection)

    def end_call(self, connection: Connection) -> None:
        """Mark the connection free; the loop follows up when there is something to do."""
        with connection.lock:
            connection.busy = False
            follow_up = connection.closing or connection.input_waiting
        if follow_up or self._stopping.is_set():
            self._waker.post(connection)

    def _count_undelivered(self) -> None:
        with self._figures.lock:
            self._figures.replies_undelivered += 1
