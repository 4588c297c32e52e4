"""Fixtures shared by the GPU tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def resnet18_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ResNet18 with seeded random weights, exported once per test session."""
    from service.tools.export_model import export_classifier

    return export_classifier("resnet18", tmp_path_factory.mktemp("gpu_models") / "resnet18.onnx")
