"""Per-request overhead of the scheduler: Identity pipelines under 1, 4 and 16 caller threads.

Run: ``python -m benchmarks.scheduler_overhead [--requests 40000] [--json FILE]``. Prints
requests/s and the p50/p99 latency a request spends in the pipeline when the backends do
nothing, i.e. what the scheduler itself adds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import threading
import time
from datetime import date

from tqdm import tqdm

import torchpipe_lite as tp

PIPELINES = {
    "1-node": {"a": {"backend": "Identity", "max": 8}},
    "3-node": {
        "a": {"backend": "Identity", "max": 8, "next": "b"},
        "b": {"backend": "Identity", "max": 8, "next": "c"},
        "c": {"backend": "Identity", "max": 8},
    },
}


def measure(config: dict, callers: int, total_requests: int, progress: tqdm) -> dict:
    """Drive ``config`` with ``callers`` threads; return throughput and latency percentiles."""
    per_caller = max(1, total_requests // callers)
    latencies_s: list[list[float]] = [[] for _ in range(callers)]
    start_barrier = threading.Barrier(callers + 1)

    with tp.pipe(config) as model:
        for _ in range(200):  # warm-up: threads exist, code paths are hot
            model({"data": 0})

        def caller(index: int) -> None:
            own = latencies_s[index]
            clock = time.perf_counter
            start_barrier.wait()
            for sequence in range(per_caller):
                request = {"data": sequence}
                began = clock()
                model(request)
                own.append(clock() - began)
            progress.update(per_caller)

        threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
        for thread in threads:
            thread.start()
        start_barrier.wait()
        began = time.perf_counter()
        for thread in threads:
            thread.join()
        elapsed_s = time.perf_counter() - began
        stats = model.stats()

    flat = sorted(value for own in latencies_s for value in own)
    quantiles = statistics.quantiles(flat, n=100)
    first = next(iter(stats.values()))
    return {
        "callers": callers,
        "requests": len(flat),
        "requests_per_s": round(len(flat) / elapsed_s),
        "p50_ms": round(quantiles[49] * 1000, 4),
        "p99_ms": round(quantiles[98] * 1000, 4),
        "mean_batch_first_node": round(first.mean_batch_size, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40_000, help="requests per measurement")
    parser.add_argument("--callers", default="1,4,16", help="caller thread counts")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    caller_counts = [int(part) for part in args.callers.split(",")]

    rows = []
    total = args.requests * len(caller_counts) * len(PIPELINES)
    with tqdm(total=total, desc="scheduler overhead", unit="req") as progress:
        for name, config in PIPELINES.items():
            for callers in caller_counts:
                rows.append({"pipeline": name, **measure(config, callers, args.requests, progress)})

    print(f"\nscheduler overhead, Identity backends, max batch 8, {os.cpu_count()} CPU cores")
    print(f"{'pipeline':<9}{'callers':>8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'batch':>7}")
    for row in rows:
        print(
            f"{row['pipeline']:<9}{row['callers']:>8}{row['requests_per_s']:>10,}"
            f"{row['p50_ms']:>9.3f}{row['p99_ms']:>9.3f}{row['mean_batch_first_node']:>7.2f}"
        )
    if args.json:
        document = {
            "date": date.today().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "python": platform.python_version(),
            "command": "python -m benchmarks.scheduler_overhead",
            "results": rows,
        }
        with open(args.json, "w") as file:
            json.dump(document, file, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
