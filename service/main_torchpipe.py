"""The pipelined handler: JPEG bytes go straight into a torchpipe_lite pipeline; no lock."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torchpipe_lite as tp
from service.handler import ClassifierHandler, Outcome, RequestLimits
from service.service_config import ServiceConfig

logger = logging.getLogger(__name__)


class PipelinedHandler(ClassifierHandler):
    """Decode, resize, colour and the model run as pipeline stages, each with its own
    instances and dynamic batching; the RPC thread only submits the bytes and waits."""

    handler_name = "pipelined"

    def __init__(self, config: ServiceConfig, *, device: str, limits: RequestLimits | None = None):
        super().__init__(device=device, limits=limits)
        logger.info(
            "building the pipeline from %s%s",
            config.path,
            f" (model node [{config.model_node}] in the engine at {config.engine_socket})"
            if config.engine_socket
            else "",
        )
        self._pipeline = tp.pipe(config.pipeline_to_build())
        low, high = self._pipeline.batch_range(config.model_node)
        logger.info(
            "pipeline ready: %s; model node [%s] batches %d..%d",
            " -> ".join(self._pipeline.node_names),
            config.model_node,
            low,
            high,
        )

    def classify(self, images: Sequence[bytes]) -> list[Outcome]:
        requests = [{"data": image} for image in images]
        if len(requests) == 1:  # the common call: wait on the pipeline, no future needed
            try:
                self._pipeline(requests[0])
            except Exception as exc:
                return [exc]
            return [requests[0].get("result")]
        # Submit every image before waiting on any, so they batch together downstream.
        futures = [self._pipeline.submit(request) for request in requests]
        outcomes: list[Outcome] = []
        for future in futures:
            try:
                outcomes.append(future.result().get("result"))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    def node_figures(self) -> list[tp.NodeStats]:
        return list(self._pipeline.stats().values())

    def batch_range(self, node: str) -> tuple[int, int]:
        """The batch range ``node`` settled on."""
        return self._pipeline.batch_range(node)

    def close(self) -> None:
        logger.info("closing the pipeline")
        self._pipeline.close()
