"""The shipped pipeline configs load cleanly and define one and the same engine."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import torchpipe_lite as tp
from service.service_config import DEFAULT_CONFIG, load_service_config

CONFIGS = sorted(DEFAULT_CONFIG.parent.glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_config_loads_without_warnings(path: Path, caplog, tmp_path):
    model = tmp_path / "model.onnx"
    model.touch()  # the loader checks that the file exists; nothing here reads it
    with caplog.at_level(logging.WARNING):
        config = tp.load_config(load_service_config(path, model).pipeline)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert len(config.roots) == 1


def test_every_config_has_the_same_engine(tmp_path):
    model = tmp_path / "model.onnx"
    configs = [load_service_config(path, model) for path in CONFIGS]
    assert len(configs) >= 2
    engines = {(c.model_node, repr(sorted(c.engine_params(1).items()))) for c in configs}
    assert len(engines) == 1, engines
    assert configs[0].engine_backend == "SyncTensor[Sequential[TorchTensor,ClassScores]]"
    assert configs[0].model_path == model
