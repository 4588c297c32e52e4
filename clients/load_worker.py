"""The load test's worker: a group of client threads, each with its own connection, in one process.

The parent (``client_qps.run_load``) starts one worker per process (or one thread when the load
runs in-process) and talks to it through a message queue and two events:

- the worker sends ``Progress`` as calls end, ``Warm`` once its clients have all finished
  their warm-up, then ``Done`` with its ``WorkerReport``, or ``Failed`` if it could not start;
- the parent sets ``go`` when every worker is warm (timing starts), and sets ``abort`` first
  when the run must stop instead (an error, or Ctrl-C): each client ends after its current
  call and the worker still sends ``Done`` with what was measured so far.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from thrift.protocol.TProtocol import TProtocolException
from thrift.Thrift import TApplicationException
from thrift.transport.TTransport import TTransportException

from clients.calls import call_for
from service.thrift_client import Connection, connect

logger = logging.getLogger(__name__)

#: The client could not get an answer in time (``--timeout-s``).
CLIENT_TIMEOUT = "CLIENT_TIMEOUT"
#: The connection failed or was closed by the server.
CONNECTION = "CONNECTION"
#: The server answered with a Thrift application error (an unexpected server-side exception).
APPLICATION = "APPLICATION"

#: Seconds between two progress messages of one client thread.
PROGRESS_INTERVAL_S = 0.1


@dataclass(frozen=True)
class WorkerSpec:
    """What one worker runs: its clients (global ids) and how many calls each makes."""

    worker_id: int
    host: str
    port: int
    method: str
    request_batch: int
    timeout_s: float
    client_ids: tuple[int, ...]
    warmup_calls: tuple[int, ...]
    timed_calls: tuple[int, ...]


@dataclass(frozen=True)
class Progress:
    """``calls`` more calls of ``phase`` ("warmup" or "timed") have ended."""

    phase: str
    calls: int


@dataclass(frozen=True)
class Warm:
    """Every client of worker ``worker_id`` has finished its warm-up."""

    worker_id: int


@dataclass(frozen=True)
class Failed:
    """Worker ``worker_id`` could not run (``reason`` says why); no report follows."""

    worker_id: int
    reason: str


@dataclass
class WorkerReport:
    """The timed phase as one worker saw it."""

    latencies_s: list[float] = field(default_factory=list)  # calls that fully succeeded
    calls: int = 0
    images: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # per image, by code
    warmup_errors: Counter[str] = field(default_factory=Counter)
    cpu_s: float = 0.0  # this process's CPU time during the timed phase
    crashes: list[str] = field(default_factory=list)  # unexpected exceptions (client bugs)


@dataclass(frozen=True)
class Done:
    """Worker ``worker_id`` has ended; ``report`` is what it measured."""

    worker_id: int
    report: WorkerReport


#: What a worker sends its parent.
WorkerMessage = Progress | Warm | Failed | Done


class LoadClient(Protocol):
    """One client's connection: ``one_call`` returns the error code of each image that failed
    (empty: success); ``close`` ends the connection."""

    spec: WorkerSpec
    client_id: int

    def one_call(self) -> list[str]:
        """Makes one call; the error code of each image that failed."""
        ...

    def close(self) -> None:
        """Ends the connection."""
        ...


#: Makes one client (and its connection) of a worker: ``(spec, client_id, images)``. It raises
#: ``OSError`` (or thrift's ``TTransportException``) when it cannot connect.
ClientFactory = Callable[[WorkerSpec, int, list[bytes]], LoadClient]


class _Client:
    """One client thread's connection and calls; reconnects after a transport failure."""

    def __init__(self, spec: WorkerSpec, client_id: int, images: list[bytes]):
        self.spec = spec
        self.client_id = client_id
        self.images = images
        self.call = call_for(spec.method, spec.request_batch)
        self.connection: Connection | None = connect(spec.host, spec.port, timeout_s=spec.timeout_s)
        self.sent = 0
        # Clients start at different images so that concurrent calls carry different payloads.
        self.next_image = client_id * 7

    def _images_for_call(self) -> list[bytes]:
        count = len(self.images)
        picked = [
            self.images[(self.next_image + i) % count] for i in range(self.spec.request_batch)
        ]
        self.next_image += self.spec.request_batch
        return picked

    def one_call(self) -> list[str]:
        """Makes one call; returns the error code of each image that failed (empty: success)."""
        images = self._images_for_call()
        uuid = f"c{self.client_id}-{self.sent}"
        self.sent += 1
        try:
            if self.connection is None:
                self.connection = connect(
                    self.spec.host, self.spec.port, timeout_s=self.spec.timeout_s
                )
            return self.call(self.connection.client, images, uuid)
        except TApplicationException:
            return [APPLICATION] * len(images)
        except (TTransportException, TProtocolException, OSError) as exc:
            # The connection's state is unknown after a failure: start a fresh one next call.
            self.close()
            timed_out = isinstance(exc, TimeoutError) or (
                isinstance(exc, TTransportException) and exc.type == TTransportException.TIMED_OUT
            )
            return [CLIENT_TIMEOUT if timed_out else CONNECTION] * len(images)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def _client_thread(
    client: LoadClient,
    warmup_calls: int,
    timed_calls: int,
    warm: threading.Barrier,
    sync: tuple[Any, Any, Any],
    report: WorkerReport,
    lock: threading.Lock,
) -> None:
    go, abort, messages = sync
    warmup_errors: Counter[str] = Counter()
    latencies_s: list[float] = []
    errors: Counter[str] = Counter()
    made = 0
    try:
        for _ in range(warmup_calls):
            if abort.is_set():
                break
            warmup_errors.update(client.one_call())
            messages.put(Progress("warmup", 1))
        warm.wait()
        go.wait()
        unreported = 0
        last_report_s = time.perf_counter()
        for _ in range(timed_calls):
            if abort.is_set():
                break
            start_s = time.perf_counter()
            failed = client.one_call()
            end_s = time.perf_counter()
            made += 1
            if failed:
                errors.update(failed)
            else:
                latencies_s.append(end_s - start_s)
            unreported += 1
            if end_s - last_report_s >= PROGRESS_INTERVAL_S:
                messages.put(Progress("timed", unreported))
                unreported, last_report_s = 0, end_s
        if unreported:
            messages.put(Progress("timed", unreported))
    except threading.BrokenBarrierError:
        pass  # another client crashed during the warm-up; it reports why
    except Exception as exc:
        logger.exception("load client %d crashed", client.client_id)
        warm.abort()
        with lock:
            report.crashes.append(f"client {client.client_id}: {exc!r}")
    finally:
        client.close()
    with lock:
        report.latencies_s.extend(latencies_s)
        report.calls += made
        report.images += 0 if client.spec.method == "ping" else made * client.spec.request_batch
        report.errors.update(errors)
        report.warmup_errors.update(warmup_errors)


