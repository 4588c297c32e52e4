"""The pipelined handler: JPEG bytes go straight into a torchpipe_lite pipeline; no lock."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import torchpipe_lite as tp
from service.handler import ClassifierHandler, Outcome, RequestLimits
from service.service_config import ServiceConfig

logger = logging.getLogger(__name__)


class PipelinedHandler(ClassifierHandler):
    """Decode, resize, colour and the model run as pipeline stages, each with its own
    instances and dynamic batching; the RPC thread only submits the bytes and waits."""

    handler_name = "pipelined"
    async_methods = ("ping", "infer_batch", "infer_topk", "infer_many")

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
        built = self._pipeline.config
        if any(node.inline for node in built.nodes if node.name in built.roots):
            # Inline stages run on the thread that submits: the server's pool threads, not
            # its one loop thread.
            self.async_methods = ("ping",)
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
                self._pipeline(requests[0], strict=True)
            except Exception as exc:
                return [exc]
            return [requests[0]["result"]]
        # Submit every image before waiting on any, so they batch together downstream.
        futures = [self._pipeline.submit(request, strict=True) for request in requests]
        outcomes: list[Outcome] = []
        for future in futures:
            try:
                outcomes.append(future.result()["result"])
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    def classify_async(
        self, images: Sequence[bytes], done: Callable[[list[Outcome]], None]
    ) -> None:
        if len(images) == 1:  # the common call: the request's own end is the answer
            self._pipeline.dispatch(
                {"data": images[0]},
                lambda request, error: done([error if error is not None else request["result"]]),
                strict=True,
            )
            return
        outcomes: list[Outcome] = [None] * len(images)
        remaining = [len(images)]
        lock = threading.Lock()

        def one_done(position: int, request: dict, error: BaseException | None) -> None:
            outcomes[position] = error if error is not None else request["result"]
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                done(outcomes)

        for position, image in enumerate(images):
            self._pipeline.dispatch(
                {"data": image},
                lambda request, error, at=position: one_done(at, request, error),
                strict=True,
            )

    def node_figures(self) -> list[tp.NodeStats]:
        return list(self._pipeline.stats().values())

    def batch_range(self, node: str) -> tuple[int, int]:
        """The batch range ``node`` settled on."""
        return self._pipeline.batch_range(node)

    def close(self) -> None:
        logger.info("closing the pipeline")
        self._pipeline.close()
