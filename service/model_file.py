"""Makes sure the model file exists: on a fresh clone, exports the default one (random weights)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)


class ModelFileError(FileNotFoundError):
    """The model file the user named does not exist (and no export of it was asked for)."""


def arch_for(model_path: Path, arch: str | None) -> str:
    """The architecture to export to ``model_path``: ``arch`` when given, else the file's stem
    when it names a torchvision classifier (``models/resnet18.onnx`` -> resnet18), else
    resnet50."""
    from service.tools.export_model import check_arch, classifier_archs

    if arch is not None:
        return check_arch(arch)
    stem = model_path.name.split(".")[0].lower()
    return stem if stem in classifier_archs() else "resnet50"


def ensure_model(model_path: Path, arch: str | None = None, *, user_given: bool = False) -> bool:
    """Exports ``model_path`` when it is missing and may be exported; returns True when it did.

    A path the user gave (``--model``, or their own config) must exist: a typo must not start
    a server on a random model under that name. Only the shipped configs' model is exported
    on first start, or any path when ``arch`` asks for an export. The export has seeded random
    weights (nothing is downloaded), so its predictions are meaningless: say so loudly.
    Trained weights: ``python -m service.tools.export_model --weights``.
    """
    if model_path.exists():
        if arch is not None:
            logger.info("--arch %s ignored: the model file %s exists", arch, model_path)
        return False
    if user_given and arch is None:
        raise ModelFileError(
            f"model file {model_path} does not exist (name an existing file, or add --arch NAME "
            "to export a torchvision classifier with random weights there)"
        )
    if model_path.suffix.lower() != ".onnx":
        raise ModelFileError(
            f"model file {model_path} does not exist (only .onnx files can be exported here)"
        )
    from service.tools.export_model import export_classifier

    chosen = arch_for(model_path, arch)
    logger.warning(
        "model file %s is missing: exporting torchvision %s with random weights (nothing is "
        "downloaded). For a real classifier: python -m service.tools.export_model --arch %s "
        "--weights PATH --output %s",
        model_path,
        chosen,
        chosen,
        model_path,
    )
    # Written aside, then renamed: an interrupted export must not leave a truncated model.
    partial = model_path.with_name(f".{model_path.name}.{os.getpid()}.partial.onnx")
    try:
        export_classifier(chosen, partial)
        os.replace(partial, model_path)
    finally:
        partial.unlink(missing_ok=True)
    return True
