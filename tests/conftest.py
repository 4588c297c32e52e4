"""Shared fixtures: the sample photographs and small exported ResNet models."""

from __future__ import annotations

from pathlib import Path

import pytest

import torchpipe_lite.testing  # noqa: F401  (registers the fake backends the tests name)
from tests.image_samples import IMAGES_DIR, SMALL_PHOTOS


@pytest.fixture(scope="session")
def photo_bytes() -> dict[str, bytes]:
    """The encoded bytes of the small sample photographs, by file name."""
    return {name: (IMAGES_DIR / name).read_bytes() for name in SMALL_PHOTOS}


@pytest.fixture(scope="session")
def all_photo_paths() -> list[Path]:
    """Every sample photograph."""
    return sorted(IMAGES_DIR.glob("*.jpg"))


@pytest.fixture(scope="session")
def resnet18_small_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ResNet18 (seeded random weights) exported to ONNX with a 3x64x64 input: cheap on a CPU.

    The same weights come back from ``service.tools.export_model.build_classifier("resnet18")``.
    """
    from service.tools.export_model import export_classifier

    path = tmp_path_factory.mktemp("models") / "resnet18_64.onnx"
    return export_classifier("resnet18", path, image_size=64)
