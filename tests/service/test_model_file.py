"""Model files: which missing ones are exported, any torchvision classifier, clear weight errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from service.model_file import ModelFileError, ensure_model
from service.service_config import DEFAULT_CONFIG, load_service_config
from service.tools.export_model import ExportError, build_classifier, check_arch, export_classifier

REPO = Path(__file__).resolve().parents[2]


def test_a_missing_model_the_user_named_is_refused(tmp_path):
    missing = tmp_path / "resnet18.onnx"
    with pytest.raises(ModelFileError, match=r"does not exist .*add --arch NAME"):
        ensure_model(missing, user_given=True)
    assert not missing.exists()


def test_the_shipped_configs_model_may_be_exported_and_a_users_may_not(tmp_path):
    shipped = load_service_config(DEFAULT_CONFIG)
    assert not shipped.model_user_given
    assert load_service_config(DEFAULT_CONFIG, tmp_path / "m.onnx").model_user_given
    own = tmp_path / "mine.toml"
    own.write_text(DEFAULT_CONFIG.read_text())
    assert load_service_config(own).model_user_given


def test_arch_names_any_torchvision_classifier_with_a_hint_for_typos():
    assert check_arch("mobilenet_v3_small") == "mobilenet_v3_small"
    with pytest.raises(ExportError, match="did you mean mobilenet_v3_small"):
        check_arch("mobilenet_v3_smal")
    with pytest.raises(ExportError, match="unknown architecture 'fasterrcnn_resnet50_fpn'"):
        check_arch("fasterrcnn_resnet50_fpn")  # a detector, not a classifier


@pytest.mark.slow
def test_a_non_resnet_exports_with_a_dynamic_batch(tmp_path):
    import numpy as np
    import onnxruntime

    path = export_classifier("mobilenet_v3_small", tmp_path / "m.onnx", image_size=64)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {"input": np.zeros((3, 3, 64, 64), np.float32)})
    assert output.shape == (3, 1000)


def test_an_explicit_arch_exports_a_missing_model_the_user_named(tmp_path):
    path = tmp_path / "deep" / "small.onnx"
    assert ensure_model(path, "squeezenet1_1", user_given=True)
    assert path.is_file() and path.stat().st_size > 1 << 20
    assert not list(path.parent.glob(".*partial*"))  # the export was renamed into place


def test_weights_that_do_not_fit_the_arch_are_one_clear_error(tmp_path):
    import torch

    squeezenet = tmp_path / "squeezenet.pth"
    torch.save(build_classifier("squeezenet1_1").state_dict(), squeezenet)
    with pytest.raises(ExportError, match=r"do not fit mobilenet_v3_small: missing \d+"):
        build_classifier("mobilenet_v3_small", squeezenet)
    with pytest.raises(ExportError, match="does not exist"):
        build_classifier("squeezenet1_1", tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ExportError, match="not a readable state_dict"):
        build_classifier("squeezenet1_1", junk)
    assert build_classifier("squeezenet1_1", squeezenet) is not None  # the right arch loads


@pytest.mark.slow  # starts a server or subprocesses and waits on them: not in make test-fast
def test_the_export_command_says_what_is_wrong_in_one_line(tmp_path):
    run = subprocess.run(
        [
            *(sys.executable, "-m", "service.tools.export_model", "--arch", "resnet18"),
            *("--weights", str(tmp_path / "missing.pth"), "--output", str(tmp_path / "m.onnx")),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == (
        f"error: weights file {tmp_path / 'missing.pth'} does not exist"
    )
    assert "Traceback" not in run.stderr


def test_the_model_node_takes_the_name_of_the_model_it_runs(tmp_path):
    config = load_service_config(DEFAULT_CONFIG, tmp_path / "mobilenet_v3_small.onnx")
    assert config.model_node == "mobilenet_v3_small"
    assert config.pipeline.nodes[-1].name == "mobilenet_v3_small"
    assert config.pipeline.node("cpu_posdecoder").next_nodes == ("mobilenet_v3_small",)
    # A node the user named after something else keeps its name.
    own = tmp_path / "own.toml"
    text = DEFAULT_CONFIG.read_text().replace("[resnet50]", "[classifier]")
    own.write_text(text.replace('next = "resnet50"', 'next = "classifier"'))
    assert load_service_config(own, tmp_path / "resnet18.onnx").model_node == "classifier"
