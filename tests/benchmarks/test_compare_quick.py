"""The main job end to end in quick mode: both real servers, tiny counts, ResNet18 on the CPU."""

from __future__ import annotations

import json

import pytest

from benchmarks.compare import main
from benchmarks.report import ROW_KEYS
from benchmarks.result_files import result_stem
from tests.support.live_service import quick_benchmark_argv

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RECORD_KEYS = {"date", "device", "gpu", "gpu_count", "cpu_count", "config", "command", "results"}


@pytest.mark.slow
def test_quick_compare_writes_json_and_png(tmp_path):
    argv = quick_benchmark_argv(tmp_path)
    argv += ["--concurrency", "2,3", "--total-number", "9", "--warmup", "2", "--ping-check"]
    assert main(argv) == 0  # 0: both servers ran and every call succeeded
    (json_path,) = (tmp_path / "results").glob("*.json")
    (png_path,) = (tmp_path / "results").glob("*.png")
    assert png_path.stem == json_path.stem
    assert png_path.read_bytes()[:8] == PNG_MAGIC
    record = json.loads(json_path.read_text())
    assert record.keys() >= RECORD_KEYS
    commit = record["config"]["git_commit"]
    assert json_path.stem == result_stem(
        record["device"], "quick", commit=commit, day=record["date"]
    )
    assert record["config"]["arch"] == "resnet18" and record["config"]["quick"] is True
    rows = record["results"]
    assert [(r["handler"], r["concurrency"]) for r in rows] == [
        ("baseline", 2),
        ("baseline", 3),
        ("pipelined", 2),
        ("pipelined", 3),
    ]
    for row in rows:
        assert set(ROW_KEYS) <= row.keys()
        assert row["requests"] == 9 and row["errors"] == 0 and row["qps"] > 0
        assert 0 < row["tp50_ms"] <= row["tp90_ms"] <= row["tp99_ms"]
        assert row["server_rss_mib"] > 50 and row["server_cpu_percent"] > 0
        if record["gpu"] is None:
            assert row["gpu_util_percent"] is None
    pings = record["ping_check"]
    assert [(p["concurrency"], p["errors"], p["requests"]) for p in pings] == [(2, 0, 9), (3, 0, 9)]
    # The server counted the calls itself (timed and warm-up), and said where it ran.
    pipelined = record["server_stats"]["pipelined"]
    assert pipelined["requests_ok"] >= 2 * 9 and pipelined["device"]
