"""Export a torchvision classifier to ONNX (dynamic batch axis, input "input" Nx3xHxW float).

    python -m service.tools.export_model [--arch resnet50] [--weights PATH] [--output PATH]
        [--opset 17]

Any classifier of ``torchvision.models`` can be exported (``resnet18``, ``mobilenet_v3_small``,
``efficientnet_b0``, ...). Nothing is downloaded: without ``--weights`` (a state_dict file, e.g.
torchvision's ``resnet50-11ad3fa6.pth`` fetched elsewhere) the weights are seeded random ones
(``torch.manual_seed(0)``) and the predicted labels are meaningless, which is said loudly.

It uses torch's TorchScript-based exporter (``dynamo=False``): the newer exporter cannot
down-convert ResNet's ReduceMean to opset 17 and writes the weights to a side file. The
Identity nodes this exporter emits for de-duplicated weights are folded when the model is
loaded (``torchpipe_lite.backends.model.onnx_import``).
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import sys
import warnings
from pathlib import Path

logger = logging.getLogger(__name__)


class ExportError(ValueError):
    """The model cannot be exported as asked: an unknown architecture or unusable weights."""


def classifier_archs() -> list[str]:
    """The image classifiers torchvision defines (its ``models`` module, not detection etc.)."""
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def check_arch(arch: str) -> str:
    """``arch`` when torchvision defines that classifier; else an ``ExportError`` naming the
    nearest ones."""
    known = classifier_archs()
    if arch in known:
        return arch
    near = difflib.get_close_matches(arch, known, n=3)
    hint = f" (did you mean {', '.join(near)}?)" if near else ""
    raise ExportError(
        f"unknown architecture {arch!r}{hint}; torchvision's classifiers: {', '.join(known)}"
    )


def build_classifier(arch: str, weights_path: str | os.PathLike[str] | None = None):
    """A torchvision classifier in eval mode: weights from ``weights_path``, or seeded random."""
    import torch
    import torchvision

    check_arch(arch)
    torch.manual_seed(0)
    model = torchvision.models.get_model(arch, weights=None)
    if weights_path is not None:
        model.load_state_dict(_read_weights(Path(weights_path), arch, model))
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


def _read_weights(path: Path, arch: str, model) -> dict:
    """The state_dict in ``path``, checked against ``model``: every mismatch is one clear
    ``ExportError``, never a traceback from deep inside torch."""
    import torch

    if not path.is_file():
        raise ExportError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"{path} is not a readable state_dict file: {first_line}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise ExportError(f"{path} holds a {type(state).__name__}, not a state_dict")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshapen = sorted(
        key
        for key in set(expected) & set(state)
        if getattr(state[key], "shape", None) != expected[key].shape
    )
    if missing or unexpected or misshapen:
        parts = [
            f"{label} {len(keys)} (e.g. {keys[0]})"
            for label, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("wrong shape", misshapen),
            )
            if keys
        ]
        raise ExportError(
            f"weights {path} do not fit {arch}: {'; '.join(parts)} (weights of another "
            "architecture? pass the matching --arch)"
        )
    return state


def export_classifier(
    arch: str,
    output_path: str | os.PathLike[str],
    weights_path: str | os.PathLike[str] | None = None,
    opset: int = 17,
    *,
    image_size: int = 224,
) -> Path:
    """Export ``arch`` to ``output_path`` (input "input" Nx3x``image_size``² float, output
    "output" Nx<classes>, dynamic N); returns the path."""
    import torch

    output = Path(output_path)
    output.parent.mkdir(parents=True, exist_ok=True)
    model = build_classifier(arch, weights_path)
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
    """The command line; 2 with a one-line reason when the export cannot be done."""
    parser = argparse.ArgumentParser(
        prog="python -m service.tools.export_model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--arch", default="resnet50", help="a torchvision classifier (default: resnet50)"
    )
    parser.add_argument("--weights", help="a torchvision state_dict file (.pth); none: random")
    parser.add_argument("--output", help="ONNX file to write (default: models/<arch>.onnx)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    parser.add_argument(
        "--image-size", type=int, default=224, help="input height and width (default: 224)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    output = args.output or f"models/{args.arch}.onnx"
    try:
        export_classifier(args.arch, output, args.weights, args.opset, image_size=args.image_size)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
