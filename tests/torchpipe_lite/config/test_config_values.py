"""Typed parameter values: colour, precision and device become enums and a DeviceSpec at load."""

from __future__ import annotations

import pytest

import torchpipe_lite as tp
from torchpipe_lite import Color, ConfigError, DeviceSpec, Precision, load_config
from torchpipe_lite.backends.params import param_color, param_device, param_precision


def test_the_loader_types_color_precision_and_device_once():
    config = load_config(
        {
            "device": "CPU",  # a top-level default: every node's params get it typed
            "a": {"backend": "CvtColorMat", "color": " RGB ", "next": "b"},
            "b": {"backend": "Identity", "precision": "half", "device": "cuda:1"},
        }
    )
    a, b = config.node("a").params, config.node("b").params
    assert a["color"] is Color.RGB and a["device"] == DeviceSpec("cpu")
    assert b["precision"] is Precision.FP16 and b["device"] == DeviceSpec("cuda", 1)
    # Still the plain names where a string is wanted: logs, JSON, TOML, f-strings.
    assert str(a["color"]) == "rgb" and a["color"] == "rgb"
    assert f"{b['precision']}" == "fp16" and str(b["device"]) == "cuda:1"


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("color", "rbg", 'must be "rgb" or "bgr"'),
        ("precision", "int8", 'must be "fp16" or "fp32" (or float16, half, float32)'),
        ("device", "cdua:0", 'must be "cpu", "cuda" or "cuda:<index>"'),
        ("device", "cuda:-1", "got 'cuda:-1'"),
    ],
)
def test_a_bad_value_is_refused_at_load_naming_node_and_key(key, value, says):
    with pytest.raises(ConfigError) as caught:
        load_config({"a": {"backend": "Identity", key: value}})
    assert (caught.value.node, caught.value.key) == ("a", key)
    assert says in str(caught.value)


def test_the_readers_take_typed_values_and_strings_alike():
    # tp.create_backend(name, params) hands backends plain dicts: strings must still work.
    assert param_color({"color": Color.BGR}) is Color.BGR
    assert param_color({"color": "BGR"}) is Color.BGR
    assert param_color({}, default="rgb") is Color.RGB
    assert param_precision({"precision": Precision.FP32}, Precision.FP16) is Precision.FP32
    assert param_precision({"precision": "float16"}, "fp32") is Precision.FP16
    assert param_precision({}, "fp32") is Precision.FP32
    assert str(param_device({"device": DeviceSpec("cpu")})) == "cpu"
    assert str(param_device({"device": "cpu"})) == "cpu"
    with pytest.raises(ConfigError, match=r"color: must be \"rgb\" or \"bgr\", got 'hsv'"):
        param_color({"color": "hsv"})
    with pytest.raises(ConfigError, match="device: must be"):
        param_device({"device": "gpu"})


def test_a_typed_pipeline_runs_its_stages_with_the_enums():
    import numpy as np

    bgr = np.zeros((2, 2, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV's order
    with tp.pipe({"swap": {"backend": "CvtColorMat", "color": "RGB"}}) as pipeline:
        request = {"data": bgr}
        pipeline(request)
    assert request["color"] is Color.RGB
    assert request["result"][0, 0].tolist() == [0, 0, 255]


def test_require_files_false_leaves_a_missing_model_file_to_the_backend(tmp_path):
    missing = str(tmp_path / "absent.onnx")
    table = {"m": {"backend": "TorchTensor", "model": missing, "device": "cpu"}}
    with pytest.raises(ConfigError, match="file not found") as caught:
        load_config(table)
    assert (caught.value.node, caught.value.key) == ("m", "model")
    config = load_config(table, require_files=False)
    assert config.node("m").params["model"] == missing
    with pytest.raises(ConfigError, match="cannot read model file"):  # at the backend's init
        tp.create_backend("TorchTensor", config.node("m").params)
