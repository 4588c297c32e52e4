"""One client connection of the event-loop server, and the reply handle of its current call.

A connection runs one call at a time, as a thrift client expects: its bytes are read by the
loop thread, and once a whole message is in, the call is dispatched and the connection is
*busy* until the reply has been sent. The reply is usually sent by whichever thread finished
the call (a pipeline worker, a pool thread), straight into the non-blocking socket; only what
the socket does not take at once goes back to the loop thread. The loop thread alone closes
sockets and touches the selector, so a descriptor is never closed while another thread may
still write to it.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

from thrift.Thrift import TApplicationException

from service.call_context import CallContext
from service.ops.log_limit import LogLimiter

from .budgets import BufferLedger
from .codec import Call, Codec
from .message_scan import MessageHead, MessageScan, ScanLimits

logger = logging.getLogger("service.rpc")
#: A call's unexpected failure is a line with a traceback, and a client can make every one of
#: its calls fail the same way: at most one such line per method and kind a second.
_failure_log = LogLimiter(logger)


class Connection:
    """A client connection's state. Fields other than the ones under ``lock`` belong to the
    loop thread."""

    __slots__ = (
        "_buffered_bytes",
        "_ledger",
        "_pending",
        "_scan",
        "busy",
        "call",
        "closing",
        "fd",
        "input_waiting",
        "last_active_s",
        "lock",
        "message_started_s",
        "needed_bytes",
        "out",
        "peer",
        "sock",
    )

    def __init__(self, sock: socket.socket, peer: str, now_s: float, ledger: BufferLedger):
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        #: Bytes received and not yet taken as a message: the bytes of one read as they came,
        #: or, once a second read adds to them, a bytearray that grows in place.
        self._pending: bytes | bytearray = b""
        #: The walk over the message at the front of ``_pending``, resumed at each read.
        self._scan: MessageScan | None = None
        self._ledger = ledger
        self._buffered_bytes = 0
        #: The message being received needs at least this many bytes (0: unknown).
        self.needed_bytes = 0
        #: When the first byte of the message being received arrived (None: between messages).
        self.message_started_s: float | None = None
        self.last_active_s = now_s
        #: The part of a reply the socket has not taken yet (the loop thread sends it).
        self.out: memoryview | None = None
        self.lock = threading.Lock()
        # Under ``lock``: a call is running; the loop wants the socket closed once it ends;
        # bytes arrived while the call ran and wait to be read as the next message.
        self.busy = False
        self.closing = False
        self.input_waiting = False
        #: The running call's context (the loop thread's: to tell it the client went away).
        self.call: CallContext | None = None

    @property
    def buffered_bytes(self) -> int:
        """The bytes in ``chunks``. Setting it keeps the server-wide ledger in step, so the
        total held by every connection is always known without adding them up."""
        return self._buffered_bytes

    @buffered_bytes.setter
    def buffered_bytes(self, value: int) -> None:
        self._ledger.add(value - self._buffered_bytes)
        self._buffered_bytes = value

    def drop_input(self) -> None:
        """Forget every byte received and not yet taken (the connection is being closed)."""
        self._pending = b""
        self._scan = None
        self.buffered_bytes = 0
        self.needed_bytes = 0

    def receive(self, data: bytes, now_s: float) -> None:
        """Keep ``data``, just read, after the bytes not yet taken."""
        if not self._pending:
            self.message_started_s = now_s
            self._pending = data  # a message read whole, as most are, is not copied here
        else:
            if isinstance(self._pending, bytes):
                self._pending = bytearray(self._pending)
            self._pending += data  # amortised: the bytes already there are not copied again
        self.buffered_bytes += len(data)

    def next_message(self, limits: ScanLimits, now_s: float) -> tuple[MessageHead, bytes] | None:
        """The head and bytes of the message at the front of what was received, taken out of
        it, once all of it is in; until then None, with ``needed_bytes`` set.

        The scan resumes where the previous call left it, so a message arriving in many small
        reads costs work linear in its size, not in its size times the reads. Raises
        ``MalformedMessageError`` (or ``MessageTooLargeError``) as ``scan_message`` does.
        """
        if self._scan is None:
            self._scan = MessageScan(limits)
        found = self._scan.advance(self._pending)
        if isinstance(found, int):
            self.needed_bytes = found
            return None
        head, end = found
        pending = self._pending
        if end == len(pending):
            message = pending if isinstance(pending, bytes) else bytes(pending)
            self._pending = b""
        else:  # more follows: cut this message off the front (O(1) for a bytearray)
            message = bytes(pending[:end])
            if isinstance(pending, bytes):
                pending = self._pending = bytearray(pending)
            del pending[:end]
        self._scan = None
        self.buffered_bytes = len(self._pending)
        self.needed_bytes = 0
        self.message_started_s = now_s if self._pending else None
        return head, message


class Reply:
    """The way back for one call: ``send(value)`` or ``fail(error)``, once, from any thread.

    A failure that the method declares (``throws``) reaches the client as that exception; a
    ``TApplicationException`` as itself; anything else is logged with its traceback and the
    client gets ``INTERNAL_ERROR``, as with thrift's generated processor (the log lines are
    rate-limited: a client may make every call fail). ``answer`` is the ``CallContext``'s way
    back (``service.call_context``).
    """

    __slots__ = ("_codec", "_connection", "_finish", "_sent", "call")

    def __init__(
        self,
        call: Call,
        connection: Connection,
        codec: Codec,
        finish: Callable[[Connection, bytes], None],
    ):
        self.call = call
        self._connection = connection
        self._codec = codec
        self._finish = finish
        self._sent = False

    def answer(self, value: Any, error: BaseException | None) -> None:
        """``fail(error)`` when there is one, else ``send(value)``."""
        if error is not None:
            self.fail(error)
        else:
            self.send(value)

    def send(self, value: Any = None) -> None:
        """Answer the call with ``value``."""
        try:
            data = self._codec.reply(self.call, value)
        except Exception as error:  # a value the IDL cannot encode is a server bug
            name = self.call.method.name
            _failure_log.log(f"encode-{name}", logging.ERROR, "cannot encode the reply of %s", name)
            self.fail(error)
            return
        self._deliver(data)

    def fail(self, error: BaseException) -> None:
        """Answer the call with ``error`` (see the class docstring for how it travels)."""
        call = self.call
        try:
            data = self._codec.declared_error(call, error)
        except Exception as encoding:  # an error value the IDL cannot encode: still answer
            error, data = encoding, None
        if data is None:
            if isinstance(error, TApplicationException):
                kind, message = error.type, str(error.message)
            else:
                _failure_log.log(
                    f"unexpected-{call.method.name}",
                    logging.ERROR,
                    "unexpected exception in %s",
                    call.method.name,
                    exc_info=error,
                )
                kind, message = TApplicationException.INTERNAL_ERROR, "Internal error"
            data = self._codec.application_error(call.method.name, call.seqid, kind, message)
        self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        if self._sent:
            name = self.call.method.name
            _failure_log.log(
                f"twice-{name}", logging.ERROR, "%s answered twice; the second is dropped", name
            )
            return
        self._sent = True
        self._finish(self._connection, data)
