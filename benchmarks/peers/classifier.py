"""The peers' model code: our preprocessing and our engine, built from our shipped config.

Every peer server (LitServe's ``LitAPI``, Triton's Python backend) runs this, so that the only
difference from our pipelined server is the serving: the same OpenCV decode, resize to the
config's size, BGR->RGB and uint8 tensor as the locked baseline
(``service/handlers/main_trt.py``), and the same engine,
``SyncTensor[Sequential[TorchTensor,ClassScores]]`` from the config's model node (precision,
mean/std, device; fp16 with CUDA graphs on CUDA).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import service.handlers.class_scores  # noqa: F401  (registers ClassScores, which the engine names)
import torchpipe_lite as tp
from service.handlers.preprocessing import ImagePreprocessing
from service.service_config import DEFAULT_CONFIG, load_service_config
from torchpipe_lite.backends.model.torch_tensor import running_precision
from torchpipe_lite.backends.params import param_device

logger = logging.getLogger(__name__)

#: The engine every peer runs: the shipped config's model node, with the top class per batch.
ENGINE_BACKEND = "SyncTensor[Sequential[TorchTensor,ClassScores]]"


class NotAnImageError(ValueError):
    """The request's bytes are not a decodable image."""


@dataclass(frozen=True)
class ClassifierSettings:
    """What a peer's model is built from: our config, its model file, the device, the batch."""

    config: str = str(DEFAULT_CONFIG)
    model: str | None = None  # None: the config's model file
    device: str | None = None  # None: the config's, else cuda if available, else cpu
    max_batch_size: int = 8  # the engine's batch range is 1..max_batch_size


@dataclass(frozen=True)
class Top1:
    """One image's most probable class index and its softmax probability."""

    label: int
    probability: float


class Classifier:
    """Our preprocessing and engine in one object; ``classify`` runs one batch of tensors."""

    def __init__(self, settings: ClassifierSettings):
        config = load_service_config(settings.config, settings.model, settings.device)
        self._preprocessing = ImagePreprocessing.of(config)
        params = config.engine_params(batch_size=settings.max_batch_size)
        params["min"] = 1  # one CUDA graph per batch size 1..max, as the pipeline's model node
        device = param_device(params)
        self.device = str(device)
        self.precision = running_precision(params, on_gpu=device.type == "cuda")
        self.model_path = config.model_path
        logger.info(
            "building %s on %s (%s, batch 1..%d) from %s",
            ENGINE_BACKEND,
            self.device,
            self.precision,
            settings.max_batch_size,
            config.path,
        )
        self._engine = tp.create_backend(ENGINE_BACKEND, params)
        self.max_batch_size = settings.max_batch_size

    def preprocess(self, data: bytes) -> torch.Tensor:
        """JPEG (or other image) bytes -> uint8 1x3xHxW RGB tensor; ``NotAnImageError`` if the
        bytes do not decode (``InvalidInputError`` for a header declaring too many pixels)."""
        tensor = self._preprocessing.tensor(data)
        if tensor is None:
            raise NotAnImageError(f"{len(data)} bytes that are not a decodable image")
        return tensor

    def classify(self, tensors: list[torch.Tensor]) -> list[Top1]:
        """The top class of each preprocessed image, in order; at most ``max_batch_size``
        per engine call (a longer list is cut into engine batches)."""
        results: list[Top1] = []
        for start in range(0, len(tensors), self.max_batch_size):
            batch: list[dict[str, Any]] = [
                {"data": tensor} for tensor in tensors[start : start + self.max_batch_size]
            ]
            self._engine.forward(batch)
            results += [
                Top1(item["result"].best_index, item["result"].best_score) for item in batch
            ]
        return results

    def describe(self) -> dict[str, Any]:
        """What runs, for the result record: engine, device, precision, model, batch range."""
        return {
            "engine": ENGINE_BACKEND,
            "device": self.device,
            "precision": str(self.precision),
            "model": str(self.model_path),
            "batch_range": [1, self.max_batch_size],
        }

    def close(self) -> None:
        """Frees the engine."""
        self._engine.close()


def settings_from_paths(
    config: str | Path | None, model: str | Path | None, device: str | None, max_batch_size: int
) -> ClassifierSettings:
    """``ClassifierSettings`` with absolute paths (peers run in other processes and folders)."""
    return ClassifierSettings(
        config=str(Path(config or DEFAULT_CONFIG).resolve()),
        model=None if model is None else str(Path(model).resolve()),
        device=device,
        max_batch_size=max_batch_size,
    )
