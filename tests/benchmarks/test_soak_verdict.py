"""benchmarks.soak's verdict: memory growth, errors and the exit code each fail the soak."""

from __future__ import annotations

from benchmarks.soak import summary_lines, verdict

MIB = 1 << 20


def sample(rss_mib: float, gpu_mib: float, **extra) -> dict:
    return {
        "rss_bytes": int(rss_mib * MIB),
        "gpu_used_bytes": {"0": int(gpu_mib * MIB)},
        "requests_ok": 0,
        "requests_ok_delta": 100,
        "server_failures_by_code": {},
        "errors": 0,
        "qps": 1000.0,
        **extra,
    }


def record(end: dict, exit_code: int = 0) -> dict:
    return {
        "start": sample(1000, 2000),
        "rounds": [sample(1010, 2000), end],
        "server_exit_code": exit_code,
    }


def test_flat_memory_passes():
    assert verdict(record(sample(1049, 2099)), 5.0) == []
    assert "+4.90 %" in summary_lines(record(sample(1049, 2099)))[1]


def test_each_problem_is_named():
    assert verdict(record(sample(1050, 2000)), 5.0) == ["RSS grew 5.0 % (limit 5.0 %)"]
    assert verdict(record(sample(1000, 2200)), 5.0) == ["GPU 0 memory grew 10.0 % (limit 5.0 %)"]
    assert verdict(record(sample(1000, 2000, errors=3)), 5.0) == ["3 client-side errors"]
    failed = sample(1000, 2000, server_failures_by_code={"2": 1})
    assert verdict(record(failed), 5.0) == ["server failures: {'2': 1}"]
    assert verdict(record(sample(1000, 2000), exit_code=1), 5.0) == [
        "server exited with 1 after SIGTERM"
    ]
    assert verdict({"start": sample(1, 1), "rounds": [], "server_exit_code": 0}, 5.0) == [
        "no round completed within the duration"
    ]
