"""Makes sure the model file exists: on a fresh clone, exports one with random weights."""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

#: torchvision architectures ``service.export_model`` can write.
EXPORTABLE_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


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
    banner = "!" * 78
    logger.warning(
        "%s\nmodel file %s is missing: exporting torchvision %s with SEEDED RANDOM WEIGHTS.\n"
        "Its labels and scores are meaningless. For trained weights run:\n"
        "  python -m service.export_model --arch %s --weights PATH --output %s\n%s",
        banner,
        model_path,
        chosen,
        chosen,
        model_path,
        banner,
    )
    model_path.parent.mkdir(parents=True, exist_ok=True)
    export_resnet(chosen, model_path)
    logger.warning("exported %s (%d bytes)", model_path, model_path.stat().st_size)
    return True
