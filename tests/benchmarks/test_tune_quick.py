"""benchmarks.tune end to end: two configurations of the real server, ResNet18 on the CPU."""

from __future__ import annotations

import json

import pytest

from benchmarks.tune import main
from tests.support.live_service import quick_benchmark_argv


@pytest.mark.slow
def test_tune_runs_every_point_and_records_the_best(tmp_path):
    argv = [*quick_benchmark_argv(tmp_path), "--set", "resnet50.instance_num=1,2"]
    argv += ["--concurrency", "2", "--total-number", "6", "--warmup", "2", "--tp99-ms", "600000"]
    assert main(argv) == 0  # 0: some point met the (generous) budget
    (json_path,) = (tmp_path / "results").glob("*-tune.json")
    record = json.loads(json_path.read_text())
    points = record["points"]
    assert [p["settings"] for p in points] == [
        {"resnet50.instance_num": 1, "workers": 1},
        {"resnet50.instance_num": 2, "workers": 1},
    ]
    for point, instances in zip(points, (1, 2), strict=True):
        assert point["errors"] == 0 and point["qps"] > 0
        assert f"instance_num = {instances}" in point["config_text"]
    assert record["best"] == max(points, key=lambda p: p["qps"])
    assert record["tp99_budget_ms"] == 600000


def test_an_unknown_node_is_refused_before_anything_starts(tmp_path, caplog):
    argv = ["--set", "nope.max=1", "--results-dir", str(tmp_path), "--quick"]
    assert main(argv) == 2
    assert "no node [nope]" in caplog.text
    assert not list(tmp_path.iterdir())
