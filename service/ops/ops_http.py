"""The operations port's HTTP server: one thread waiting on every socket (epoll), bounded whatever
arrives.

Probes and scrapes are small GETs. A thread per connection (``http.server``'s
``ThreadingHTTPServer``) lets a flood of connections that send nothing start a thread each,
until the liveness probe waits behind them. Here one thread accepts, reads and writes every
connection (a selector); health answers are computed on it at once, answers that take longer
(``/metrics``, ``/stats``) on a pool of two threads, so a burst of scrapes cannot delay a
probe. Bounds: at most ``MAX_CONNECTIONS`` open (past it a new connection closes the oldest
one still sending its request: a prober sends its request the moment it connects, so it is
answered long before it is the oldest), the request head within ``REQUEST_TIMEOUT_S`` and
``MAX_REQUEST_HEAD_BYTES``, the whole exchange within ``ANSWER_TIMEOUT_S``. Every answer is
HTTP/1.0 and closes its connection, as ``http.server``'s did.
"""

from __future__ import annotations

import collections
import http
import logging
import socket
import threading
import time
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from service.ops.log_limit import LogLimiter
from service.rpc.acceptor import Acceptor
from service.rpc.poller import BROKEN, READ, WRITE, Poller
from service.rpc.wakeup import LoopWaker

logger = logging.getLogger(__name__)

#: Connections open at once; ops clients (a prober, a scraper, a supervisor) need a handful.
MAX_CONNECTIONS = 32
#: From accept to the end of the request head.
REQUEST_TIMEOUT_S = 2.0
#: From accept to the last byte of the answer (a scrape's answer is computed first).
ANSWER_TIMEOUT_S = 10.0
#: The longest request head (request line and headers) read.
MAX_REQUEST_HEAD_BYTES = 8 * 1024
#: Threads computing the answers that take longer than a health check.
ANSWER_THREADS = 2
#: Connections taken per wake-up, few enough that requests already sent are read in between.
_ACCEPTS_PER_WAKE = 8
_SWEEP_S = 0.25
_LISTENER, _WAKE = "listener", "wake"

#: (status, content type, body) for a GET of a path.
Answer = tuple[int, str, str | bytes]


class HttpRequestError(ValueError):
    """A request head that is not a GET or HEAD this server can answer."""

    def __init__(self, status: http.HTTPStatus, why: str):
        super().__init__(why)
        self.status = status


@dataclass(frozen=True)
class HttpRequest:
    """What the server needs of a request: its method (GET or HEAD) and path."""

    method: str
    path: str


def request_head_end(received: bytes | bytearray) -> int | None:
    """Where the request head in ``received`` ends (after its blank line), or None while it
    has not all arrived. Bare line feeds are accepted, as by ``http.server``."""
    ends = [i + len(mark) for mark in (b"\r\n\r\n", b"\n\n") if (i := received.find(mark)) >= 0]
    return min(ends) if ends else None


def parse_request_head(head: bytes | bytearray) -> HttpRequest:
    """The method and path of a request head; ``HttpRequestError`` when there are none."""
    line = bytes(head).split(b"\n", 1)[0].rstrip(b"\r").decode("latin-1")
    words = line.split()
    if len(words) != 3 or not words[2].startswith("HTTP/") or not words[1].startswith("/"):
        raise HttpRequestError(http.HTTPStatus.BAD_REQUEST, f"bad request line {line[:80]!r}")
    method, path = words[0], words[1]
    if method not in ("GET", "HEAD"):
        raise HttpRequestError(http.HTTPStatus.NOT_IMPLEMENTED, f"unsupported method {method!r}")
    return HttpRequest(method, path)


