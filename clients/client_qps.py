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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clients.calls import METHODS
from clients.images import DEFAULT_IMG_DIR, load_images
from clients.load_result import LoadResult, format_summary, summarise
from clients.load_run import POLL_S, LoadInterrupted, LoadRun, LoadTestError
from clients.load_worker import (
    ClientFactory,
    WorkerSpec,
    run_worker,
    run_worker_process,
)

logger = logging.getLogger(__name__)


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


def _start_workers(
    specs: list[WorkerSpec], images: list[bytes], make_client: ClientFactory | None
) -> tuple[Any, Any, Any, list[Any]]:
    """Starts the workers: in this process (one) or in child processes (several)."""
    if len(specs) == 1:
        messages: Any = queue.Queue()
        go: Any = threading.Event()
        abort: Any = threading.Event()
        runner: Any = threading.Thread(
            target=run_worker,
            args=(specs[0], images, messages, go, abort, make_client),
            daemon=True,
        )
        runner.start()
        return messages, go, abort, [runner]
    # spawn, not fork: the caller may have threads (tqdm's monitor, the main job's samplers)
    # whose locks a forked child would inherit held. The images are pickled to each child.
    context = multiprocessing.get_context("spawn")
    messages, go, abort = context.Queue(), context.Event(), context.Event()
    runners = [
        context.Process(
            target=run_worker_process,
            args=(spec, images, messages, go, abort, make_client),
            daemon=True,
        )
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
    make_client: ClientFactory | None = None,
) -> LoadResult:
    """Runs ``warmup`` untimed calls, then ``total_number`` timed calls from ``request_client``
    concurrent clients spread over ``processes`` processes, and returns the figures.

    ``on_timed_start``/``on_timed_end`` run right before and after the timed phase (the main job
    samples the server's CPU there). ``make_client`` makes each client in its process (it must
    pickle: a module-level class or a ``functools.partial`` of one); without it the clients
    are Thrift clients calling ``method``, which is otherwise only the figures' label. Raises
    ``LoadTestError`` when the load cannot run.
    """
    _check_arguments(
        method,
        request_client,
        request_batch,
        total_number,
        warmup,
        any_method=make_client is not None,
    )
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
    messages, go, abort, runners = _start_workers(specs, images, make_client)
    run = LoadRun(len(specs), total_number, warmup, method, progress, on_timed_start, go)
    end_s, parent_cpu_s = _wait_for_workers(run, messages, runners, go, abort, timeout_s)
    if on_timed_end is not None:
        on_timed_end()
    crashes = [crash for report in run.reports.values() for crash in report.crashes]
    if crashes:
        raise LoadTestError("load-test clients crashed: " + "; ".join(crashes))
    if run.start_s is None:
        raise LoadInterrupted("interrupted during the warm-up: no call was timed")
    # In-process, the worker measured this whole process's CPU time; otherwise add the parent's.
    return summarise(
        list(run.reports.values()),
        end_s - run.start_s,
        parent_cpu_s,
        method=method,
        host=host,
        port=port,
        request_client=request_client,
        request_batch=request_batch,
        processes=processes,
        warmup=warmup,
        interrupted=run.interrupted,
    )


def _check_arguments(
    method: str,
    request_client: int,
    request_batch: int,
    total_number: int,
    warmup: int,
    *,
    any_method: bool = False,
) -> None:
    """Refuses a load that cannot run as asked; ``any_method``: ``method`` is only a label
    (the clients come from ``make_client``)."""
    if not any_method and method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    if request_client < 1 or request_batch < 1 or total_number < 1 or warmup < 0:
        raise ValueError("request_client, request_batch, total_number must be >= 1, warmup >= 0")
    if total_number < request_client:
        # Idle clients would make the run's concurrency a lie.
        raise ValueError(f"total_number {total_number} < request_client {request_client}")


