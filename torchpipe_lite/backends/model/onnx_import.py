"""ONNX -> torch module conversion with onnx2torch, after folding away exporter Identity nodes.

torch's ONNX exporter de-duplicates equal initializers (e.g. folded Conv biases) and emits an
``Identity`` node per extra use. onnx2torch 1.5.15 expects Conv weights and biases to be
initializers, so it fails on such graphs (a ``KeyError`` on the bias at opset 17; ``Identity``
v19 is not supported at all). Rewiring each consumer of an Identity's output to its input and
dropping the node gives an equivalent graph that converts.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx
    import torch

logger = logging.getLogger(__name__)


@dataclass
class ConvertedModel:
    """A converted ONNX model and what its graph says about its (first) input."""

    module: torch.nn.Module
    input_name: str
    #: The input's dimensions, ``None`` where symbolic (e.g. the batch axis).
    input_shape: tuple[int | None, ...]
    output_names: list[str]


def fold_identity_nodes(model: onnx.ModelProto) -> int:
    """Remove ``Identity`` nodes of the main graph in place; returns how many were removed.

    Every consumer (in the graph and in nested subgraphs) of an Identity's output is rewired to
    the Identity's input. An Identity whose output is a graph output is kept, since that name is
    part of the model's interface.
    """
    graph = model.graph
    graph_outputs = {output.name for output in graph.output}
    alias: dict[str, str] = {}
    kept = []
    for node in graph.node:
        if (
            node.op_type == "Identity"
            and len(node.input) == 1
            and node.output[0] not in graph_outputs
        ):
            alias[node.output[0]] = node.input[0]
        else:
            kept.append(node)
    if not alias:
        return 0

    def resolve(name: str) -> str:
        while name in alias:  # chains of Identity nodes
            name = alias[name]
        return name

    _rename_inputs(kept, resolve)
    del graph.node[:]
    graph.node.extend(kept)
    stale = [info for info in graph.value_info if info.name in alias]
    for info in stale:
        graph.value_info.remove(info)
    return len(alias)


def _rename_inputs(nodes: Any, resolve: Any) -> None:
    """Apply ``resolve`` to every node input, descending into If/Loop/Scan bodies."""
    import onnx

    for node in nodes:
        for index, name in enumerate(node.input):
            node.input[index] = resolve(name)
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                _rename_inputs(attribute.g.node, resolve)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for subgraph in attribute.graphs:
                    _rename_inputs(subgraph.node, resolve)


def convert_onnx(path: str | os.PathLike[str]) -> ConvertedModel:
    """Load an ONNX file, fold its Identity nodes and convert it to a torch module (eval mode,
    on the CPU, float32)."""
    try:
        import onnx
        from onnx2torch import convert
    except ImportError as error:
        raise ImportError(
            f"converting ONNX models to torch needs the onnx and onnx2torch packages "
            f"(pip install onnx onnx2torch): {error}"
        ) from error

    started_s = time.perf_counter()
    model = onnx.load(os.fspath(path))
    folded = fold_identity_nodes(model)
    initializers = {init.name for init in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in initializers]
    if not inputs:
        raise ValueError(f"{path}: the ONNX graph has no input")
    first = inputs[0]
    shape = tuple(
        dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None
        for dim in first.type.tensor_type.shape.dim
    )
    module = convert(model).eval()
    module.requires_grad_(False)
    logger.info(
        "converted %s to torch (%d Identity nodes folded, input %r %s) in %.1f s",
        path,
        folded,
        first.name,
        "x".join("?" if dim is None else str(dim) for dim in shape),
        time.perf_counter() - started_s,
    )
    return ConvertedModel(
        module=module,
        input_name=first.name,
        input_shape=shape,
        output_names=[output.name for output in model.graph.output],
    )
