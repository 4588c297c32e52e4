"""TorchPipe's example programs and configuration forms run here as written: the seed
tutorial's handler flow (``parse_toml``, ``node_name``, ``TASK_RESULT_KEY not in ...``), the
forms its ``examples/`` configs use (TensorRT's shapes and profiles in ``min``/``max``, a
backend written with spaces, the filters its core registers). The configs are written here,
in those forms; docs/torchpipe.md lists which of TorchPipe's own load and why the others do
not."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch

import torchpipe_lite as torchpipe
from torchpipe_lite import TASK_DATA_KEY, TASK_RESULT_KEY, pipe

TUTORIAL = Path(__file__).resolve().parents[1] / "data" / "torchpipe" / "resnet50.toml"


class AddTen:
    """A TorchPipe-style Python backend: ``result = data + 10``."""

    def init(self, params: dict[str, str]) -> None:
        pass

    def forward(self, batch: list[dict[str, Any]]) -> None:
        for item in batch:
            item["result"] = item["data"] + 10


torchpipe.register_backend(AddTen, "ExamplesAddTen")


def test_the_seed_tutorial_handler_flow_runs_as_written(
    resnet18_onnx, photos, tmp_path, monkeypatch
):
    """The seed tutorial's main_torchpipe.py: parse_toml on a relative path, pipe, a request
    naming its entry node, and a missing result read as a failed decode."""
    config_text = TUTORIAL.read_text().replace("MODEL_PATH", str(resnet18_onnx))
    (tmp_path / "resnet50.toml").write_text(config_text)
    monkeypatch.chdir(tmp_path)
    config = torchpipe.parse_toml("resnet50.toml")
    assert config["cpu_decoder"]["backend"] == "DecodeMat" and "global" in config
    classification_engine = pipe(config)
    softmax = torch.nn.Softmax(dim=-1)
    labels = []
    with classification_engine:
        for image in (photos["chelsea"], b"not an image"):
            bin_data = {TASK_DATA_KEY: image, "node_name": "cpu_decoder"}
            classification_engine(bin_data)
            if TASK_RESULT_KEY not in bin_data.keys():  # noqa: SIM118  (the tutorial's spelling)
                labels.append("error decode")
                continue
            dis = softmax(bin_data[TASK_RESULT_KEY])
            maxprob, label_index = torch.max(dis, 1)
            labels.append((label_index.item(), maxprob.item()))
    (label, score), failed = labels
    assert 0 <= label < 1000 and 0.0 < score <= 1.0
    assert failed == "error decode"


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ({"max": "4x3x224x224", "min": "1x3x224x224"}, (1, 4)),  # an input shape: its batch
        ({"max": "16;16;16x3x224x224", "min": "16;9;1x3x224x224"}, (1, 16)),  # 3 profiles
        ({"max": "8;8;4", "min": "8; 8; 1"}, (1, 8)),
        ({"max": "1x20x224,1", "min": "1x1x224,1"}, (1, 1)),  # two inputs: the first's batch
    ],
)
def test_tensorrt_min_max_forms_load_as_the_batch_range_they_mean(written, expected, caplog):
    with caplog.at_level(logging.WARNING):
        config = torchpipe.load_config({"m": {"backend": "Identity", **written}})
    node = config.node("m")
    assert (node.min_batch, node.max_batch) == expected
    profiles = ";" in written["max"]
    assert any("optimisation profiles" in r.getMessage() for r in caplog.records) == profiles


def test_a_tensorrt_shape_range_runs_batches_within_it():
    with pipe({"backend": "Identity", "max": "4x3x224x224", "batching_timeout": 20}) as model:
        assert (model.min(), model.max()) == (1, 4)
        requests = [{"data": n} for n in range(9)]
        model(requests)
        assert [r["result"] for r in requests] == list(range(9))


def test_malformed_min_max_is_still_refused():
    for bad in ("4x", "1;x", "a;b", "16;;1"):
        with pytest.raises(torchpipe.ConfigError, match="max"):
            torchpipe.load_config({"backend": "Identity", "max": bad})


def test_an_examples_style_graph_loads_as_written():
    """The shape of TorchPipe's GPU-decode examples: a backend with spaces around it, a first
    node with filter "run", a fallback decoder with "or", a global section of defaults."""
    config = torchpipe.load_config(
        """
        batching_timeout = 5
        precision = "fp16"
        [jpg_decoder]
        filter = "run"
        backend = "SyncTensor[ Sequential[DecodeTensor,ResizeTensor,cvtColorTensor]  ]"
        resize_h = 224
        resize_w = 224
        color = "rgb"
        next = "cpu_decoder"
        [cpu_decoder]
        backend = " Sequential[DecodeMat,ResizeMat,cvtColorMat,Mat2Tensor,SyncTensor]  "
        filter = "or"
        resize_h = 224
        resize_w = 224
        color = "rgb"
        next = "model"
        [model]
        backend = "Identity"
        max = "16;16"
        min = "16;1"
        """
    )
    assert [n.name for n in config.nodes] == ["jpg_decoder", "cpu_decoder", "model"]
    assert str(config.node("cpu_decoder").filter) == "or"
    assert (config.node("model").min_batch, config.node("model").max_batch) == (1, 16)


def test_result2other_and_result2key_1_keep_the_result_and_run_on_it():
    for name, key in (("result2other", "other"), ("result2key_1", "key_1")):
        with pipe({"backend": f"S[ExamplesAddTen,({name})ExamplesAddTen]"}) as model:
            request = {"data": 1}
            model(request)
            assert (request["result"], request[key]) == (21, 11)
        graph = {"a": {"backend": "ExamplesAddTen", "next": "b"}}
        graph["b"] = {"backend": "ExamplesAddTen", "filter": name}
        with pipe(graph) as model:
            request = {"data": 1}
            model(request)
            assert (request["result"], request[key]) == (21, 11)


def test_target_filter_runs_the_node_only_for_its_target():
    graph = {"a": {"backend": "ExamplesAddTen", "next": "b"}}
    graph["b"] = {"backend": "ExamplesAddTen", "filter": "Target", "target": "big"}
    with pipe(graph) as model:
        requests = [{"data": 1}, {"data": 1, "target": "big"}, {"data": 1, "target": "small"}]
        model(requests)
        assert [r["result"] for r in requests] == [21, 21, 11]
    with pytest.raises(RuntimeError, match="target"):
        pipe({"a": {"filter": "Target"}})
