"""Classify a whole album of images with one request: MapReduce in examples/album.toml.

    python examples/classify_album.py [--model models/resnet50.onnx] IMAGE [IMAGE ...]

Prints each image's top class. The model must exist (``python -m service.tools.export_model``
writes one; its weights are random unless you give ``--weights``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torchpipe_lite as tp

ALBUM = Path(__file__).with_name("album.toml")


def classify_album(images: list[bytes], model: Path) -> list:
    """Each image's logits (a 1 x classes tensor), in order, from one request."""
    config = tp.load_config(ALBUM.read_text().replace("models/resnet50.onnx", str(model)))
    with tp.pipe(config) as pipeline:
        request = {"data": images}
        pipeline(request, strict=True)
        batches = pipeline.stats()["classify"]
    print(
        f"{len(images)} images in {batches.executions} model batches "
        f"(mean {batches.mean_batch_size:.1f})",
        file=sys.stderr,
    )
    return request["result"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/resnet50.onnx"))
    parser.add_argument("images", nargs="+", type=Path)
    args = parser.parse_args(argv)
    if not args.model.is_file():
        parser.error(f"{args.model} does not exist (python -m service.tools.export_model)")
    logits = classify_album([path.read_bytes() for path in args.images], args.model)
    for path, scores in zip(args.images, logits, strict=True):
        print(f"{path}: class {int(scores.argmax())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
