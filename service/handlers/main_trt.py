"""The locked baseline handler: the reference's "pure TensorRT + lock" design, honestly.

Per request, on one of the handler's pool threads: decode (cv2.imdecode), resize to 224x224
(bilinear), BGR->RGB, uint8 1x3xHxW tensor; then the engine at batch 1 under ONE
``threading.Lock``; softmax, top-k.
Normalisation is not done here: the engine fuses mean/std (the very same work the pipeline's
engine does), so the two handlers differ only in scheduling. The engine is the pipeline
config's model node (``SyncTensor[TorchTensor]``, or ``SyncTensor[TensorrtTensor]`` where
TensorRT exists): same backend, model file, precision, mean/std and device.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import torch

import torchpipe_lite as tp
from service.handlers.admission import Admission, RequestLimits
from service.handlers.blocking import BlockingHandler
from service.handlers.handler import Outcome
from service.handlers.preprocessing import ImagePreprocessing
from service.service_config import ServiceConfig
from torchpipe_lite.extend import InstanceCounters

logger = logging.getLogger(__name__)


class BaselineHandler(BlockingHandler):
    """Preprocessing on the handler's pool threads (one call each), one engine at batch 1
    behind one lock."""

    handler_name = "baseline"

    def __init__(
        self,
        config: ServiceConfig,
        *,
        device: str,
        limits: RequestLimits | None = None,
        admission: Admission | None = None,
        threads: int = 8,
    ):
        super().__init__(device=device, limits=limits, admission=admission, threads=threads)
        self._preprocessing = ImagePreprocessing.of(config)
        self._backend = config.engine_backend
        logger.info("initialising the baseline engine %s at batch 1", self._backend)
        self._engine = tp.create_backend(self._backend, config.engine_params(batch_size=1))
        self._placement = self._engine.placement()
        self._lock = threading.Lock()
        # The scheduler's own counters, updated only while holding the lock. Reported under
        # the config's model node's name, as the pipelined handler's engine node is.
        self._model_node = config.model_node
        self._counters = InstanceCounters()
        self._waiting_lock = threading.Lock()
        self._waiting = 0  # requests waiting for the engine lock: the baseline's queue

    def preprocess(self, data: bytes) -> torch.Tensor | None:
        """JPEG bytes -> uint8 1x3xHxW RGB tensor (channels-last memory); None if no image."""
        return self._preprocessing.tensor(data)

    def classify(self, images: Sequence[bytes]) -> list[Outcome]:
        return [self._classify_one(image) for image in images]

    def images_at_once(self) -> int | None:
        """One: a call's images run one after the other on its thread."""
        return 1

    def _classify_one(self, data: bytes) -> Outcome:
        try:
            tensor = self.preprocess(data)
            if tensor is None:
                return None
            item = {"data": tensor}
            waited_s = time.monotonic()
            with self._waiting_lock:
                self._waiting += 1
            with self._lock:
                started_s = time.monotonic()
                with self._waiting_lock:
                    self._waiting -= 1
                failed = 0
                try:
                    self._engine.forward([item])
                except Exception:
                    failed = 1
                    raise
                finally:
                    self._counters.record_batch(
                        size=1,
                        compute_s=time.monotonic() - started_s,
                        queue_s=started_s - waited_s,
                        failed=failed,
                    )
            return item.get("result")
        except Exception as exc:
            return exc

    def node_figures(self) -> list[tp.NodeStats]:
        figures = tp.NodeStats(
            node=self._model_node,
            backend=self._backend,
            instances=1,
            instance_placements=[self._placement],
        )
        with self._lock:
            self._counters.add_to(figures)
        with self._waiting_lock:
            figures.queue_length = self._waiting
        return [figures]

    def close(self) -> None:
        logger.info("closing the baseline engine")
        super().close()  # the pool's calls first: they use the engine
        with self._lock:
            self._engine.close()