def run_worker(
    spec: WorkerSpec,
    images: list[bytes],
    messages: Any,
    go: Any,
    abort: Any,
    make_client: ClientFactory | None = None,
) -> None:
    """Runs one worker to the end; see the module docstring for the protocol. ``make_client``
    makes each client (default: a Thrift client calling ``spec.method``)."""
    factory: ClientFactory = _Client if make_client is None else make_client
    try:
        clients = [factory(spec, client_id, images) for client_id in spec.client_ids]
    except (TTransportException, OSError) as exc:
        messages.put(Failed(spec.worker_id, f"cannot connect to {spec.host}:{spec.port}: {exc}"))
        return
    report = WorkerReport()
    lock = threading.Lock()
    warm = threading.Barrier(len(clients) + 1)
    threads = [
        threading.Thread(
            target=_client_thread,
            args=(client, warmup, timed, warm, (go, abort, messages), report, lock),
            name=f"load-client-{client.client_id}",
            daemon=True,
        )
        for client, warmup, timed in zip(clients, spec.warmup_calls, spec.timed_calls, strict=True)
    ]
    for thread in threads:
        thread.start()
    try:
        warm.wait()
    except threading.BrokenBarrierError:
        for thread in threads:
            thread.join()
        messages.put(Failed(spec.worker_id, "; ".join(report.crashes)))
        return
    messages.put(Warm(spec.worker_id))
    go.wait()
    cpu_start_s = time.process_time()
    for thread in threads:
        thread.join()
    report.cpu_s = time.process_time() - cpu_start_s
    messages.put(Done(spec.worker_id, report))


def run_worker_process(
    spec: WorkerSpec,
    images: list[bytes],
    messages: Any,
    go: Any,
    abort: Any,
    make_client: ClientFactory | None = None,
) -> None:
    """``run_worker`` as a child process's main: Ctrl-C reaches the whole process group, and
    the parent alone decides what it means (it sets ``abort`` and keeps the partial figures)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    run_worker(spec, images, messages, go, abort, make_client)
