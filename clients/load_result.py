"""The figures of one load test: the result record, its percentiles and its printed summary."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil

from clients.load_worker import WorkerReport


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
    interrupted: bool = False  # Ctrl-C ended the timed phase early: fewer calls than asked

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)


def percentile_ms(sorted_s: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile of sorted latencies in seconds, in ms (None when empty)."""
    if not sorted_s:
        return None
    rank = max(1, -(-len(sorted_s) * fraction // 1))  # ceil(n * fraction), at least 1
    return sorted_s[int(rank) - 1] * 1000.0


def summarise(
    reports: list[WorkerReport], wall_s: float, parent_cpu_s: float, **settings: Any
) -> LoadResult:
    """The figures of the timed phase from every worker's report."""
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
        *(
            ["INTERRUPTED (Ctrl-C): the figures cover the calls made until then"]
            if result.interrupted
            else []
        ),
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
