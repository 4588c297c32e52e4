"""The pipelined handler: JPEG bytes go straight into a torchpipe_lite pipeline; no lock."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import torchpipe_lite as tp
from service.call_context import CallContext
from service.core_split import core_nodes
from service.handlers.admission import Admission, RequestLimits, Ticket
from service.handlers.handler import ClassifierHandler, Outcome
from service.service_config import ServiceConfig, ServiceConfigError

logger = logging.getLogger(__name__)


class PipelinedHandler(ClassifierHandler):
    """Decode, resize, colour and the model run as pipeline stages, each with its own
    instances and dynamic batching; the RPC loop thread only submits the bytes, and the
    pipeline's thread that ends a request answers it."""

    handler_name = "pipelined"

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
        front = config.front_pipeline()
        self._local: tp.Pipeline | None = None
        if config.core_socket is None:
            logger.info("building the pipeline from %s", config.path)
        else:
            logger.info(
                "building the front of %s; the GPU core at %s runs %s",
                config.path,
                config.core_socket,
                ", ".join(f"[{name}]" for name in core_nodes(config.tables, config.model_node)),
            )
        if front is None:  # the core runs every stage: call it (one per GPU: a pool) directly
            sockets = str(config.core_socket).split(",")
            self._pipeline: tp.Pipeline | tp.RemotePipeline | tp.RemotePool = (
                tp.connect(sockets[0]) if len(sockets) == 1 else tp.connect(sockets)
            )
        else:
            self._pipeline = self._local = tp.pipe(front)
            try:
                _check_no_inline_roots(config, self._local)
            except ServiceConfigError:
                self._local.close()
                raise
        if config.model_node in self._pipeline.node_names:
            low, high = self._pipeline.batch_range(config.model_node)
            logger.info(
                "pipeline ready: %s; model node [%s] batches %d..%d",
                " -> ".join(self._pipeline.node_names),
                config.model_node,
                low,
                high,
            )
        else:
            logger.info("front ready: %s", " -> ".join(self._pipeline.node_names))

    def start_classify(
        self,
        images: Sequence[bytes],
        call: CallContext,
        ticket: Ticket | None,
        done: Callable[[list[Outcome]], None],
    ) -> None:
        timeout_s = call.timeout_s()
        if len(images) == 1:  # the common call: the request's own end is the answer

            def ended(request: dict, error: BaseException | None) -> None:
                if ticket is not None:
                    ticket.image_ended(error)
                done([error if error is not None else request["result"]])

            handle = self._pipeline.dispatch(
                _request(images[0], ticket), ended, strict=True, timeout_s=timeout_s
            )
            call.when_cancelled(handle.cancel)
            return
        # The call has as many images in the pipeline at once as it holds of the admission
        # budget: its next image takes the slot of one that ended.
        window = self.limits.call_window if ticket is None else ticket.held
        _WindowedCall(self._pipeline, images, done, call, ticket, window).start()

    def images_at_once(self) -> int | None:
        """A multi-image call runs a window at a time."""
        return self.limits.call_window

    def node_figures(self) -> list[tp.NodeStats]:
        """This process's stages (a front's own; the core reports its stages itself)."""
        return [] if self._local is None else list(self._local.stats().values())

    def batch_range(self, node: str) -> tuple[int, int]:
        """The batch range ``node`` settled on."""
        return self._pipeline.batch_range(node)

    def close(self) -> None:
        logger.info("closing the pipeline")
        self._pipeline.close()
        super().close()


class _WindowedCall:
    """The images of one multi-image call, fed into the pipeline ``window`` at a time.

    Submitting all of a 256-image call at once would put it ahead of every call that arrives
    after it, in every stage's queue; fed a window at a time, the calls of other clients
    interleave with it. Images still unsubmitted when the client goes away are not run.
    """

    def __init__(
        self,
        pipeline: tp.Pipeline | tp.RemotePipeline,
        images: Sequence[bytes],
        done: Callable[[list[Outcome]], None],
        call: CallContext,
        ticket: Ticket | None,
        window: int,
    ):
        self._pipeline = pipeline
        self._images = images
        self._done = done
        self._call = call
        self._ticket = ticket
        self._window = max(1, window)
        self._outcomes: list[Outcome] = [None] * len(images)
        self._lock = threading.Lock()
        self._next = 0  # the next image to submit
        self._ended = 0
        self._pumping = False
        self._handles: dict[int, Any] = {}  # submitted and not ended, for cancelling

    def start(self) -> None:
        self._call.when_cancelled(self._cancel)
        self._pump()

    def _pump(self) -> None:
        """Submit images while the window has room; one thread at a time pumps (another
        that finds it pumping leaves the work to it), so a refusal that ends an image on the
        submitting thread does not recurse."""
        with self._lock:
            if self._pumping:
                return
            self._pumping = True
        while True:
            with self._lock:
                submitted = self._next - self._ended
                if self._next >= len(self._images) or submitted >= self._window:
                    self._pumping = False
                    return
                position = self._next
                self._next += 1
            if self._call.cancelled:
                self._end(position, None, tp.RequestCancelledError("the client went away"))
                continue
            handle = self._pipeline.dispatch(
                _request(self._images[position], self._ticket),
                lambda request, error, at=position: self._end(at, request, error),
                strict=True,
                timeout_s=self._call.timeout_s(),
            )
            with self._lock:
                if self._outcomes[position] is None:  # not ended already
                    self._handles[position] = handle

    def _end(self, position: int, request: dict | None, error: BaseException | None) -> None:
        if self._ticket is not None:
            self._ticket.image_ended(error)
        self._outcomes[position] = error if error is not None else request["result"]
        with self._lock:
            self._ended += 1
            self._handles.pop(position, None)
            last = self._ended == len(self._images)
        if last:
            self._done(self._outcomes)
        else:
            self._pump()

    def _cancel(self) -> None:
        with self._lock:
            handles = list(self._handles.values())
        for handle in handles:
            handle.cancel()


def _request(image: bytes, ticket: Ticket | None) -> dict:
    """The pipeline request for ``image``: with the header admission read, when it did."""
    return {"data": image} if ticket is None else ticket.request(image)


def _check_no_inline_roots(config: ServiceConfig, pipeline: tp.Pipeline) -> None:
    """Refuse a pipeline whose first stage runs inline: it would run on the thread that
    submits, which here is the RPC layer's one loop thread (docs/decisions/0004)."""
    built = pipeline.config
    inline = [node.name for node in built.nodes if node.name in built.roots and node.inline]
    if inline:
        raise ServiceConfigError(
            f"{config.path}: node [{inline[0]}] is inline and first in the pipeline; the "
            "service submits from its RPC loop thread, which must not run a stage: drop "
            "`inline = true` from it"
        )
