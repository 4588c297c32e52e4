"""The side-by-side runner without servers: missing peers refused clearly, the Triton files,
the table and chart of a peers record."""

from __future__ import annotations

import importlib.util
import logging

import pytest

from benchmarks.peers import compare
from benchmarks.peers.servers import LitServePeer, TritonPeer
from benchmarks.peers.triton_repo import (
    MODEL_NAME,
    MODEL_REPOSITORY,
    TritonModelSettings,
    find_tritonserver,
    render_config,
    stub_sys_path,
    write_repository,
)
from benchmarks.report import ROW_KEYS, format_table, write_outputs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_a_missing_tritonserver_is_refused_in_one_line_before_anything_starts(caplog, tmp_path):
    missing = tmp_path / "no-such-tritonserver"
    argv = ["--peers", "triton", "--tritonserver", str(missing), "--results-dir", str(tmp_path)]
    with caplog.at_level(logging.INFO):
        assert compare.main(argv) == 2
    lines = [r.getMessage() for r in caplog.records if r.name == "benchmarks.peers"]
    skipped = [line for line in lines if line.startswith("triton: skipped")]
    assert len(skipped) == 1 and str(missing) in skipped[0] and "not an executable" in skipped[0]
    assert any("nothing to compare against" in line for line in lines)
    assert not list(tmp_path.iterdir())  # no model exported, no server started, no record


def test_tritonserver_named_by_the_environment_must_exist(monkeypatch, tmp_path):
    monkeypatch.setenv("TRITONSERVER", str(tmp_path / "absent"))
    reason = TritonPeer().unavailable()
    assert reason is not None and "$TRITONSERVER" in reason and "absent" in reason


def test_nothing_found_says_where_it_looked(monkeypatch):
    monkeypatch.delenv("TRITONSERVER", raising=False)
    monkeypatch.setenv("PATH", "")
    monkeypatch.setattr("benchmarks.peers.triton_repo._from_pytriton", lambda: None)
    reason = find_tritonserver()
    assert isinstance(reason, str) and reason.startswith("tritonserver not found")
    assert "make peers" in reason


def test_litserve_missing_is_said(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "litserve" else real(name, *a)
    )
    assert "litserve is not installed" in LitServePeer().unavailable()


def test_an_unknown_peer_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        compare.parse_args(["--peers", "torchserve"])
    assert exit_info.value.code == 2
    assert "unknown peer torchserve" in capsys.readouterr().err


def test_the_stub_gets_the_pythonpath_it_would_not_pass_on(monkeypatch, tmp_path):
    carried = tmp_path / "site"
    monkeypatch.setenv("PYTHONPATH", f"{carried}:")
    paths = stub_sys_path()
    assert str(carried) in paths and "" not in paths
    assert paths.index(str(carried)) < len(paths) - 1  # before the repository root


def test_committed_triton_config_is_the_rendered_default():
    committed = (MODEL_REPOSITORY / MODEL_NAME / "config.pbtxt").read_text()
    assert committed == render_config(TritonModelSettings())
    assert "dynamic_batching" in committed and "instance_group" in committed


def test_runner_repository_carries_the_run_settings(tmp_path):
    settings = TritonModelSettings(
        max_batch_size=4, max_queue_delay_us=2500, instances=2, kind="KIND_CPU", model="/m.onnx"
    )
    repository = write_repository(tmp_path, settings)
    config = (repository / MODEL_NAME / "config.pbtxt").read_text()
    assert "max_batch_size: 4" in config and "max_queue_delay_microseconds: 2500" in config
    assert "count: 2 kind: KIND_CPU" in config and 'string_value: "/m.onnx"' in config
    assert (repository / MODEL_NAME / "1" / "model.py").is_file()


def _rows() -> list[dict]:
    rows = []
    for handler, qps in (("pipelined", 300.0), ("litserve", 100.0), ("triton", 150.0)):
        for concurrency in (20, 40):
            row = dict.fromkeys(ROW_KEYS)
            row.update(handler=handler, concurrency=concurrency, server_processes=1, qps=qps)
            row.update(tp50_ms=5.0, tp90_ms=7.0, tp99_ms=9.0, errors=0, requests=100)
            rows.append(row)
    return rows


def test_peers_table_divides_ours_by_each_peer_and_leaves_out_the_reference():
    table = format_table(_rows(), setup="test", against=["litserve", "triton"])
    assert "pipelined / litserve, 1p c=20: 3.00x QPS" in table
    assert "pipelined / triton, 1p c=40: 2.00x QPS" in table
    assert "reference" not in table and "2172.54" not in table


def test_peers_record_gets_its_chart(tmp_path):
    path = tmp_path / "peers.json"
    write_outputs(
        {"results": _rows(), "setup": "t", "ratios_against": ["litserve"]}, path, sweep=True
    )
    assert path.with_suffix(".png").read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "peers-sweep.png").read_bytes()[:8] == PNG_MAGIC


def test_mps_without_its_control_daemon_is_refused_before_any_server_starts(monkeypatch):
    monkeypatch.setenv("PATH", "")
    args = compare.parse_args(["--mps"])
    started = []

    class NeverStarted:
        name = "never"

        def start(self, run, stack):
            started.append(self)

    with pytest.raises(compare.MpsError, match="nvidia-cuda-mps-control is not on PATH"):
        compare.run_each(None, [NeverStarted()], args, [], None)
    assert started == []
