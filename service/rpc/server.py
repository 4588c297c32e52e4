"""The event-loop Thrift server: one thread reads every connection, replies go out from any.

A thread-per-connection server (thrift's TThreadPoolServer, the reference's) parks a thread
on every connection, so idle or slow clients occupy threads and every request costs two
thread wake-ups. Here one loop thread waits on all sockets at once (epoll), reads whatever
arrived, finds whole messages (``message_scan``), decodes them (``codec``) and starts each
call on its handler (``call_handler``); the thread that finishes a call sends its reply
(``replies``); ``connection_table`` holds the connections and closes them. Limits that
no client can get around: a deadline for each message from its first byte to its last, an
idle timeout between messages, a cap on open connections, and no busy loop when the process
is out of descriptors.

``stop()`` (safe from a signal handler) stops accepting, closes idle connections, answers
every call already received (and every request message already begun, if it arrives within
its deadline), then ``serve()`` returns.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time

from thrift.protocol.TProtocol import TProtocolException
from thrift.Thrift import TApplicationException, TMessageType
from thrift.transport.TTransport import TTransportException

from service.call_context import CallContext
from service.gen.inference import InferenceService
from service.gen.inference.ttypes import ConnectionStats
from service.ops.log_limit import LogLimiter

from .acceptor import Acceptor
from .budgets import BufferLedger, server_budgets
from .call_handler import CallDispatcher, CallHandler
from .codec import Codec, Method, fastbinary_available, service_methods
from .connection import Connection, Reply
from .connection_table import ConnectionTable
from .limits import ConnectionFigures, TransportLimits
from .message_scan import MalformedMessageError, MessageHead, ScanLimits
from .poller import BROKEN, READ, WRITE, Poller
from .replies import ReplyWriter
from .wakeup import LoopWaker

logger = logging.getLogger("service.rpc")

_RECV_BYTES = 256 * 1024
#: Longest pause between two sweeps for expired deadlines.
_SWEEP_S = 0.25
#: At most one log line per this many seconds for each kind of refused connection.
_LOG_EVERY_S = 10.0
_LISTENER = "listener"


class ThriftServer:
    """Serves ``InferenceService`` over buffered transport and the strict binary protocol.

    Each call goes to ``handler``'s method for it (``service.rpc.call_handler``), on the loop
    thread, which never waits for one.
    """

    def __init__(
        self,
        handler: CallHandler,
        *,
        host: str = "127.0.0.1",
        port: int = 8888,
        limits: TransportLimits | None = None,
        reuse_port: bool = False,
        handoff: socket.socket | None = None,
    ):
        self._limits = limits or TransportLimits()
        budgets = server_budgets(self._limits)
        self._max_connections = budgets.max_connections
        #: Bytes held in unfinished request messages, every connection together.
        self.buffers = BufferLedger(budgets.max_buffered_bytes)
        self._methods: dict[str, Method] = service_methods(InferenceService)
        self._dispatcher = CallDispatcher(handler, set(self._methods))
        # The string limit is the message limit: an oversized image inside an acceptable
        # message reaches the handler, which answers TOO_LARGE instead of dropping the client.
        self._codec = Codec(
            string_length_limit=self._limits.max_message_bytes,
            container_length_limit=self._limits.max_container_items,
        )
        self._scan_limits = ScanLimits(
            self._limits.max_message_bytes, self._limits.max_container_items
        )
        self._poller = Poller()
        self._scratch = memoryview(bytearray(_RECV_BYTES))  # the loop thread's read buffer
        self._waker: LoopWaker[Connection] = LoopWaker()
        self._stopping = threading.Event()
        #: Set once the listening socket is closed: from then on connecting is refused.
        self.stopped_accepting = threading.Event()
        self.figures = ConnectionFigures()
        self._replies = ReplyWriter(self._poller, self._waker, self.figures, self._stopping)
        self._log = LogLimiter(logger, every_s=_LOG_EVERY_S)
        self._connections = ConnectionTable(
            self._poller,
            self.figures,
            self._log,
            self._limits,
            buffers=self.buffers,
            max_connections=self._max_connections,
        )
        # A worker of ``--workers`` does not listen: its supervisor accepts and hands it
        # connections over the ``handoff`` Unix socket (``service.processes.connection_dealer``).
        self._acceptor = Acceptor(
            self._poller,
            self._log,
            host=host,
            port=port,
            reuse_port=reuse_port,
            handoff=handoff,
            token=_LISTENER,
        )
        if not fastbinary_available():
            logger.warning(
                "thrift.protocol.fastbinary (the C extension) is missing: using the pure-Python "
                "binary protocol, several times slower; reinstall thrift with a C compiler present"
            )

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (useful after listening on port 0)."""
        return self._acceptor.port

    def connection_stats(self) -> ConnectionStats:
        """The connection layer's figures, as ``stats()`` sends them (a racy, cheap read)."""
        return self.figures.stats(self._max_connections)

    def at_connection_cap(self) -> str | None:
        """Why new clients should go elsewhere, when every connection slot is taken."""
        cap = self._max_connections
        if self.figures.open >= cap:
            return f"saturated: {cap} connections open, the limit"
        return None

    def listen(self) -> int:
        """Bind and listen; returns the port. ``serve()`` calls it when needed."""
        return self._acceptor.listen()

    def stop(self) -> None:
        """Ask ``serve()`` to stop accepting, finish the calls received and return."""
        self._stopping.set()
        self._waker.wake()

    def serve(self, drain_timeout_s: float = 60.0) -> bool:
        """Run until ``stop()``. Returns True when every call received was answered within
        ``drain_timeout_s`` after the stop, False when some were still running."""
        self.listen()
        poller = self._poller
        self._acceptor.watch()
        poller.watch(self._waker.wake_read_fd, self._waker.wake_read_fd)
        poller.watch(self._waker.signal_read_fd, self._waker.signal_read_fd)
        on_main_thread = threading.current_thread() is threading.main_thread()
        previous_wakeup_fd = (
            signal.set_wakeup_fd(self._waker.signal_write_fd) if on_main_thread else -1
        )
        try:
            self._loop(lambda: self._stopping.is_set())
            self._stop_accepting()
            logger.info("stopped accepting; finishing the calls in flight")
            deadline_s = time.monotonic() + drain_timeout_s
            self._connections.close_idle()
            self._loop(lambda: not self._connections.unfinished() or time.monotonic() >= deadline_s)
            drained = not self._connections.unfinished()
        finally:
            if on_main_thread:
                signal.set_wakeup_fd(previous_wakeup_fd)
        if not drained:
            logger.error(
                "%d call(s) still running after %.0f s; giving up",
                self._connections.unfinished(),
                drain_timeout_s,
            )
            return False  # their threads may still reply: leave the sockets open
        for connection in self._connections:
            self._connections.close(connection)
        poller.close()
        self._waker.close()
        return True

    # -- the loop ----------------------------------------------------------------------------

    def _loop(self, done) -> None:
        poller = self._poller
        next_sweep_s = time.monotonic() + _SWEEP_S
        while not done():
            for target, events in poller.wait(max(0.0, next_sweep_s - time.monotonic())):
                if isinstance(target, Connection):
                    try:
                        if events & WRITE:
                            self._replies.flush(target)
                        if events & (READ | BROKEN):
                            self._read(target)
                    except Exception as error:  # one connection's failure is its own
                        self._connections.drop_after_error(target, error)
                elif target == _LISTENER:
                    self._acceptor.accept(self._connections.adopt, self._stopping.set)
                else:  # a wake-up or a signal (its handler has run by now): a pipe's fd
                    self._waker.drain(target)
            self._handle_posted()
            now_s = time.monotonic()
            if now_s >= next_sweep_s:
                if not self._stopping.is_set():
                    self._acceptor.resume_if_due(now_s)
                self._connections.sweep(now_s)
                next_sweep_s = now_s + _SWEEP_S

    def _read(self, connection: Connection) -> None:
        # Into one reused buffer, then copied out at its exact size: recv() of a large size
        # allocates that much for every read (large enough to be mapped and unmapped each
        # time), which costs more than the copy.
        try:
            received = connection.sock.recv_into(self._scratch)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            received = 0
        data = self._scratch[:received].tobytes()
        if not data:
            with connection.lock:
                abandoned = connection.busy and connection.call is not None
            if abandoned:
                self.figures.calls_abandoned += 1
                connection.call.cancel()  # its work is dropped wherever it waits
            self._connections.close_when_idle(connection)
            return
        now_s = time.monotonic()
        connection.last_active_s = now_s
        connection.receive(data, now_s)
        if self.buffers.over_bytes > 0 and self._connections.cut_largest_holders(connection):
            return
        with connection.lock:
            if connection.busy:
                connection.input_waiting = True
                over = connection.buffered_bytes > self._limits.max_message_bytes
            else:
                over = False
        if over:
            self._connections.refuse(
                connection, "sent over the message limit while a call was running"
            )
            return
        if not connection.busy:
            self._next_message(connection)

    def _next_message(self, connection: Connection) -> None:
        """Start the call whose message has fully arrived, if one has."""
        if (
            connection.busy
            or connection.closing
            or not connection.buffered_bytes
            or connection.buffered_bytes < connection.needed_bytes
        ):
            return
        try:
            found = connection.next_message(self._scan_limits, time.monotonic())
        except MalformedMessageError as exc:
            self._connections.refuse(connection, f"malformed or oversized request: {exc}")
            return
        if found is not None:
            self._start_call(connection, *found)

    def _start_call(self, connection: Connection, head: MessageHead, message: bytes) -> None:
        connection.call = None  # no call handed out yet (see ``ConnectionTable.drop_after_error``)
        if head.message_type not in (TMessageType.CALL, TMessageType.ONEWAY):
            self._connections.refuse(
                connection, f"a message of type {head.message_type} is not a call"
            )
            return
        method = self._methods.get(head.name)
        with connection.lock:
            connection.busy = True
            # Whole messages may follow this one in the buffer: the call's end must come back
            # for them (``end_call``) instead of waiting for the client to send more.
            connection.input_waiting = connection.buffered_bytes > 0
        if method is None:
            reply = self._codec.application_error(
                head.name,
                head.seqid,
                TApplicationException.UNKNOWN_METHOD,
                f"Unknown function {head.name}",
            )
            self._replies.finish(connection, reply)
            return
        try:
            call = self._codec.decode(method, head.seqid, message, head.body_offset)
        except (TProtocolException, TTransportException, OverflowError, ValueError, EOFError) as e:
            # OverflowError: the C decoder's way of refusing a length over the limits.
            with connection.lock:
                connection.busy = False
            self._connections.refuse(connection, f"malformed or oversized request: {e}")
            return
        reply = Reply(call, connection, self._codec, self._replies.finish)
        connection.call = CallContext(head.name, reply.answer)
        self._dispatcher.start(connection.call, call.args)

    # -- follow-ups posted by the threads that sent replies ----------------------------

    def _handle_posted(self) -> None:
        for connection in self._waker.take_posted():
            if not self._connections.holds(connection):
                continue  # closed meanwhile (its descriptor may already be another's)
            try:
                self._follow_up(connection)
            except Exception as error:  # one connection's failure is its own
                self._connections.drop_after_error(connection, error)

    def _follow_up(self, connection: Connection) -> None:
        if connection.out is not None and connection.closing:
            connection.out = None  # the client is gone: drop the rest of the reply
            with connection.lock:
                connection.busy = False
            self._connections.close(connection)
        elif connection.out is not None:
            self._poller.change(connection.fd, READ | WRITE)
        elif connection.closing or (self._stopping.is_set() and not connection.busy):
            self._connections.close_when_idle(connection)
        else:
            self._next_message(connection)

    def _stop_accepting(self) -> None:
        self._acceptor.close()
        self.stopped_accepting.set()
