"""The Conv -> [Add ->] ReLU fusion pass: which chains it fuses, which it leaves, and that the
rewritten graph computes what the original did (on the CPU; the cuDNN kernel is a GPU test)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as functional
from torch import fx, nn

from torchpipe_lite.backends.model.conv_fusion import fuse_conv_relu, maybe_fuse
from torchpipe_lite.backends.model.onnx_import import convert_onnx
from torchpipe_lite.backends.model.torch_models import clear_cache, shared_model


def fused_count(module: fx.GraphModule) -> int:
    return sum(type(m).__name__ == "ConvReLU" for m in module.modules())


def check_same_output(module: nn.Module, *inputs: torch.Tensor) -> fx.GraphModule:
    """Trace ``module``, fuse a copy, and check both compute the same thing."""
    traced = fx.symbolic_trace(module)
    fused = copy.deepcopy(traced)
    fuse_conv_relu(fused)
    with torch.inference_mode():
        torch.testing.assert_close(fused(*inputs), traced(*inputs))
    return fused


class ConvRelu(nn.Module):
    def __init__(self, **conv_options) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, **conv_options)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv(x))


class Residual(nn.Module):
    """relu(conv(x) + shortcut), the shortcut written on either side of the add."""

    def __init__(self, conv_first: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.conv_first = conv_first

    def forward(self, x):
        y = self.conv(x)
        return torch.relu(y + x if self.conv_first else x + y)


def test_conv_relu_is_fused_and_computes_the_same() -> None:
    fused = check_same_output(ConvRelu(stride=2, padding=1), torch.randn(2, 3, 17, 17))
    assert fused_count(fused) == 1
    assert not any(isinstance(m, (nn.Conv2d, nn.ReLU)) for m in fused.modules())


@pytest.mark.parametrize("conv_first", [True, False])
def test_residual_add_is_fused_whichever_side_the_conv_is_on(conv_first: bool) -> None:
    fused = check_same_output(Residual(conv_first), torch.randn(2, 4, 9, 9))
    assert fused_count(fused) == 1
    ops = [node.target for node in fused.graph.nodes if node.op == "call_function"]
    assert ops == []  # the add and the relu are gone with the convolution


def test_a_conv_whose_output_is_read_elsewhere_is_left_alone() -> None:
    class TwoReaders(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            y = self.conv(x)
            return torch.relu(y) * y  # fusing would lose the pre-ReLU y

    fused = check_same_output(TwoReaders(), torch.randn(1, 3, 5, 5))
    assert fused_count(fused) == 0


def test_a_sum_read_elsewhere_is_left_alone() -> None:
    class SumReadTwice(Residual):
        def forward(self, x):
            total = self.conv(x) + x
            return torch.relu(total) + total

    fused = check_same_output(SumReadTwice(), torch.randn(1, 4, 6, 6))
    assert fused_count(fused) == 0


@pytest.mark.parametrize(
    "options", [{"padding": "same"}, {"padding": 1, "padding_mode": "reflect"}]
)
def test_convolutions_cudnn_cannot_run_as_they_are_left_alone(options: dict) -> None:
    fused = check_same_output(ConvRelu(**options), torch.randn(1, 3, 8, 8))
    assert fused_count(fused) == 0


def test_output_shape_matches_conv2d() -> None:
    probe = torch.randn(2, 3, 23, 19)
    for stride, padding, dilation in [(1, 0, 1), (2, 1, 1), (3, 2, 2), (2, 0, 3)]:
        conv = nn.Conv2d(3, 5, 3, stride=stride, padding=padding, dilation=dilation)
        module = fx.symbolic_trace(nn.Sequential(conv, nn.ReLU()))
        fuse_conv_relu(module)
        (fused,) = [m for m in module.modules() if type(m).__name__ == "ConvReLU"]
        assert fused._output_shape(probe) == conv(probe).shape


def test_onnx_resnet_fuses_every_conv_but_the_downsampling_ones(
    resnet18_small_onnx: Path,
) -> None:
    converted = convert_onnx(resnet18_small_onnx).module
    fused = copy.deepcopy(converted)
    # ResNet18: 20 convolutions; the 3 downsampling shortcuts share their add with a block's
    # last convolution, which is the one fused there.
    assert fuse_conv_relu(fused) == 17
    assert sum(isinstance(m, nn.Conv2d) for m in fused.modules()) == 3
    batch = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        torch.testing.assert_close(fused(batch), converted(batch), rtol=1e-4, atol=1e-4)


def test_shared_model_fuses_a_copy_and_keeps_the_plain_variant(
    resnet18_small_onnx: Path,
) -> None:
    clear_cache()
    cpu = torch.device("cpu")
    fused = shared_model(str(resnet18_small_onnx), torch.float32, cpu, False, fuse_conv=True)
    plain = shared_model(str(resnet18_small_onnx), torch.float32, cpu, False)
    assert fused_count(fused.module) == 17 and fused_count(plain.module) == 0
    assert shared_model(str(resnet18_small_onnx), torch.float32, cpu, False, True) is fused
    clear_cache()


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_models_that_are_not_fx_graphs_are_run_as_they_are() -> None:
    scripted = torch.jit.script(ConvRelu())
    assert maybe_fuse(scripted) == 0
    assert maybe_fuse(ConvRelu()) == 0  # a plain module: nothing to rewrite


def test_cpu_math_of_the_fused_module_with_a_broadcast_residual() -> None:
    class BroadcastResidual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)

        def forward(self, x, shift):
            return torch.relu(self.conv(x) + shift)

    module = BroadcastResidual()
    x, shift = torch.randn(1, 2, 4, 4), torch.randn(1, 2, 1, 1)
    fused = check_same_output(module, x, shift)
    assert fused_count(fused) == 1
    expected = functional.relu(module.conv(x) + shift)
    torch.testing.assert_close(fused(x, shift), expected)
