"""Export a torchvision ResNet to ONNX (dynamic batch axis, input "input" Nx3xHxW float).

    python -m service.export_model [--arch resnet50] [--weights PATH] [--output PATH] [--opset 17]

Nothing is downloaded: without ``--weights`` (a state_dict file, e.g. torchvision's
``resnet50-11ad3fa6.pth`` fetched elsewhere) the weights are seeded random ones
(``torch.manual_seed(0)``) and the predicted labels are meaningless, which is said loudly.

It uses torch's TorchScript-based exporter (``dynamo=False``): the newer exporter cannot
down-convert ResNet's ReduceMean to opset 17 and writes the weights to a side file. The
Identity nodes this exporter emits for de-duplicated weights are folded when the model is
loaded (``torchpipe_lite.backends.onnx_import``).
"""

from __future__ import annotations

import argparse
import logging
import os
import warnings
from pathlib import Path

logger = logging.getLogger(__name__)

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def build_resnet(arch: str, weights_path: str | os.PathLike[str] | None = None):
    """A torchvision ResNet in eval mode: weights from ``weights_path``, or seeded random."""
    import torch
    import torchvision

    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None)
    if weights_path is not None:
        state = torch.load(os.fspath(weights_path), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        model.load_state_dict(state)
        logger.info("loaded weights from %s", weights_path)
    else:
        banner = "!" * 78
        logger.warning(
            "%s\nNO --weights GIVEN: exporting %s with SEEDED RANDOM WEIGHTS "
            "(torch.manual_seed(0)).\nIts labels and scores are MEANINGLESS. Pass --weights PATH "
            "(a torchvision state_dict)\nfor a real classifier.\n%s",
            banner,
            arch,
            banner,
        )
    return model.eval()


def export_resnet(
    arch: str,
    output_path: str | os.PathLike[str],
    weights_path: str | os.PathLike[str] | None = None,
    opset: int = 17,
    *,
    image_size: int = 224,
) -> Path:
    """Export ``arch`` to ``output_path`` (input "input" Nx3x``image_size``² float, output
    "output" Nx1000, dynamic N); returns the path."""
    import torch

    output = Path(output_path)
    output.parent.mkdir(parents=True, exist_ok=True)
    model = build_resnet(arch, weights_path)
    example = torch.zeros(1, 3, image_size, image_size)
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated but is the one that writes opset 17 cleanly.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            os.fspath(output),
            opset_version=opset,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            dynamo=False,
        )
    logger.info("wrote %s (%s, opset %d, %d bytes)", output, arch, opset, output.stat().st_size)
    return output


def main(argv: list[str] | None = None) -> int:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m service.export_model", description=__doc__)
    parser.add_argument("--arch", choices=ARCHS, default="resnet50")
    parser.add_argument("--weights", help="a torchvision state_dict file (.pth); none: random")
    parser.add_argument("--output", help="ONNX file to write (default models/<arch>.onnx)")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--image-size", type=int, default=224, help="input height and width")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    output = args.output or f"models/{args.arch}.onnx"
    export_resnet(args.arch, output, args.weights, args.opset, image_size=args.image_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
