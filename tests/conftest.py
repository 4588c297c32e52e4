"""Shared fixtures: the sample photographs, small exported ResNet models, live servers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import torchpipe_lite.testing  # noqa: F401  (registers the fake backends the tests name)
from tests.image_samples import IMAGES_DIR, SMALL_PHOTOS
from tests.pipeline_fakes import Gate
from tests.support.live_service import LiveService, live_service


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


@pytest.fixture(scope="session")
def resnet18_onnx(tmp_path_factory) -> Path:
    """A ResNet18 with seeded random weights, exported once per test session."""
    from service.tools.export_model import export_classifier

    return export_classifier("resnet18", tmp_path_factory.mktemp("models") / "resnet18.onnx")


@pytest.fixture(scope="session")
def photos() -> dict[str, bytes]:
    """The sample photographs (tests/data/images), by file stem."""
    found = {path.stem: path.read_bytes() for path in sorted(IMAGES_DIR.glob("*.jpg"))}
    assert len(found) >= 5, f"expected the sample photographs in {IMAGES_DIR}"
    return found


@pytest.fixture(scope="session")
def baseline_service(resnet18_onnx) -> Iterator[LiveService]:
    with live_service("baseline", resnet18_onnx) as service:
        yield service


@pytest.fixture(scope="session")
def pipelined_service(resnet18_onnx) -> Iterator[LiveService]:
    with live_service("pipelined", resnet18_onnx) as service:
        yield service


@pytest.fixture(params=["baseline", "pipelined"])
def service(request) -> LiveService:
    """Each handler in turn."""
    return request.getfixturevalue(f"{request.param}_service")


@pytest.fixture
def gate():
    """The shared gate of ``TestGate`` batches, closed for the test and opened after it."""
    Gate.gate.clear()
    Gate.entered = threading.Semaphore(0)
    yield Gate
    Gate.gate.set()
