"""benchmarks.gpu_ceiling's CPU smoke mode end to end: every row present, typed, and measured
or saying why not."""

from __future__ import annotations

import json

import pytest

from benchmarks.gpu_ceiling import main

GPU_ONLY_ROWS = {
    "image stage parts: decode step",
    "image stage parts: decode + resize",
    "decode: torchvision nvJPEG (batched)",
    "decode: nvimgcodec HW_GPU_ONLY",
    "decode: nvimgcodec hybrid",
}
MEASURED_ROWS = {
    "image stage",
    "model",
    "decode: OpenCV imdecode (CPU)",
    "decode: torchvision decode_jpeg (CPU)",
    "two threads",
    "two threads + 1 burners",
    "image stage under model",
    "stage python (CPU, CUDA stood in for)",
}


@pytest.mark.slow
def test_the_cpu_smoke_mode_writes_every_row(tmp_path, resnet18_onnx):
    path = tmp_path / "ceiling.json"
    argv = ["--device", "cpu", "--quick", "--batches", "2", "--burners", "1"]
    assert main([*argv, "--model", str(resnet18_onnx), "--json", str(path)]) == 0
    record = json.loads(path.read_text())
    for key in ("date", "git_commit", "device", "torch", "torchvision", "python", "plan"):
        assert record[key], key
    assert record["device"] == "cpu" and record["quick"] is True
    rows = {row["row"]: row for row in record["rows"]}
    assert set(rows) == GPU_ONLY_ROWS | MEASURED_ROWS
    for name in GPU_ONLY_ROWS:
        assert rows[name]["status"] == "no CUDA" and rows[name]["images_per_s"] is None
    for name in MEASURED_ROWS:
        row = rows[name]
        assert row["status"] == "ok" and row["batch"] == 2, name
        assert row["ms_per_batch"] > 0 and len(row["repeats_ms"]) >= 2, name
        assert row["images_per_s"] == pytest.approx(2000 / row["ms_per_batch"]), name
    assert rows["stage python (CPU, CUDA stood in for)"]["cpu_us_per_batch"] > 0
    pytest.importorskip("matplotlib")
    assert path.with_suffix(".png").stat().st_size > 0


def test_cuda_is_refused_where_there_is_none(capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit) as exit_info:
        main(["--device", "cuda"])
    assert exit_info.value.code == 2
    assert "no CUDA device here" in capsys.readouterr().err
