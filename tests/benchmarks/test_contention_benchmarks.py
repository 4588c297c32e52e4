"""benchmarks.synchronised, stage_contention and pipeline_contention: processes, parsing,
config rewriting and the per-node figures, on the CPU."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import pytest

from benchmarks.pipeline_contention import build_config, node_deltas
from benchmarks.result_files import result_stem
from benchmarks.synchronised import check_ready, parse_counts, run_processes, write_points
from benchmarks.tune import parse_setting
from service.service_config import DEFAULT_CONFIG
from torchpipe_lite import NodeStats


def _report_pid(start_at: float, seconds: float, queue, tag: str) -> None:
    queue.put((tag, os.getpid(), time.time() >= start_at))


def _fail(start_at: float, seconds: float, queue, exit_code: int) -> None:
    raise SystemExit(exit_code)


def test_run_processes_gathers_one_result_per_process_after_the_common_start() -> None:
    results = run_processes(_report_pid, ("x",), 2, 0.0, start_delay_s=0.0)
    assert len(results) == 2
    assert len({pid for _, pid, _ in results}) == 2
    assert all(tag == "x" for tag, _, _ in results)


@pytest.mark.slow  # starts a server or subprocesses and waits on them: not in make test-fast
def test_run_processes_names_failed_processes_instead_of_waiting() -> None:
    began = time.monotonic()
    with pytest.raises(RuntimeError, match=r"benchmark processes failed \(exit codes \[7"):
        run_processes(_fail, (7,), 2, 0.0, start_delay_s=0.0)
    assert time.monotonic() - began < 60  # not the 120 s result timeout


def test_parse_counts() -> None:
    assert parse_counts("1,8") == [1, 8]
    for text in ("0", "1,x", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_counts(text)


def test_build_config_applies_single_values_and_refuses_sweeps(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    setting = parse_setting("cpu_decoder.instance_num=3")
    config = build_config(DEFAULT_CONFIG, model, [setting])
    assert config.node("cpu_decoder").instance_num == 3
    models = [node.params["model"] for node in config.nodes if "model" in node.params]
    assert models == [str(model.absolute())]
    with pytest.raises(ValueError, match="one value here"):
        build_config(DEFAULT_CONFIG, model, [parse_setting("cpu_decoder.instance_num=1,2")])
    with pytest.raises(KeyError, match="no node"):
        build_config(DEFAULT_CONFIG, model, [parse_setting("nowhere.instance_num=1")])


def test_node_deltas_count_only_the_window() -> None:
    before = {"m": NodeStats("m", "B", 1, inferences=10, executions=5, compute_time_ms_total=50.0)}
    after = {
        "m": NodeStats(
            "m",
            "B",
            1,
            inferences=30,
            executions=10,
            compute_time_ms_total=100.0,
            queue_time_ms_total=40.0,
        )
    }
    assert node_deltas(before, after) == {
        "m": {"items": 20, "batches": 5, "compute_ms": 50.0, "queue_ms": 40.0}
    }


def test_write_points_names_the_file_by_date_device_and_commit(tmp_path: Path) -> None:
    path = write_points(tmp_path, "stage-contention-cpu", "cmd", [{"a": 1}], extra_key="v")
    record = json.loads(path.read_text())
    commit, day = record["git_commit"], record["date"]
    stem = result_stem(record["device"], "stage-contention-cpu", commit=commit, day=day)
    assert path.name == f"{stem}.json"
    assert record["command"] == "cmd" and record["points"] == [{"a": 1}]
    assert record["extra_key"] == "v"


def test_check_ready_refuses_a_process_that_missed_the_start() -> None:
    check_ready(time.time() + 60)
    with pytest.raises(RuntimeError, match="BENCH_START_DELAY_S"):
        check_ready(time.time() - 1)
