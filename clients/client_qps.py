"""The load tester: many concurrent clients call the service and the latency figures are printed.

    python -m clients.client_qps --port 8888 --request_client 20 --total_number 10000

Every client (a thread) has its own connection; ``--processes N`` spreads the clients over N
processes so that the Python client is never the bottleneck. ``run_load`` is the same as an API.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import queue
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
from tqdm import tqdm

from clients.calls import METHODS
from clients.images import DEFAULT_IMG_DIR, load_images
from clients.load_worker import WorkerReport, WorkerSpec, run_worker

logger = logging.getLogger(__name__)

#: Seconds the parent waits for any message before it checks that its workers are alive.
POLL_S = 1.0


class LoadTestError(RuntimeError):
    """The load test could not run (server unreachable, a worker died, a client crashed)."""


@dataclass
class LoadResult:
    """The timed phase of one load test. Latencies are over the calls that fully succeeded."""

    method: str
    host: str
    port: int
    request_client: int
    request_batch: int
    processes: int
    warmup: int
    requests: int  # calls made in the timed phase
    images: int  # images sent in the timed phase
    ok_requests: int  # calls in which every image succeeded
    wall_s: float
    qps: float  # calls per second
    images_per_s: float
    tp50_ms: float | None
    tp90_ms: float | None
    tp99_ms: float | None
    mean_ms: float | None
    max_ms: float | None
    errors: int  # images that failed, all codes together
    errors_by_code: dict[str, int] = field(default_factory=dict)
    warmup_errors_by_code: dict[str, int] = field(default_factory=dict)
    client_cpu_s: float = 0.0  # CPU time of every client process during the timed phase
    client_cpu_percent: float = 0.0  # of one core, so 4 busy cores read 400

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)


def percentile_ms(sorted_s: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile of sorted latencies in seconds, in ms (None when empty)."""
    if not sorted_s:
        return None
    rank = max(1, -(-len(sorted_s) * fraction // 1))  # ceil(n * fraction), at least 1
    return sorted_s[int(rank) - 1] * 1000.0


def _split(total: int, parts: int) -> list[int]:
    """``total`` spread as evenly as possible over ``parts`` (the first ones get the extra)."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _worker_specs(
    host: str,
    port: int,
    method: str,
    request_batch: int,
    timeout_s: float,
    request_client: int,
    processes: int,
    warmup: int,
    total_number: int,
) -> list[WorkerSpec]:
    warmup_calls = _split(warmup, request_client)
    timed_calls = _split(total_number, request_client)
    specs, first = [], 0
    for worker_id, count in enumerate(_split(request_client, processes)):
        ids = range(first, first + count)
        specs.append(
            WorkerSpec(
                worker_id=worker_id,
                host=host,
                port=port,
                method=method,
                request_batch=request_batch,
                timeout_s=timeout_s,
                client_ids=tuple(ids),
                warmup_calls=tuple(warmup_calls[i] for i in ids),
                timed_calls=tuple(timed_calls[i] for i in ids),
            )
        )
        first += count
    return specs


def _summarise(
    reports: list[WorkerReport], wall_s: float, parent_cpu_s: float, **settings: Any
) -> LoadResult:
    latencies_s = sorted(s for report in reports for s in report.latencies_s)
    errors: Counter[str] = Counter()
    warmup_errors: Counter[str] = Counter()
    for report in reports:
        errors.update(report.errors)
        warmup_errors.update(report.warmup_errors)
    requests = sum(report.calls for report in reports)
    images = sum(report.images for report in reports)
    cpu_s = parent_cpu_s + sum(report.cpu_s for report in reports)
    mean_ms = sum(latencies_s) / len(latencies_s) * 1000.0 if latencies_s else None
    return LoadResult(
        **settings,
        requests=requests,
        images=images,
        ok_requests=len(latencies_s),
        wall_s=wall_s,
        qps=requests / wall_s if wall_s > 0 else 0.0,
        images_per_s=images / wall_s if wall_s > 0 else 0.0,
        tp50_ms=percentile_ms(latencies_s, 0.50),
        tp90_ms=percentile_ms(latencies_s, 0.90),
        tp99_ms=percentile_ms(latencies_s, 0.99),
        mean_ms=mean_ms,
        max_ms=latencies_s[-1] * 1000.0 if latencies_s else None,
        errors=sum(errors.values()),
        errors_by_code=dict(errors),
        warmup_errors_by_code=dict(warmup_errors),
        client_cpu_s=cpu_s,
        client_cpu_percent=100.0 * cpu_s / wall_s if wall_s > 0 else 0.0,
    )


def _start_workers(specs: list[WorkerSpec], images: list[bytes]) -> tuple[Any, Any, Any, list[Any]]:
    """Starts the workers: in this process (one) or in child processes (several)."""
    if len(specs) == 1:
        messages: Any = queue.Queue()
        go: Any = threading.Event()
        abort: Any = threading.Event()
        runner: Any = threading.Thread(
            target=run_worker, args=(specs[0], images, messages, go, abort), daemon=True
        )
        runner.start()
        return messages, go, abort, [runner]
    # spawn, not fork: the caller may have threads (tqdm's monitor, the main job's samplers)
    # whose locks a forked child would inherit held. The images are pickled to each child.
    context = multiprocessing.get_context("spawn")
    messages, go, abort = context.Queue(), context.Event(), context.Event()
    runners = [
        context.Process(target=run_worker, args=(spec, images, messages, go, abort), daemon=True)
        for spec in specs
    ]
    for runner in runners:
        runner.start()
    return messages, go, abort, runners


def run_load(
    *,
    host: str = "127.0.0.1",
    port: int = 8888,
    images: list[bytes] | None = None,
    img_dir: str | Path = DEFAULT_IMG_DIR,
    request_client: int = 10,
    request_batch: int = 1,
    total_number: int = 10000,
    warmup: int = 200,
    processes: int = 1,
    method: str = "infer_batch",
    timeout_s: float = 10.0,
    progress: bool = True,
    on_timed_start: Callable[[], None] | None = None,
    on_timed_end: Callable[[], None] | None = None,
) -> LoadResult:
    """Runs ``warmup`` untimed calls, then ``total_number`` timed calls from ``request_client``
    concurrent clients spread over ``processes`` processes, and returns the figures.

    ``on_timed_start``/``on_timed_end`` run right before and after the timed phase (the main job
    samples the server's CPU there). Raises ``LoadTestError`` when the load cannot run.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    if request_client < 1 or request_batch < 1 or total_number < 1 or warmup < 0:
        raise ValueError("request_client, request_batch, total_number must be >= 1, warmup >= 0")
    if total_number < request_client:
        # Idle clients would make the run's concurrency a lie.
        raise ValueError(f"total_number {total_number} < request_client {request_client}")
    if images is None:
        images = load_images(img_dir)
    processes = max(1, min(processes, request_client))
    specs = _worker_specs(
        host,
        port,
        method,
        request_batch,
        timeout_s,
        request_client,
        processes,
        warmup,
        total_number,
    )
    messages, go, abort, runners = _start_workers(specs, images)
    # The timed bar is made when timing starts, so the two never share the terminal.
    bars = {"warmup": tqdm(total=warmup, desc="warm-up", unit="call", disable=not progress)}
    reports: dict[int, WorkerReport] = {}
    warm: set[int] = set()
    start_s = end_s = cpu_start_s = 0.0
    try:
        while len(reports) < len(specs):
            try:
                message = messages.get(timeout=POLL_S)
            except queue.Empty:
                # Nothing came for POLL_S: a worker that is gone without a report has died.
                for worker_id, runner in enumerate(runners):
                    if not runner.is_alive() and worker_id not in reports:
                        code = getattr(runner, "exitcode", None)
                        raise LoadTestError(
                            f"load-test worker {worker_id} died without a report (exit {code})"
                        ) from None
                continue
            kind = message[0]
            if kind == "progress":
                bars[message[1]].update(message[2])
            elif kind == "failed":
                raise LoadTestError(message[2])
            elif kind == "warm":
                warm.add(message[1])
                if len(warm) == len(specs):
                    bars["warmup"].close()
                    bars["timed"] = tqdm(
                        total=total_number, desc=method, unit="call", disable=not progress
                    )
                    if on_timed_start is not None:
                        on_timed_start()
                    cpu_start_s = time.process_time()
                    start_s = time.perf_counter()
                    go.set()
            elif kind == "done":
                reports[message[1]] = message[2]
        end_s = time.perf_counter()
        parent_cpu_s = time.process_time() - cpu_start_s if len(specs) > 1 else 0.0
    finally:
        if len(reports) < len(specs):
            abort.set()
        go.set()
        for bar in bars.values():
            bar.close()
        for runner in runners:
            runner.join(timeout=timeout_s + POLL_S)
            if runner.is_alive() and hasattr(runner, "terminate"):
                runner.terminate()
    if on_timed_end is not None:
        on_timed_end()
    crashes = [crash for report in reports.values() for crash in report.crashes]
    if crashes:
        raise LoadTestError("load-test clients crashed: " + "; ".join(crashes))
    # In-process, the worker measured this whole process's CPU time; otherwise add the parent's.
    return _summarise(
        list(reports.values()),
        end_s - start_s,
        parent_cpu_s,
        method=method,
        host=host,
        port=port,
        request_client=request_client,
        request_batch=request_batch,
        processes=processes,
        warmup=warmup,
    )


def format_summary(result: LoadResult) -> str:
    """The human summary ``client_qps`` prints."""

    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    where = "process" if result.processes == 1 else "processes"
    payload = "no payload" if result.method == "ping" else f"{result.request_batch} image(s) each"
    rate = f"QPS: {result.qps:.2f}"
    if result.method != "ping":
        rate += f"   images/s: {result.images_per_s:.2f}"
    lines = [
        f"{result.requests} {result.method} calls ({payload}) from "
        f"{result.request_client} clients in {result.processes} {where}, {result.wall_s:.2f} s",
        rate,
        f"latency ms (successful calls): TP50 {ms(result.tp50_ms)}  TP90 {ms(result.tp90_ms)}  "
        f"TP99 {ms(result.tp99_ms)}  mean {ms(result.mean_ms)}  max {ms(result.max_ms)}",
        f"errors: {result.errors}"
        + "".join(f"  {code}={n}" for code, n in sorted(result.errors_by_code.items())),
        f"client CPU: {result.client_cpu_percent:.0f}% of one core "
        f"({result.client_cpu_s:.2f} s over {result.processes} {where}; "
        f"{psutil.cpu_count()} logical cores here)",
    ]
    if result.warmup_errors_by_code:
        lines.append(f"warm-up errors: {result.warmup_errors_by_code}")
    return "\n".join(lines)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8888)
    parser.add_argument(
        "--img_dir",
        default=str(DEFAULT_IMG_DIR),
        help="folder of JPEGs; up to 1000 are preloaded, longest side shrunk to 640, q95 "
        "(default: the repository's tests/data/images)",
    )
    parser.add_argument("--request_client", type=int, default=10, help="concurrent clients")
    parser.add_argument(
        "--request_batch",
        type=int,
        default=1,
        help="images per call: 1 calls infer_batch, more calls infer_many",
    )
    parser.add_argument("--total_number", type=int, default=10000, help="timed calls")
    parser.add_argument("--warmup", type=int, default=200, help="untimed calls sent first")
    parser.add_argument(
        "--processes", type=int, default=1, help="client processes the clients are spread over"
    )
    parser.add_argument("--method", choices=METHODS, default="infer_batch")
    parser.add_argument("--timeout-s", type=float, default=10.0, help="per-call timeout")
    parser.add_argument("--json", metavar="FILE", help="also write the figures here as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; exits 1 when the load could not run or any call failed."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = _parse_args(argv)
    try:
        result = run_load(
            host=args.host,
            port=args.port,
            img_dir=args.img_dir,
            request_client=args.request_client,
            request_batch=args.request_batch,
            total_number=args.total_number,
            warmup=args.warmup,
            processes=args.processes,
            method=args.method,
            timeout_s=args.timeout_s,
        )
    except (LoadTestError, OSError, ValueError) as exc:
        logger.error("load test failed: %s", exc)
        return 1
    print(format_summary(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        logger.info("wrote %s", args.json)
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
