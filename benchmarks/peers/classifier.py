"""The peers' model code: our image stages and our engine, built from our shipped config.

Every peer server (LitServe's ``LitAPI``, Triton's Python backend) runs this, so that the only
difference from our pipelined server is the serving. The image work follows the config:

- CPU image stages (``resnet50.toml``): per request, the same OpenCV decode, resize to the
  config's size, BGR->RGB and uint8 tensor as the locked baseline
  (``service/handlers/main_trt.py``);
- a GPU image stage (``resnet50_gpu_decode.toml``, its backend naming ``DecodeTensor``): per
  request only the header check, then per batch that node's own backend, nvJPEG decode, GPU
  resize and RGB in one call (``GpuImageStage``), as our pipeline runs it.

The engine is ``SyncTensor[Sequential[TorchTensor,ClassScores]]`` from the config's model node
(precision, mean/std, device; fp16 with CUDA graphs on CUDA).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import service.handlers.class_scores  # noqa: F401  (registers ClassScores, which the engine names)
import torchpipe_lite as tp
from benchmarks.peers.gpu_images import GpuImageStage, gpu_image_node
from service.handlers.preprocessing import ImagePreprocessing
from service.service_config import DEFAULT_CONFIG, load_service_config
from torchpipe_lite.errors import RequestError
from torchpipe_lite.extend import param_device, running_precision

logger = logging.getLogger(__name__)

#: The engine every peer runs: the shipped config's model node, with the top class per batch.
ENGINE_BACKEND = "SyncTensor[Sequential[TorchTensor,ClassScores]]"

#: What ``Classifier.preprocess`` returns and ``classify`` takes: a decoded uint8 tensor, or
#: with a GPU image stage the checked encoded bytes.
Prepared = torch.Tensor | bytes


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
    """Our image stages and engine in one object; ``classify`` runs one batch."""

    def __init__(self, settings: ClassifierSettings):
        config = load_service_config(settings.config, settings.model, settings.device)
        params = config.engine_params(batch_size=settings.max_batch_size)
        params["min"] = 1  # one CUDA graph per batch size 1..max, as the pipeline's model node
        device = param_device(params)
        self.device = str(device)
        self.precision = running_precision(params, on_gpu=device.type == "cuda")
        self.model_path = config.model_path
        self._preprocessing = ImagePreprocessing.of(config)
        image_node = gpu_image_node(config)
        self._gpu_images = (
            None if image_node is None else GpuImageStage(image_node, device=self.device)
        )
        logger.info(
            "building %s on %s (%s, batch 1..%d) from %s; images: %s",
            ENGINE_BACKEND,
            self.device,
            self.precision,
            settings.max_batch_size,
            config.path,
            self.image_work,
        )
        self._engine = tp.create_backend(ENGINE_BACKEND, params)
        self.max_batch_size = settings.max_batch_size

    @property
    def image_work(self) -> str:
        """Where and how the images are decoded, for logs and the result record."""
        if self._gpu_images is None:
            return "OpenCV decode, resize and colour per request on the CPU"
        return f"per batch on {self.device}: {self._gpu_images.backend}"

    def preprocess(self, data: bytes) -> Prepared:
        """The per-request step: with CPU image stages, JPEG (or other image) bytes -> uint8
        1x3xHxW tensor; with a GPU image stage, the header check alone (the bytes are decoded
        per batch in ``classify``). ``NotAnImageError`` if the bytes are not an image,
        ``InvalidInputError`` for a header declaring too many pixels."""
        if self._gpu_images is not None:
            if not self._gpu_images.check(data):
                raise NotAnImageError(f"{len(data)} bytes that are not an image")
            return data
        tensor = self._preprocessing.tensor(data)
        if tensor is None:
            raise NotAnImageError(f"{len(data)} bytes that are not a decodable image")
        return tensor

    def classify(self, inputs: list[Prepared]) -> list[Top1 | RequestError]:
        """The top class of each preprocessed image, in order, or the typed error of an image
        the GPU image stage could not decode (that image alone); at most ``max_batch_size``
        per engine call (a longer list is cut into engine batches)."""
        results: list[Top1 | RequestError] = []
        for start in range(0, len(inputs), self.max_batch_size):
            chunk: list[Any] = inputs[start : start + self.max_batch_size]
            if self._gpu_images is not None:
                chunk = self._gpu_images.run(chunk)
            batch = [{"data": image} for image in chunk if not isinstance(image, RequestError)]
            if batch:
                self._engine.forward(batch)
            answers = iter(batch)
            results += [
                image if isinstance(image, RequestError) else _top1(next(answers)["result"])
                for image in chunk
            ]
        return results

    def describe(self) -> dict[str, Any]:
        """What runs, for the result record: engine, images, device, precision, model, batch."""
        return {
            "engine": ENGINE_BACKEND,
            "images": self.image_work,
            "device": self.device,
            "precision": str(self.precision),
            "model": str(self.model_path),
            "batch_range": [1, self.max_batch_size],
        }

    def close(self) -> None:
        """Frees the engine and the GPU image stage."""
        self._engine.close()
        if self._gpu_images is not None:
            self._gpu_images.close()


def _top1(scores: Any) -> Top1:
    return Top1(scores.best_index, scores.best_score)


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
