"""Makes sure the model file exists: on a fresh clone, exports one with random weights."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from service.export_model import ARCHS as EXPORTABLE_ARCHS

logger = logging.getLogger(__name__)


def arch_for(model_path: Path, arch: str | None) -> str:
    """The architecture to export to ``model_path``: ``arch`` when given, else the file's stem
    when it names one (``models/resnet18.onnx`` -> resnet18), else resnet50."""
    if arch is not None:
        if arch not in EXPORTABLE_ARCHS:
            raise ValueError(f"cannot export {arch!r}; choose one of {', '.join(EXPORTABLE_ARCHS)}")
        return arch
    stem = model_path.name.split(".")[0].lower()
    return stem if stem in EXPORTABLE_ARCHS else "resnet50"


def ensure_model(model_path: Path, arch: str | None = None) -> bool:
    """Exports ``model_path`` when it is missing; returns True when it did.

    The export has seeded random weights (nothing is downloaded), so its predictions are
    meaningless: say so loudly. Trained weights: ``python -m service.export_model --weights``.
    """
    if model_path.exists():
        return False
    if model_path.suffix.lower() != ".onnx":
        raise FileNotFoundError(
            f"model file {model_path} does not exist (only .onnx files can be exported here)"
        )
    from service.export_model import export_resnet

    chosen = arch_for(model_path, arch)
    logger.warning(
        "model file %s is missing: exporting torchvision %s with random weights (nothing is "
        "downloaded). For a real classifier: python -m service.export_model --arch %s "
        "--weights PATH --output %s",
        model_path,
        chosen,
        chosen,
        model_path,
    )
    # Written aside, then renamed: an interrupted export must not leave a truncated model.
    partial = model_path.with_name(f".{model_path.name}.{os.getpid()}.partial.onnx")
    try:
        export_resnet(chosen, partial)
        os.replace(partial, model_path)
    finally:
        partial.unlink(missing_ok=True)
    return True
