"""The main job's pieces that need no server: table, JSON/PNG/CSV writers, samplers, defaults."""

from __future__ import annotations

import csv
import json
import os
import sys
import types

from benchmarks.compare import QUICK, SWEEP_LEVELS, parse_args, resolve
from benchmarks.gpu_monitor import GpuMonitor
from benchmarks.report import (
    ROW_KEYS,
    format_table,
    plot_bars,
    plot_sweep,
    write_outputs,
    write_sweep_csv,
)
from benchmarks.report import main as report_main
from benchmarks.resource_sampler import ResourceSampler
from benchmarks.run_record import device_slug
from benchmarks.server_figures import (
    batching_line,
    node_rows,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _rows() -> list[dict]:
    rows = []
    for handler, qps in (("baseline", 100.0), ("pipelined", 250.0)):
        for concurrency in (10, 20):
            row = dict.fromkeys(ROW_KEYS)
            row.update(
                handler=handler,
                concurrency=concurrency,
                requests=50,
                qps=qps * concurrency / 10,
                tp50_ms=10.0,
                tp90_ms=12.0,
                tp99_ms=15.0,
                mean_ms=10.5,
                errors=0,
                server_cpu_percent=180.0,
                server_rss_mib=900.0,
            )
            rows.append(row)
    return rows


def test_table_shows_this_run_and_the_reference():
    table = format_table(_rows(), setup="test machine")
    assert "this run: test machine" in table
    assert "2.50x QPS" in table  # pipelined / baseline, from the rows
    assert "747.92" in table and "2172.54" in table and "2.90x QPS" in table
    assert "180%" in table and "900 MiB" in table


def test_bar_chart_and_sweep_files(tmp_path):
    rows = _rows()
    plot_bars(tmp_path / "bars.png", rows, title="test")
    write_sweep_csv(tmp_path / "sweep.csv", rows)
    plot_sweep(tmp_path / "sweep.png", rows, title="test")
    for name in ("bars.png", "sweep.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC
    with (tmp_path / "sweep.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [(r["handler"], r["concurrency"]) for r in table] == [
        ("baseline", "10"),
        ("baseline", "20"),
        ("pipelined", "10"),
        ("pipelined", "20"),
    ]
    assert float(table[3]["qps"]) == 500.0


def test_sampler_measures_this_process():
    sampler = ResourceSampler(os.getpid(), interval_s=0.05)
    sampler.start()
    sum(i * i for i in range(1_000_000))  # CPU work inside the window (psutil ticks: 10 ms)
    use = sampler.stop()
    assert use is sampler.result
    assert use.cpu_percent > 0 and use.rss_mib_max > 10
    assert use.gpu_util_percent is None and use.samples >= 2


def test_quick_cpu_defaults_without_gpu():
    no_gpu = GpuMonitor(reason="no NVML here")
    args = resolve(parse_args([]), no_gpu)
    assert args.quick and args.arch == "resnet50"
    assert (args.total_number, args.processes) == (QUICK["total_number"], QUICK["processes"])
    assert args.concurrency == [10, 20] and args.threads == 20
    assert args.model.name == "resnet50.onnx"
    swept = resolve(parse_args(["--sweep", "--total-number", "7"]), no_gpu)
    assert swept.concurrency == list(SWEEP_LEVELS) and swept.threads == 64
    assert swept.total_number == 7


def test_gpu_monitor_says_what_it_sees():
    monitor = GpuMonitor.open()
    if monitor.available:
        assert monitor.names and monitor.reason is None
        assert 0.0 <= monitor.utilization_percent(0) <= 100.0
    else:
        assert monitor.reason and monitor.names == []


def test_report_redraws_a_record(tmp_path, capsys):
    record_path = tmp_path / "2026-01-01-cpu.json"
    write_outputs({"results": _rows(), "setup": "test"}, record_path, sweep=False)
    assert not (tmp_path / "2026-01-01-cpu-sweep.csv").exists()
    assert report_main([str(record_path), "--sweep"]) == 0
    assert "2.50x QPS" in capsys.readouterr().out
    for name in ("2026-01-01-cpu.png", "2026-01-01-cpu-sweep.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "2026-01-01-cpu-sweep.csv").read_text().startswith("handler,")


def test_without_matplotlib_the_json_is_written_and_the_missing_png_said(
    tmp_path, monkeypatch, caplog
):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    record_path = tmp_path / "r.json"
    write_outputs({"results": _rows(), "setup": "test"}, record_path, sweep=True)
    assert json.loads(record_path.read_text())["results"][0]["handler"] == "baseline"
    assert (tmp_path / "r-sweep.csv").exists() and not (tmp_path / "r.png").exists()
    assert "matplotlib is not installed" in caplog.text


class _FakeNvml(types.ModuleType):
    """Two GPUs; the process 4242 computes on the second; every GPU reads 42% busy."""

    class NVMLError(Exception):
        pass

    def __init__(self):
        super().__init__("pynvml")

    def nvmlInit(self):
        pass

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetName(self, handle):
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [types.SimpleNamespace(pid=4242)] if handle == 1 else []

    def nvmlDeviceGetUtilizationRates(self, handle):
        return types.SimpleNamespace(gpu=42)

    def nvmlDeviceGetMemoryInfo(self, handle):
        return types.SimpleNamespace(used=1536 << 20)


def test_gpu_path_with_a_fake_nvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _FakeNvml())
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    gpu = GpuMonitor.open()
    assert gpu.available and gpu.names == ["NVIDIA H100 80GB HBM3"] * 2
    assert device_slug(gpu) == "nvidia-h100-80gb-hbm3"
    assert (gpu.index_of(4242), gpu.index_of(1)) == (1, 0)
    sampler = ResourceSampler(os.getpid(), gpu=gpu, interval_s=0.05)
    sampler.start()
    use = sampler.stop()
    assert use.gpu_util_percent == 42.0 and use.gpu_memory_mib_max == 1536.0
    args = resolve(parse_args([]), gpu)
    assert not args.quick
    assert (args.total_number, args.warmup, args.processes) == (10000, 200, 4)


def test_group_figures_come_from_the_summed_stats_and_lead_the_batching_line() -> None:
    from service.gen.inference.ttypes import ServerStats, WireNodeStats
    from service.ops.stats_sum import decode_stats, encode_stats

    def node(name: str, inferences: int, executions: int, queue_ms: float) -> WireNodeStats:
        return WireNodeStats(
            node=name, backend="B", instances=2, requests_ok=inferences, requests_failed=0,
            requests_rejected=0, requests_timed_out=0, inferences=inferences,
            executions=executions, batch_sizes={}, queue_time_ms_total=queue_ms,
            compute_time_ms_total=100.0, queue_length=0, request_compute_time_ms_total=400.0,
        )  # fmt: skip

    stats = ServerStats(
        handler="pipelined", device="cuda:0", uptime_s=1.0, requests_ok=40, requests_failed=0,
        failures_by_code={}, nodes=[node("decoder", 40, 40, 1.0), node("resnet50", 40, 10, 12.5)],
    )  # fmt: skip
    figures = {row["node"]: row for row in node_rows(decode_stats(encode_stats(stats)))}
    assert figures["resnet50"]["inferences"] == 40 and figures["resnet50"]["executions"] == 10
    assert abs(figures["resnet50"]["queue_time_ms_total"] - 12.5) < 1e-9
    one_worker = {
        "device": "cuda:0",
        "nodes": [],
        "workers": 4,
        "group_nodes": [figures["resnet50"]],
    }
    line = batching_line("pipelined", one_worker)
    assert "all 4 workers" in line
    assert "'resnet50' ran 40 images in 10 batches (mean batch 4.00)" in line