def _wait_for_workers(
    run: LoadRun, messages: Any, runners: list[Any], go: Any, abort: Any, timeout_s: float
) -> tuple[float, float]:
    """Take the workers' messages until every one has reported (or, after Ctrl-C, the wait
    for them is over), then end them; the end of the timed phase and the parent's CPU time."""
    try:
        while not run.finished:
            try:
                run.take(messages, runners)
            except KeyboardInterrupt:
                if run.interrupted:
                    raise  # a second Ctrl-C: stop waiting for the clients
                logger.warning("interrupted: the clients finish their current call, then stop")
                run.interrupt(abort, give_up_s=timeout_s + POLL_S)
        end_s = time.perf_counter()
        parent_cpu_s = time.process_time() - run.cpu_start_s if run.workers > 1 else 0.0
    finally:
        if len(run.reports) < run.workers:
            abort.set()
        go.set()
        run.close_bars()
        for runner in runners:
            runner.join(timeout=timeout_s + POLL_S)
            if runner.is_alive() and hasattr(runner, "terminate"):
                runner.terminate()
    return end_s, parent_cpu_s


#: Timed calls when ``--total_number`` is not given, by where the server runs its model: a
#: CPU server answers a few dozen calls a second, so 10,000 would take a quarter of an hour.
DEFAULT_TOTAL_NUMBER_GPU = 10000
DEFAULT_TOTAL_NUMBER_CPU = 1000


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m clients.client_qps",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="the server's address")
    parser.add_argument("--port", type=int, default=8888, help="the server's Thrift port")
    parser.add_argument(
        "--img_dir",
        default=str(DEFAULT_IMG_DIR),
        help="folder of JPEGs; up to 1000 are preloaded, longest side shrunk to 640, q95",
    )
    parser.add_argument("--request_client", type=int, default=10, help="concurrent clients")
    parser.add_argument(
        "--request_batch",
        type=int,
        default=1,
        help="images per call: 1 calls infer_batch, more calls infer_many",
    )
    parser.add_argument(
        "--total_number",
        type=int,
        default=argparse.SUPPRESS,
        help=f"timed calls (default: {DEFAULT_TOTAL_NUMBER_GPU} against a server whose model "
        f"runs on a GPU, {DEFAULT_TOTAL_NUMBER_CPU} against one on the CPU; the server's "
        "stats() says which)",
    )
    parser.add_argument("--warmup", type=int, default=200, help="untimed calls sent first")
    parser.add_argument(
        "--processes", type=int, default=1, help="client processes the clients are spread over"
    )
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="infer_batch",
        help="the call to make (ping: no payload, the RPC layer alone)",
    )
    parser.add_argument("--timeout-s", type=float, default=10.0, help="per-call timeout")
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (they are off anyway when stderr is not a terminal, e.g. a log)",
    )
    parser.add_argument(
        "--json",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="also write the figures here as JSON (default: not written)",
    )
    args = parser.parse_args(argv)
    for optional in ("total_number", "json"):  # SUPPRESS keeps "(default: None)" off --help
        setattr(args, optional, getattr(args, optional, None))
    return args


def default_total_number(host: str, port: int, timeout_s: float) -> int:
    """Timed calls sized to the server: fewer when its ``stats()`` says it runs on the CPU."""
    from service.thrift_client import connect

    try:
        with connect(host, port, timeout_s=timeout_s) as connection:
            device = connection.client.stats().device
    except Exception as exc:  # run_load reports an unreachable server in its own words
        logger.debug("stats() failed (%s): sizing the run for a GPU server", exc)
        return DEFAULT_TOTAL_NUMBER_GPU
    on_cpu = device.strip().lower().startswith("cpu")
    total = DEFAULT_TOTAL_NUMBER_CPU if on_cpu else DEFAULT_TOTAL_NUMBER_GPU
    logger.info("the server runs on %s: %d timed calls (--total_number to change)", device, total)
    return total


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; exits 1 when the load could not run or any call failed, 130
    after Ctrl-C (with the figures of the calls made until then)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = _parse_args(argv)
    total_number = args.total_number or default_total_number(args.host, args.port, args.timeout_s)
    try:
        result = run_load(
            host=args.host,
            port=args.port,
            img_dir=args.img_dir,
            request_client=args.request_client,
            request_batch=args.request_batch,
            total_number=total_number,
            warmup=args.warmup,
            processes=args.processes,
            method=args.method,
            timeout_s=args.timeout_s,
            progress=not args.no_progress,
        )
    except LoadInterrupted as exc:
        logger.warning("%s", exc)
        return 130
    except KeyboardInterrupt:
        logger.warning("interrupted again: stopped without waiting for the clients")
        return 130
    except (LoadTestError, OSError, ValueError) as exc:
        logger.error("load test failed: %s", exc)
        return 1
    print(format_summary(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        logger.info("wrote %s", args.json)
    if result.interrupted:
        return 130
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
