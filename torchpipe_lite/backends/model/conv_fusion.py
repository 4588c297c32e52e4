"""Fuses Conv2d -> ReLU and Conv2d -> Add -> ReLU chains of an FX graph into one cuDNN call.

A ResNet50 converted from ONNX runs 174 GPU kernels per forward: each convolution, then its
bias add, the residual add and the ReLU as separate elementwise kernels. At the small batches a
serving pipeline forms, those elementwise kernels are a large share of the GPU time
(``benchmarks.engine_throughput --no-fuse-conv`` measures the difference).
cuDNN computes ``relu(conv(x) + bias + residual)`` in one kernel
(``torch.cudnn_convolution_add_relu``); this pass rewrites the graph to use it. Off CUDA the
fused module runs the same math in plain ops.
"""

from __future__ import annotations

import functools
import operator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import fx, nn


@functools.cache
def _conv_relu_class() -> type:
    # Built lazily (and once) so importing the backends package never imports torch.
    import torch
    import torch.nn.functional as functional
    from torch import nn

    class ConvReLU(nn.Module):
        """``relu(conv2d(x) + bias [+ residual])``, one cuDNN kernel on CUDA."""

        def __init__(self, conv: nn.Conv2d) -> None:
            super().__init__()
            self.weight = conv.weight
            self.bias = conv.bias
            self.stride = list(conv.stride)
            self.padding = list(conv.padding)
            self.dilation = list(conv.dilation)
            self.groups = conv.groups

        def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
            if x.is_cuda:
                if residual is None:
                    return torch.cudnn_convolution_relu(
                        x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups,
                    )  # fmt: skip
                if residual.shape == self._output_shape(x):
                    return torch.cudnn_convolution_add_relu(
                        x, self.weight, residual, 1.0, self.bias, self.stride, self.padding,
                        self.dilation, self.groups,
                    )  # fmt: skip
            # The CPU, or a residual that only broadcasts (cuDNN adds equal shapes only).
            output = functional.conv2d(
                x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
            )
            if residual is not None:
                output = output + residual
            return functional.relu(output)

        def _output_shape(self, x: torch.Tensor) -> torch.Size:
            kernel = self.weight.shape[2:]
            spatial = [
                (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1
                for size, pad, dilation, k, stride in zip(
                    x.shape[2:], self.padding, self.dilation, kernel, self.stride, strict=True
                )
            ]
            return torch.Size([x.shape[0], self.weight.shape[0], *spatial])

    return ConvReLU


def fuse_conv_relu(module: fx.GraphModule) -> int:
    """Rewrite ``module``'s graph in place; returns how many convolutions were fused.

    A chain is fused only where no other node reads its intermediate results (the convolution's
    output, the sum) and the convolution is a plain zero-padded ``nn.Conv2d``.
    """
    conv_relu = _conv_relu_class()
    graph = module.graph
    fused = 0
    for relu in list(graph.nodes):
        if not _is_relu(module, relu):
            continue
        source = relu.args[0]
        conv, residual = _conv_and_residual(module, source)
        if conv is None:
            continue
        name = f"{conv.target}_fused_relu".replace(".", "_")
        module.add_submodule(name, conv_relu(module.get_submodule(conv.target)))
        args = (conv.args[0],) if residual is None else (conv.args[0], residual)
        with graph.inserting_before(relu):
            replacement = graph.call_module(name, args)
        relu.replace_all_uses_with(replacement)
        graph.erase_node(relu)
        if source is not conv:
            graph.erase_node(source)
        graph.erase_node(conv)
        fused += 1
    if fused:
        module.delete_all_unused_submodules()
        graph.lint()
        module.recompile()
    return fused


def _conv_and_residual(module: fx.GraphModule, node: object) -> tuple[fx.Node | None, object]:
    """The fusable convolution feeding ``node`` (directly or through an add) and the residual."""
    from torch import fx

    if not isinstance(node, fx.Node) or len(node.users) != 1:
        return None, None
    if _is_plain_conv(module, node):
        return node, None
    if not _is_add(module, node):
        return None, None
    first, second = node.args[:2]
    for conv, residual in ((first, second), (second, first)):
        if (
            isinstance(conv, fx.Node)
            and isinstance(residual, fx.Node)
            and conv is not residual
            and len(conv.users) == 1
            and _is_plain_conv(module, conv)
        ):
            return conv, residual
    return None, None


def _is_plain_conv(module: fx.GraphModule, node: fx.Node) -> bool:
    from torch import nn

    if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
        return False
    conv = module.get_submodule(node.target)
    return (
        type(conv) is nn.Conv2d
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
    )


def _is_relu(module: fx.GraphModule, node: fx.Node) -> bool:
    import torch
    from torch import nn

    if len(node.args) != 1 or node.kwargs:
        return False
    if node.op == "call_module":
        return type(module.get_submodule(node.target)) is nn.ReLU
    return node.op == "call_function" and node.target in (torch.relu, torch.nn.functional.relu)


def _is_add(module: fx.GraphModule, node: fx.Node) -> bool:
    import torch

    if len(node.args) != 2 or node.kwargs:
        return False
    if node.op == "call_function":
        return node.target in (operator.add, torch.add)
    if node.op != "call_module":
        return False
    # onnx2torch's elementwise module; old-style broadcasting (ONNX opset < 7) is left alone.
    add = module.get_submodule(node.target)
    return (
        type(add).__name__ == "OnnxBinaryMathOperation"
        and getattr(add, "math_op_function", None) is torch.add
        and not (getattr(add, "broadcast", None) == 1 and getattr(add, "axis", None) is not None)
    )


def maybe_fuse(module: nn.Module) -> int:
    """Fuse ``module`` if it is an FX graph (ONNX-converted models are); 0 otherwise."""
    from torch import fx

    if not isinstance(module, fx.GraphModule):
        return 0
    return fuse_conv_relu(module)
