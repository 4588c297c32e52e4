"""ONNX -> torch conversion: Identity folding, and outputs equal to onnxruntime's on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from torchpipe_lite.backends.model.onnx_import import convert_onnx, fold_identity_nodes

ort = pytest.importorskip("onnxruntime")


def run_onnxruntime(path: Path | bytes, feed: dict[str, np.ndarray]) -> np.ndarray:
    source = str(path) if isinstance(path, Path) else path
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, feed)[0]


def relative_error(actual: torch.Tensor, expected: np.ndarray) -> float:
    expected_t = torch.from_numpy(expected)
    return float((actual - expected_t).norm() / expected_t.norm())


def test_exported_resnet_has_identity_nodes_and_they_fold(resnet18_small_onnx: Path) -> None:
    model = onnx.load(str(resnet18_small_onnx))
    identities = sum(node.op_type == "Identity" for node in model.graph.node)
    assert identities > 0, "the exporter no longer emits Identity nodes: revisit onnx_import"
    assert fold_identity_nodes(model) == identities
    assert not any(node.op_type == "Identity" for node in model.graph.node)
    onnx.checker.check_model(model, full_check=True)
    assert fold_identity_nodes(model) == 0


def test_converted_resnet_matches_onnxruntime(resnet18_small_onnx: Path) -> None:
    converted = convert_onnx(resnet18_small_onnx)
    assert converted.input_name == "input"
    assert converted.input_shape == (None, 3, 64, 64)
    batch = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    expected = run_onnxruntime(resnet18_small_onnx, {"input": batch})
    with torch.inference_mode():
        actual = converted.module(torch.from_numpy(batch))
    assert actual.shape == (3, 1000)
    assert relative_error(actual, expected) < 1e-5


def test_converted_resnet_matches_the_torch_model(resnet18_small_onnx: Path) -> None:
    from service.tools.export_model import build_classifier

    reference = build_classifier("resnet18")  # the same seeded weights as the export
    converted = convert_onnx(resnet18_small_onnx).module
    batch = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected, actual = reference(batch), converted(batch)
    assert relative_error(actual, expected.numpy()) < 1e-5


def tiny_graph_with_identities() -> onnx.ModelProto:
    """y = Identity(x + Identity(Identity(w))) * Identity(w): chained Identities on an
    initializer, one on an activation, and one whose output is a graph output."""
    weight = numpy_helper.from_array(np.arange(4, dtype=np.float32).reshape(1, 4), "w")
    nodes = [
        helper.make_node("Identity", ["w"], ["w1"]),
        helper.make_node("Identity", ["w1"], ["w2"]),
        helper.make_node("Add", ["x", "w2"], ["s"]),
        helper.make_node("Identity", ["s"], ["s1"]),
        helper.make_node("Mul", ["s1", "w1"], ["m"]),
        helper.make_node("Identity", ["m"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "identities",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        initializer=[weight],
        value_info=[helper.make_tensor_value_info("s1", TensorProto.FLOAT, [2, 4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_folding_keeps_graph_outputs_and_semantics(tmp_path: Path) -> None:
    model = tiny_graph_with_identities()
    x = np.random.default_rng(2).standard_normal((2, 4)).astype(np.float32)
    expected = run_onnxruntime(model.SerializeToString(), {"x": x})
    assert fold_identity_nodes(model) == 3
    assert [node.op_type for node in model.graph.node] == ["Add", "Mul", "Identity"]
    assert list(model.graph.node[0].input) == ["x", "w"]
    assert list(model.graph.node[1].input) == ["s", "w"]
    assert not any(info.name == "s1" for info in model.graph.value_info)
    onnx.checker.check_model(model, full_check=True)
    np.testing.assert_allclose(run_onnxruntime(model.SerializeToString(), {"x": x}), expected)
    path = tmp_path / "tiny.onnx"
    onnx.save(model, str(path))
    converted = convert_onnx(path)
    assert converted.input_shape == (2, 4) and converted.output_names == ["y"]
    with torch.inference_mode():
        np.testing.assert_allclose(
            converted.module(torch.from_numpy(x)).numpy(), expected, rtol=1e-6
        )


def test_missing_converter_dependency_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import builtins

    real_import = builtins.__import__

    def no_onnx2torch(name: str, *args, **kwargs):
        if name == "onnx2torch":
            raise ImportError("No module named 'onnx2torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx2torch)
    with pytest.raises(ImportError, match="pip install onnx onnx2torch"):
        convert_onnx(tmp_path / "whatever.onnx")