def http_response(status: int, content_type: str, body: bytes, *, with_body: bool) -> bytes:
    """An HTTP/1.0 response that closes its connection."""
    head = (
        f"HTTP/1.0 {status} {http.HTTPStatus(status).phrase}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + (body if with_body else b"")


class _Client:
    __slots__ = ("accepted_s", "answering", "out", "peer", "received", "sock")

    def __init__(self, sock: socket.socket, peer: str, now_s: float):
        self.sock = sock
        self.peer = peer
        self.accepted_s = now_s
        self.received = bytearray()
        self.answering = False  # the request has been read; its answer is on its way
        self.out: memoryview | None = None


class BoundedHttpServer:
    """Serves ``respond(path)`` over HTTP on ``host:port`` from one thread; the paths in
    ``quick_paths`` are answered on that thread, the rest on a small pool."""

    def __init__(
        self,
        respond: Callable[[str], Answer],
        *,
        quick_paths: Collection[str],
        host: str,
        port: int,
        max_connections: int = MAX_CONNECTIONS,
    ):
        self._respond = respond
        self._quick_paths = frozenset(quick_paths)
        self._max_connections = max_connections
        self._poller = Poller()
        self._log = LogLimiter(logger, every_s=10.0)
        self._acceptor = Acceptor(
            self._poller,
            self._log,
            host=host,
            port=port,
            reuse_port=False,
            handoff=None,
            token=_LISTENER,
            accepts_per_wake=_ACCEPTS_PER_WAKE,
        )
        self._acceptor.listen()
        self._waker: LoopWaker[tuple[_Client, bytes]] = LoopWaker()
        self._pool = ThreadPoolExecutor(ANSWER_THREADS, thread_name_prefix="ops-answer")
        self._clients: collections.OrderedDict[int, _Client] = collections.OrderedDict()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        #: Connections closed unanswered to make room for newer ones, since start.
        self.evicted = 0

    @property
    def port(self) -> int:
        return self._acceptor.port

    @property
    def open_connections(self) -> int:
        """Connections open now (a racy, cheap read)."""
        return len(self._clients)

    def start(self) -> None:
        """Serve from a thread of its own."""
        self._acceptor.watch()
        self._poller.watch(self._waker.wake_read_fd, _WAKE)
        self._thread = threading.Thread(target=self._run, name="ops-http", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving, close every connection and the port."""
        self._stopping.set()
        self._waker.wake()
        if self._thread is not None:
            self._thread.join()
        self._pool.shutdown(wait=True, cancel_futures=True)
        for client in list(self._clients.values()):
            self._close(client)
        self._acceptor.close()
        self._poller.close()
        self._waker.close()

    # -- the loop (its own thread) ------------------------------------------------------------

    def _run(self) -> None:
        next_sweep_s = time.monotonic() + _SWEEP_S
        while not self._stopping.is_set():
            for target, events in self._poller.wait(max(0.0, next_sweep_s - time.monotonic())):
                try:
                    self._handle(target, events)
                except Exception as error:  # one connection's trouble is not the port's
                    self._log.log("error", logging.ERROR, "ops connection failed", exc_info=error)
                    if isinstance(target, _Client):
                        self._close(target)
            for client, response in self._waker.take_posted():
                if self._clients.get(client.sock.fileno()) is client:
                    self._send(client, response)
            now_s = time.monotonic()
            if now_s >= next_sweep_s:
                self._sweep(now_s)
                next_sweep_s = now_s + _SWEEP_S

    def _handle(self, target: object, events: int) -> None:
        if target == _LISTENER:
            self._acceptor.accept(self._adopt, on_end=lambda: None)
        elif target == _WAKE:
            self._waker.drain(self._waker.wake_read_fd)
        elif isinstance(target, _Client):
            if not target.answering:
                if events & (READ | BROKEN):
                    self._read(target)
            elif events & WRITE and target.out is not None:
                self._flush(target)
            elif events & BROKEN:  # gone while its answer was being computed
                logger.debug("ops client %s went away before its answer", target.peer)
                self._close(target)

    def _adopt(self, sock: socket.socket, peer: str) -> None:
        if len(self._clients) >= self._max_connections and not self._evict_oldest():
            sock.close()  # every slot holds an answer on its way
            return
        sock.setblocking(False)
        client = _Client(sock, peer, time.monotonic())
        self._clients[sock.fileno()] = client
        self._poller.watch(sock.fileno(), client)

    def _evict_oldest(self) -> bool:
        for client in self._clients.values():
            if not client.answering:
                self.evicted += 1
                self._log.log(
                    "full",
                    logging.WARNING,
                    "ops port: %d connections open, the limit: closing the oldest unanswered "
                    "(%d so far)",
                    self._max_connections,
                    self.evicted,
                )
                self._close(client)
                return True
        return False

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(MAX_REQUEST_HEAD_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(client)
            return
        client.received += data
        end = request_head_end(client.received)
        if end is None:
            if len(client.received) > MAX_REQUEST_HEAD_BYTES:
                error = HttpRequestError(
                    http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too long"
                )
                self._answer_error(client, error)
            return
        client.answering = True
        self._poller.change(client.sock.fileno(), 0)  # read no more; a hang-up still shows
        try:
            request = parse_request_head(client.received[:end])
        except HttpRequestError as error:
            self._answer_error(client, error)
            return
        if request.path.split("?", 1)[0] in self._quick_paths:
            self._send(client, self._response(request))
        else:
            future = self._pool.submit(self._response, request)
            future.add_done_callback(lambda done: self._post(client, done))

    def _response(self, request: HttpRequest) -> bytes:
        try:
            status, content_type, body = self._respond(request.path)
        except Exception:  # the port stays up; the log says why
            logger.exception("answering %s failed", request.path)
            status, content_type, body = 500, "text/plain; charset=utf-8", "failed; see the log\n"
        data = body.encode() if isinstance(body, str) else body
        return http_response(status, content_type, data, with_body=request.method == "GET")

    def _post(self, client: _Client, done: Future[bytes]) -> None:
        if not done.cancelled():  # cancelled: the server is closing
            self._waker.post((client, done.result()))

    def _answer_error(self, client: _Client, error: HttpRequestError) -> None:
        logger.debug("ops client %s: %s", client.peer, error)
        body = f"{error}\n".encode()
        client.answering = True
        self._send(client, http_response(error.status, "text/plain", body, with_body=True))

    def _send(self, client: _Client, response: bytes) -> None:
        client.out = memoryview(response)
        self._flush(client)
        if client.out is not None and self._clients.get(client.sock.fileno()) is client:
            self._poller.change(client.sock.fileno(), WRITE)

    def _flush(self, client: _Client) -> None:
        assert client.out is not None
        try:
            sent = client.sock.send(client.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            logger.debug("ops client %s went away: %s", client.peer, error)
            self._close(client)
            return
        client.out = client.out[sent:]
        if not client.out:
            client.out = None
            self._close(client)

    def _close(self, client: _Client) -> None:
        fd = client.sock.fileno()
        if fd < 0 or self._clients.get(fd) is not client:
            return
        del self._clients[fd]
        self._poller.forget(fd)
        client.sock.close()

    def _sweep(self, now_s: float) -> None:
        self._acceptor.resume_if_due(now_s)
        for client in list(self._clients.values()):
            age_s = now_s - client.accepted_s
            if age_s > ANSWER_TIMEOUT_S or (not client.answering and age_s > REQUEST_TIMEOUT_S):
                logger.debug("ops client %s: no request or answer in time; closed", client.peer)
                self._close(client)
