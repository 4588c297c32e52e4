"""Attacks through calls: more calls than the server admits, calls whose clients leave, large
calls beside small ones, and images whose headers lie. Each runs on a live server and returns
what the callers got and how soon a good client was served again.

The connection-level attacks and the helpers they share are ``benchmarks.attacks``;
``benchmarks.hostile_clients`` runs both.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from thrift.Thrift import TApplicationException
from thrift.transport import TTransport

from benchmarks.attacks import WAIT_S, encoded_call, good_call_s, open_connections, served_again_s
from service.gen.inference.ttypes import ErrorCode, InferenceError, InferenceParams
from service.thrift_client import connect


@dataclass
class Overload:
    """Far more concurrent calls than the server admits: what the callers got, how fast the
    refusals came, and how soon after the flood a good client was served again."""

    clients: int
    calls: int
    codes: dict[str, int]
    slowest_refusal_s: float
    slowest_success_s: float
    recovery_s: float  # a good client's call right after the flood
    client_timeouts: int = 0
    #: Seconds each outcome took: {code: {"p50": .., "max": ..}} (a fast OVERLOADED, or a
    #: TIMEOUT after the deadline).
    seconds_by_code: dict[str, dict[str, float]] = field(default_factory=dict)


def overload(
    host: str, port: int, photo: bytes, clients: int, calls_each: int, timeout_s: float = 10.0
) -> Overload:
    """``clients`` connections, each making ``calls_each`` calls back to back."""
    codes: Counter[str] = Counter()
    lock = threading.Lock()
    slowest = {"refused": 0.0, "ok": 0.0}
    took_by_code: dict[str, list[float]] = {}

    def client() -> None:
        try:
            connection = connect(host, port, timeout_s=timeout_s)
        except (TTransport.TTransportException, OSError):
            with lock:
                codes["NOT_CONNECTED"] += calls_each
            return
        with connection:
            for _ in range(calls_each):
                started_s = time.monotonic()
                try:
                    connection.client.infer_batch(InferenceParams(uuid="flood", data=photo))
                    kind, code = "ok", "OK"
                except InferenceError as error:
                    kind, code = "refused", ErrorCode._VALUES_TO_NAMES[error.code]
                except (TTransport.TTransportException, OSError) as error:
                    timed_out = isinstance(error, TimeoutError) or (
                        getattr(error, "type", None) == TTransport.TTransportException.TIMED_OUT
                    )
                    kind, code = "refused", "CLIENT_TIMEOUT" if timed_out else "CONNECTION"
                took_s = time.monotonic() - started_s
                with lock:
                    codes[code] += 1
                    slowest[kind] = max(slowest[kind], took_s)
                    took_by_code.setdefault(code, []).append(took_s)
                if kind == "refused" and code in ("CLIENT_TIMEOUT", "CONNECTION"):
                    return  # the connection's state is unknown: this client gives up

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S * 4)
    return Overload(
        clients,
        clients * calls_each,
        dict(codes),
        slowest["refused"],
        slowest["ok"],
        recovery_s=served_again_s(host, port, photo),
        client_timeouts=codes.get("CLIENT_TIMEOUT", 0),
        seconds_by_code={code: p50_max(took) for code, took in took_by_code.items()},
    )


def p50_max(seconds: list[float]) -> dict[str, float]:
    """The median and the longest of ``seconds`` (not empty)."""
    ordered = sorted(seconds)
    return {"p50": ordered[len(ordered) // 2], "max": ordered[-1]}


@dataclass
class Abandoned:
    """Calls whose clients left before the answers: were they dropped, and how soon was the
    next good client served?"""

    calls: int
    good_call_after_s: float  # a good client retrying OVERLOADED until it is served


def abandoned_calls(host: str, port: int, photo: bytes, calls: int) -> Abandoned:
    """``calls`` connections each send a whole request, then reset the connection."""
    message = encoded_call(photo)
    for sock in open_connections(host, port, calls):
        sock.sendall(message)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    return Abandoned(calls, served_again_s(host, port, photo))


@dataclass
class BigCall:
    """One call with many images, and single calls from other clients at the same time."""

    images: int
    big_call_s: float
    big_call_failures: dict[str, int]
    single_calls_s: list[float] = field(default_factory=list)


def big_call(host: str, port: int, photo: bytes, images: int, singles: int) -> BigCall:
    """An ``infer_many`` of ``images`` copies of ``photo``, with ``singles`` calls started
    just after it from other connections."""
    outcome: dict[str, object] = {}

    def big() -> None:
        started_s = time.monotonic()
        with connect(host, port, timeout_s=WAIT_S * 4) as connection:
            params = [InferenceParams(uuid=str(i), data=photo) for i in range(images)]
            results = connection.client.infer_many(params, 1)
        outcome["s"] = time.monotonic() - started_s
        outcome["failures"] = Counter(
            ErrorCode._VALUES_TO_NAMES[r.error.code] for r in results if r.error is not None
        )

    runner = threading.Thread(target=big, daemon=True)
    runner.start()
    time.sleep(0.2)  # let the big call arrive first
    # A good client retries OVERLOADED (admission may refuse while the server is slow): the
    # seconds until it is served.
    single_s = [served_again_s(host, port, photo) for _ in range(singles)]
    runner.join(WAIT_S * 4)
    return BigCall(images, outcome["s"], dict(outcome["failures"]), single_s)


@dataclass
class HeaderBombFlood:
    """Many connections sending a tiny image whose header declares an absurd size, as fast as
    they are answered: the answers' codes, a good client's latency meanwhile, and what the
    server wrote to its log (the flood must not become disk writes)."""

    connections: int
    duration_s: float
    calls: int
    codes: dict[str, int]
    good_call_s: float
    #: Bytes and lines the server's log grew by during the flood (None: no log to read).
    log_bytes: int | None
    log_lines: int | None


def ppm_declaring(width: int, height: int, size_bytes: int = 119) -> bytes:
    """A binary PPM header declaring ``width`` x ``height``, zero-padded to ``size_bytes``
    (the 119 bytes of issue 30's attack)."""
    header = f"P6\n{width} {height}\n255\n".encode()
    return header + bytes(max(0, size_bytes - len(header)))


def header_bomb_flood(
    host: str,
    port: int,
    photo: bytes,
    *,
    connections: int,
    duration_s: float,
    log_path: str | None = None,
    bomb: bytes | None = None,
) -> HeaderBombFlood:
    """``connections`` clients call ``infer_batch`` with ``bomb`` (default: a PPM declaring
    60000x60000) back to back for ``duration_s``; a good client calls once in the middle."""
    bomb = ppm_declaring(60000, 60000) if bomb is None else bomb
    codes: Counter[str] = Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        try:
            connection = connect(host, port, timeout_s=WAIT_S)
        except (TTransport.TTransportException, OSError):
            with lock:
                codes["NOT_CONNECTED"] += 1
            return
        with connection:
            while not stop.is_set():
                try:
                    connection.client.infer_batch(InferenceParams(uuid="bomb", data=bomb))
                    code = "OK"
                except InferenceError as error:
                    code = ErrorCode._VALUES_TO_NAMES.get(error.code, str(error.code))
                except TApplicationException:
                    code = "APPLICATION_ERROR"
                except (TTransport.TTransportException, OSError):
                    code = "CONNECTION"
                with lock:
                    codes[code] += 1
                if code == "CONNECTION":
                    return

    log_start = None if log_path is None else os.path.getsize(log_path)
    threads = [threading.Thread(target=client, daemon=True) for _ in range(connections)]
    for thread in threads:
        thread.start()
    stop.wait(duration_s / 2)
    good_s = good_call_s(host, port, photo)
    stop.wait(max(0.0, duration_s / 2 - good_s))
    stop.set()
    for thread in threads:
        thread.join(WAIT_S)
    grown = None if log_path is None else _log_growth(log_path, log_start)
    return HeaderBombFlood(
        connections,
        duration_s,
        sum(codes.values()),
        dict(codes),
        good_s,
        log_bytes=None if grown is None else grown[0],
        log_lines=None if grown is None else grown[1],
    )


def _log_growth(log_path: str, start: int) -> tuple[int, int]:
    """(bytes, lines) written to the log at ``log_path`` after its first ``start`` bytes."""
    with open(log_path, "rb") as log:
        log.seek(start)
        written = log.read()
    return len(written), written.count(b"\n")


@dataclass
class BigCallsBeside:
    """Several large calls at once, and one client calling one image at a time beside them:
    is it served, or refused because the large calls hold the whole admission budget?"""

    big_calls: int
    images_each: int
    big_calls_s: list[float]
    big_call_codes: dict[str, int]  # per image: OK, or the error
    single_codes: dict[str, int]  # the single-image calls made while the large ones ran
    single_seconds: dict[str, dict[str, float]]  # {code: {"p50", "max"}}


def big_calls_beside_singles(
    host: str, port: int, photo: bytes, images: int, big_calls: int = 2
) -> BigCallsBeside:
    """``big_calls`` concurrent ``infer_many`` calls of ``images`` copies of ``photo``; a
    single-image client calls back to back (pausing 10 ms after a refusal) until they end."""
    big_codes: Counter[str] = Counter()
    big_s: list[float] = []
    lock = threading.Lock()
    started = threading.Barrier(big_calls + 1)

    def big() -> None:
        with connect(host, port, timeout_s=WAIT_S * 4) as connection:
            params = [InferenceParams(uuid=str(i), data=photo) for i in range(images)]
            started.wait(WAIT_S)
            began_s = time.monotonic()
            try:
                results = connection.client.infer_many(params, 1)
                codes = [
                    "OK" if r.error is None else ErrorCode._VALUES_TO_NAMES[r.error.code]
                    for r in results
                ]
            except InferenceError as error:  # the whole call refused
                codes = [ErrorCode._VALUES_TO_NAMES[error.code]] * images
        with lock:
            big_s.append(time.monotonic() - began_s)
            big_codes.update(codes)

    runners = [threading.Thread(target=big, daemon=True) for _ in range(big_calls)]
    for runner in runners:
        runner.start()
    single_codes: Counter[str] = Counter()
    took_by_code: dict[str, list[float]] = {}
    with connect(host, port, timeout_s=WAIT_S) as connection:
        started.wait(WAIT_S)
        time.sleep(0.1)  # let the large calls arrive first
        while any(runner.is_alive() for runner in runners):
            began_s = time.monotonic()
            try:
                connection.client.infer_batch(InferenceParams(uuid="single", data=photo))
                code = "OK"
            except InferenceError as error:
                code = ErrorCode._VALUES_TO_NAMES[error.code]
            single_codes[code] += 1
            took_by_code.setdefault(code, []).append(time.monotonic() - began_s)
            if code != "OK":
                time.sleep(0.01)
    for runner in runners:
        runner.join(WAIT_S * 4)
    return BigCallsBeside(
        big_calls,
        images,
        big_s,
        dict(big_codes),
        dict(single_codes),
        {code: p50_max(took) for code, took in took_by_code.items()},
    )
