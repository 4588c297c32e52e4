"""Attacks on what a server shares among all its clients: memory held in unfinished messages,
file descriptors, and the operations port.

Each runs against a live server and reports what a probe saw meanwhile (a good client's call,
``/health/live``) and what the server spent (resident memory, threads), sampled from its pid.
Every attack is bounded: a fixed number of connections, closed when it ends.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import selectors
import socket
import statistics
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import psutil
from thrift.transport.TTransport import TTransportException

from benchmarks.attacks import WAIT_S, close_all, encoded_call, good_call_s
from service.thrift_client import connect

logger = logging.getLogger("benchmarks.resource_attacks")

#: How long a liveness probe may take before it counts as failed (a Kubernetes probe's
#: default ``timeoutSeconds`` is 1).
PROBE_TIMEOUT_S = 1.0
#: Between two samples of the server's memory and threads.
_SAMPLE_EVERY_S = 0.02


class PeakSampler:
    """The largest resident memory and thread count of process ``pid`` while it runs (a
    context manager)."""

    def __init__(self, pid: int):
        self._process = psutil.Process(pid)
        self.rss_before_bytes = self._process.memory_info().rss
        self.threads_before = self._process.num_threads()
        self.rss_peak_bytes = self.rss_before_bytes
        self.threads_peak = self.threads_before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="peak-sampler", daemon=True)

    def _sample(self) -> None:
        while True:
            try:
                self.rss_peak_bytes = max(self.rss_peak_bytes, self._process.memory_info().rss)
                self.threads_peak = max(self.threads_peak, self._process.num_threads())
            except psutil.NoSuchProcess:
                return
            if self._stop.wait(_SAMPLE_EVERY_S):
                return

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(WAIT_S)


def live_probe_s(host: str, ops_port: int, timeout_s: float = PROBE_TIMEOUT_S) -> float | None:
    """Seconds ``/health/live`` took to answer 200, or None when it did not within
    ``timeout_s`` (or failed)."""
    started_s = time.monotonic()
    url = f"http://{host}:{ops_port}/health/live"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            response.read()
            ok = response.status == 200
    except (urllib.error.URLError, OSError):
        return None
    took_s = time.monotonic() - started_s
    return took_s if ok and took_s <= timeout_s else None


def closed_by_server(sockets: list[socket.socket], window_s: float) -> int:
    """How many of ``sockets`` the server closes (or resets) within ``window_s``, waiting on
    all of them at once."""
    closed = 0
    with selectors.DefaultSelector() as selector:
        for sock in sockets:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        deadline_s = time.monotonic() + window_s
        while selector.get_map() and (left_s := deadline_s - time.monotonic()) > 0:
            for key, _ in selector.select(left_s):
                try:
                    data = key.fileobj.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    closed += 1
                    selector.unregister(key.fileobj)
    return closed


@dataclass
class Probes:
    """What repeated ``/health/live`` probes saw."""

    probes: int
    failed: int  # no 200 within the probe's timeout (PROBE_TIMEOUT_S unless told)
    median_s: float | None
    slowest_s: float | None


def probe_repeatedly(
    host: str,
    ops_port: int,
    until: threading.Event,
    every_s: float,
    timeout_s: float = PROBE_TIMEOUT_S,
) -> Probes:
    """Probe ``/health/live`` every ``every_s`` until ``until`` is set."""
    took: list[float | None] = []
    while True:
        took.append(live_probe_s(host, ops_port, timeout_s))
        if until.wait(every_s):
            break
    answered = [t for t in took if t is not None]
    return Probes(
        len(took),
        len(took) - len(answered),
        statistics.median(answered) if answered else None,
        max(answered) if answered else None,
    )


@dataclass
class StalledSenders:
    """Connections that each send most of a large request and stall: what the server held."""

    connections: int
    sent_bytes_each: int
    #: Connections the server closed (while they sent, or in the moment after).
    cut: int
    rss_before_bytes: int
    rss_peak_bytes: int
    good_call_s: float | None  # a good client's call while the rest stall (None: it failed)


def stalled_big_senders(
    host: str, port: int, photo: bytes, server_pid: int, connections: int, sent_bytes: int
) -> StalledSenders:
    """``connections`` connections, one after the other, each send the first ``sent_bytes``
    of an ``infer_batch`` call that declares more, then stall while a good client calls."""
    whole = encoded_call(bytes(sent_bytes + (8 << 20)))  # declares 8 MiB more than it sends
    prefix = memoryview(whole)[:sent_bytes]
    sockets: list[socket.socket] = []
    cut = 0
    try:
        with PeakSampler(server_pid) as peak:
            for _ in range(connections):
                sock = socket.create_connection((host, port), timeout=WAIT_S)
                sockets.append(sock)
                try:
                    sock.sendall(prefix)
                except OSError:  # reset: the server closed it while it sent
                    cut += 1
                    sock.close()
                    sockets.pop()
            try:
                good_s: float | None = good_call_s(host, port, photo)
            except (TTransportException, OSError):
                good_s = None
            cut += closed_by_server(sockets, window_s=0.5)
    finally:
        close_all(sockets)
    return StalledSenders(
        connections, sent_bytes, cut, peak.rss_before_bytes, peak.rss_peak_bytes, good_s
    )


@dataclass
class BeyondFdLimit:
    """More connections than the server's file limit allows: were the extra ones refused at
    once, or left waiting, and did the liveness probe and a good client still get answers?"""

    connections: int
    not_connected: int  # connect() itself failed or timed out (the backlog was full)
    refused_at_once: int  # closed by the server within the window
    #: A new client's ping while they are held: "answered", "refused" (closed at once: every
    #: slot is taken) or "no answer" (left waiting), and how long that took.
    ping: str
    ping_s: float
    probes: Probes
    threads_peak: int


def beyond_fd_limit(
    host: str, port: int, ops_port: int, server_pid: int, connections: int
) -> BeyondFdLimit:
    """``connections`` idle connections at once, then probes while they are held."""
    sockets: list[socket.socket] = []
    not_connected = 0
    try:
        with PeakSampler(server_pid) as peak:
            for _ in range(connections):
                try:
                    sockets.append(socket.create_connection((host, port), timeout=1.0))
                except OSError:
                    not_connected += 1
            refused = closed_by_server(sockets, window_s=2.0)
            done = threading.Event()
            probes: list[Probes] = []
            prober = threading.Thread(
                target=lambda: probes.append(probe_repeatedly(host, ops_port, done, 0.1))
            )
            prober.start()
            ping, ping_s = _ping(host, port, timeout_s=2.0)
            time.sleep(1.0)  # the probes' window, not a synchronisation
            done.set()
            prober.join(WAIT_S)
    finally:
        close_all(sockets)
    return BeyondFdLimit(
        connections, not_connected, refused, ping, ping_s, probes[0], peak.threads_peak
    )


def _ping(host: str, port: int, timeout_s: float) -> tuple[str, float]:
    started_s = time.monotonic()
    try:
        with connect(host, port, timeout_s=timeout_s) as connection:
            connection.client.ping()
        outcome = "answered"
    except (TTransportException, OSError) as error:
        timed_out = isinstance(error, TimeoutError) or (
            getattr(error, "type", None) == TTransportException.TIMED_OUT
        )
        outcome = "no answer" if timed_out else "refused"
    return outcome, time.monotonic() - started_s


@dataclass
class OpsFlood:
    """The operations port flooded with connections that send nothing or half a request."""

    connections: int
    opened: int  # those whose connect() succeeded
    duration_s: float
    hold_s: float
    probes: Probes
    threads_before: int
    threads_peak: int


def ops_flood(
    host: str,
    ops_port: int,
    server_pid: int,
    *,
    connections: int,
    duration_s: float,
    hold_s: float,
    probe_timeout_s: float = PROBE_TIMEOUT_S,
) -> OpsFlood:
    """Open ``connections`` to the ops port evenly over ``duration_s`` (every other one sends
    half a request line, the rest nothing), each held ``hold_s``, and probe ``/health/live``
    meanwhile."""
    held: collections.deque[tuple[float, socket.socket]] = collections.deque()
    half_request = b"GET /metrics HTT"
    every_s = duration_s / connections
    done = threading.Event()
    probes: list[Probes] = []
    prober = threading.Thread(
        target=lambda: probes.append(
            probe_repeatedly(host, ops_port, done, 0.1, timeout_s=probe_timeout_s)
        )
    )
    opened = 0
    try:
        with PeakSampler(server_pid) as peak:
            prober.start()
            started_s = time.monotonic()
            for i in range(connections):
                now_s = time.monotonic()
                while held and now_s - held[0][0] > hold_s:
                    held.popleft()[1].close()
                sock = _open_quietly(host, ops_port, half_request if i % 2 else b"")
                if sock is not None:
                    opened += 1
                    held.append((now_s, sock))
                pause_s = started_s + (i + 1) * every_s - time.monotonic()
                if pause_s > 0:
                    time.sleep(pause_s)  # the flood's pace
            done.set()
            prober.join(WAIT_S)
    finally:
        done.set()
        close_all([sock for _, sock in held])
    return OpsFlood(
        connections,
        opened,
        duration_s,
        hold_s,
        probes[0],
        peak.threads_before,
        peak.threads_peak,
    )


def _open_quietly(host: str, port: int, send: bytes) -> socket.socket | None:
    try:
        sock = socket.create_connection((host, port), timeout=1.0)
    except OSError:
        return None
    with contextlib.suppress(OSError):  # a flood does not care whether it was read
        sock.sendall(send)
    return sock
