"""The side-by-side run end to end, quick: ours and every peer that can run here, ResNet18."""

from __future__ import annotations

import importlib.util
import json

import pytest

from benchmarks.peers.compare import main
from benchmarks.peers.triton_repo import find_tritonserver
from benchmarks.report import ROW_KEYS
from benchmarks.result_files import result_stem

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _available() -> list[str]:
    peers = ["litserve"] if importlib.util.find_spec("litserve") else []
    return peers + ([] if isinstance(find_tritonserver(), str) else ["triton"])


@pytest.mark.slow
def test_quick_run_writes_every_row_with_who_ran_it(tmp_path, resnet18_onnx):
    peers = _available()
    if not peers:
        pytest.skip("no peer can run here (make peers installs LitServe and a tritonserver)")
    results = tmp_path / "results"
    argv = ["--quick", "--no-progress", "--arch", "resnet18", "--model", str(resnet18_onnx)]
    argv += ["--results-dir", str(results), "--peers", ",".join(peers)]
    argv += ["--concurrency", "2", "--total-number", "6", "--warmup", "2"]
    assert main(argv) == 0  # every server started and answered every call
    (json_path,) = results.glob("*.json")
    assert json_path.with_suffix(".png").read_bytes()[:8] == PNG_MAGIC
    record = json.loads(json_path.read_text())
    commit, day = record["git_commit"], record["date"]
    assert json_path.stem == result_stem(record["device"], "peers", commit=commit, day=day)
    assert record["ratios_against"] == peers and record["same_server_processes"] is True
    assert record["image_work"].startswith("OpenCV") and record["mps"] is False
    assert [row["handler"] for row in record["results"]] == ["pipelined", *peers]
    for row in record["results"]:
        assert set(ROW_KEYS) <= row.keys()
        assert row["requests"] == 6 and row["errors"] == 0 and row["qps"] > 0
        assert 0 < row["tp50_ms"] <= row["tp99_ms"]
        assert row["server_processes"] == 1 and row["server_tree_processes"] >= 1
        assert row["version"] and row["settings"] and row["device"].startswith(("cpu", "cuda"))
    by_name = {server["name"]: server for server in record["servers"]}
    assert by_name["pipelined"]["stats"]["requests_ok"] >= 8  # timed and warm-up calls
    if "litserve" in by_name:
        assert by_name["litserve"]["settings"]["max_batch_size"] == 8
        assert by_name["litserve"]["settings"]["batch_timeout_ms"] == 5.0
    if "triton" in by_name:
        assert by_name["triton"]["settings"]["max_queue_delay_us"] == 5000
