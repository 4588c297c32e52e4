"""The Thrift interface both handlers share: validation, top-k, errors, counters, stats."""

from __future__ import annotations

import abc
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import ClassVar

import torch

import torchpipe_lite as tp
from service.errors import (
    code_name,
    inference_error,
    printable_uuid,
    to_inference_error,
)
from service.gen.inference.ttypes import (
    ConnectionStats,
    ErrorCode,
    InferenceError,
    InferenceParams,
    InferenceResult,
    ItemResult,
    Prediction,
    ServerStats,
    WireNodeStats,
)
from service.handlers.admission import Admission, RequestLimits, Ticket, call_images
from service.handlers.class_scores import Scores
from service.handlers.outcomes import RequestOutcomes
from service.handlers.predictions import top_k
from service.ops.gpu_stats import GpuReader
from service.ops.ops_server import ServiceState
from service.ops.wire_stats import wire_node_stats
from service.rpc.connection import Reply

logger = logging.getLogger(__name__)

#: Largest ``k`` a client may ask for (ImageNet has 1000 classes).
MAX_TOP_K = 1000

#: What ``classify`` returns per image: its scores (or logits, from a model node without
#: ClassScores), ``None`` (no result: not an image), or the error.
Outcome = Scores | torch.Tensor | None | BaseException


class ClassifierHandler(abc.ABC):
    """Implements every RPC of ``InferenceService`` on top of ``classify``.

    Subclasses provide the engine: ``classify`` (logits per image, each image failing on its
    own), ``node_figures`` and ``close``. Every failure reaches the client as an
    ``InferenceError`` and is logged once, with the request's uuid and code, at a bounded rate.
    A call whose client went away before its answer is neither: it is counted cancelled.

    A subclass that can also classify without blocking (``classify_async``) lists the
    inference methods in ``async_methods``: the server then starts them on its loop thread and
    the thread that finishes the work replies (``service.rpc.calls``).
    """

    #: "baseline" or "pipelined": reported by ``stats()``.
    handler_name: ClassVar[str]
    #: Methods the server runs as ``<name>_async(*args, reply)`` instead of on a pool thread.
    async_methods: ClassVar[tuple[str, ...]] = ("ping",)

    def __init__(
        self,
        *,
        device: str,
        limits: RequestLimits | None = None,
        admission: Admission | None = None,
    ):
        self.device = device
        self.limits = limits or RequestLimits()
        #: The work this process admits at once (``admit``, called before every call runs).
        self.admission = admission or Admission()
        #: Each image's outcome, counted; the lines requests cause, rate-limited.
        self._outcomes = RequestOutcomes(logger)
        self._failed = self._outcomes.failed
        self._connections: Callable[[], ConnectionStats] | None = None
        self._started_s = time.monotonic()
        self._state: ServiceState | None = None
        self._gpu_reader: GpuReader | None = None

    def observe(self, *, state: ServiceState | None, gpu_reader: GpuReader | None) -> None:
        """Let ``stats()`` report readiness (``state``) and the GPUs (``gpu_reader``)."""
        self._state = state
        self._gpu_reader = gpu_reader

    def observe_connections(self, connections: Callable[[], ConnectionStats]) -> None:
        """Let ``stats()`` report the connection layer (its server calls this)."""
        self._connections = connections

    # -- admission (the RPC layer calls these on its loop thread) ------------------------------

    def admit(self, method: str, args: tuple) -> Ticket | None:
        """The ticket of a call about to run, or the ``InferenceError`` to answer it with at
        once (OVERLOADED: the process holds all the work it admits; TOO_LARGE: the call's
        images declare too many pixels). Calls without images need none."""
        datas = call_images(method, args, self.limits.max_images_per_call)
        if datas is None:
            return None
        try:
            return self.admission.admit(datas, self.images_at_once())
        except InferenceError as error:
            self._outcomes.refused(error.code, len(datas))
            self._outcomes.log.log(
                f"refused-{error.code}",
                logging.WARNING,
                "call refused (%s): %s",
                code_name(error.code),
                error.message,
            )
            raise
        except Exception as exc:  # weighing the call failed: still a typed, counted answer
            raise self._failed(to_inference_error(exc, None), exc, images=len(datas)) from None

    def expired(self, method: str, ticket: Ticket) -> InferenceError:
        """The answer to a call whose deadline passed before it could start (counted)."""
        self._outcomes.refused(ErrorCode.TIMEOUT, ticket.images)
        timeout_s = self.admission.limits.request_timeout_s
        self._outcomes.log.log(
            "expired", logging.WARNING, "%s waited over %g s unrun", method, timeout_s
        )
        return inference_error(ErrorCode.TIMEOUT, f"waited over {timeout_s:g} s before it ran")

    def abandoned(self, method: str, images: int) -> BaseException:
        """The answer to a call whose client went away before it: counted cancelled (not a
        failure: a client that gives up is no fault of the server's), logged at INFO."""
        return self._outcomes.cancelled(method, images)

    # -- what a handler implements -----------------------------------------------------------

    @abc.abstractmethod
    def classify(self, images: Sequence[bytes]) -> list[Outcome]:
        """Logits of each image, in order. Must not raise for one image's failure: return it."""

    @abc.abstractmethod
    def node_figures(self) -> list[tp.NodeStats]:
        """Per-stage figures (the library's, with each instance's placement), in order."""

    def classify_async(
        self, images: Sequence[bytes], done: Callable[[list[Outcome]], None], reply: Reply
    ) -> None:
        """Start classifying ``images``; ``done(outcomes)`` is called once, from any thread.

        ``reply`` is the call's: its ticket's deadline bounds the work, and work still waiting
        when its client goes away is cancelled (``reply.when_abandoned``). Only handlers that
        list inference methods in ``async_methods`` implement it."""
        raise NotImplementedError(f"{type(self).__name__} classifies only synchronously")

    def images_at_once(self) -> int | None:
        """Images of one call this handler works on at once (None: all of them): what a
        multi-image call holds of the admission budget."""
        return None

    def batch_range(self, node: str) -> tuple[int, int]:
        """The (min, max) batch size ``node`` runs with (1..1 unless the handler batches)."""
        return 1, 1

    def node_stats(self) -> list[WireNodeStats]:
        """Per-stage figures as ``stats()`` sends them."""
        return [wire_node_stats(figures) for figures in self.node_figures()]

    def close(self) -> None:  # noqa: B027 - optional
        """Release the engine; called once the server has stopped."""

    # -- the RPCs ------------------------------------------------------------------------------

    def ping(self) -> None:  # noqa: B027 - nothing to do: answering is the check
        """Liveness check."""

    def infer_batch(self, params: InferenceParams) -> InferenceResult:
        """Top-1 of one image (the reference call)."""
        best = self._predict_one(params, 1)[0]
        return InferenceResult(label=best.label, score=best.score)

    def infer_topk(self, params: InferenceParams, k: int) -> list[Prediction]:
        """The ``k`` most probable classes of one image."""
        self._check_k(k, getattr(params, "uuid", None))
        return self._predict_one(params, k)

    def infer_many(self, params_list: list[InferenceParams], k: int) -> list[ItemResult]:
        """Several images, each with its own outcome, in order."""
        results, pending = self._many_start(params_list, k)
        outcomes = self.classify([params_list[position].data for position in pending])
        self._many_finish(params_list, k, results, pending, outcomes)
        self._log_many(results)
        return results

    def _many_start(
        self, params_list: list[InferenceParams], k: int
    ) -> tuple[list[ItemResult], list[int]]:
        """Check an ``infer_many`` call: its results so far, and the positions to classify."""
        if params_list is None:
            raise self._failed(inference_error(ErrorCode.INVALID_ARGUMENT, "no params"), None)
        logger.debug("infer_many received: %d images", len(params_list))
        self._check_k(k, None)
        if len(params_list) > self.limits.max_images_per_call:
            raise self._failed(
                inference_error(
                    ErrorCode.TOO_LARGE,
                    f"{len(params_list)} images in one call; the limit is "
                    f"{self.limits.max_images_per_call}",
                ),
                None,
            )
        results = [ItemResult(uuid=getattr(params, "uuid", None)) for params in params_list]
        pending: list[int] = []
        for position, params in enumerate(params_list):
            error = self._check_params(params)
            if error is None:
                pending.append(position)
            else:
                results[position].error = self._failed(error, None, log=False)
        return results, pending

    def _many_finish(
        self,
        params_list: list[InferenceParams],
        k: int,
        results: list[ItemResult],
        pending: list[int],
        outcomes: list[Outcome],
    ) -> None:
        for position, outcome in zip(pending, outcomes, strict=True):
            try:
                uuid = params_list[position].uuid
                results[position].predictions = self._predictions(outcome, k, uuid, log=False)
            except InferenceError as error:
                results[position].error = error

    def _log_many(self, results: list[ItemResult]) -> None:
        """One line for the failed images of an ``infer_many`` call, however many failed."""
        codes = Counter(code_name(r.error.code) for r in results if r.error is not None)
        if codes:
            self._outcomes.log.log(
                "infer_many",
                logging.INFO,
                "infer_many: %d of %d images failed (%s)",
                sum(codes.values()),
                len(results),
                ", ".join(f"{code} x{count}" for code, count in codes.most_common()),
            )

    # -- the RPCs without a waiting thread (for handlers with ``classify_async``) -------------

    def ping_async(self, reply: Reply) -> None:
        """Liveness check, answered on the loop thread."""
        reply.send(None)

    def infer_batch_async(self, params: InferenceParams, reply: Reply) -> None:
        """``infer_batch``, answered from the thread that finishes the image."""

        def done(outcomes: list[Outcome]) -> None:
            if reply.abandoned:
                reply.fail(self.abandoned("infer_batch", 1))
                return
            try:
                best = self._predictions(outcomes[0], 1, params.uuid)[0]
            except InferenceError as error:
                reply.fail(error)
                return
            reply.send(InferenceResult(label=best.label, score=best.score))

        self._start_one(params, done, reply)

    def infer_topk_async(self, params: InferenceParams, k: int, reply: Reply) -> None:
        """``infer_topk``, answered from the thread that finishes the image."""
        self._check_k(k, getattr(params, "uuid", None))

        def done(outcomes: list[Outcome]) -> None:
            if reply.abandoned:
                reply.fail(self.abandoned("infer_topk", 1))
                return
            try:
                reply.send(self._predictions(outcomes[0], k, params.uuid))
            except InferenceError as error:
                reply.fail(error)

        self._start_one(params, done, reply)

    def infer_many_async(self, params_list: list[InferenceParams], k: int, reply: Reply) -> None:
        """``infer_many``, answered once the last of its images is finished."""
        results, pending = self._many_start(params_list, k)
        if not pending:
            self._log_many(results)
            reply.send(results)
            return

        def done(outcomes: list[Outcome]) -> None:
            if reply.abandoned:
                reply.fail(self.abandoned("infer_many", len(pending)))
                return
            self._many_finish(params_list, k, results, pending, outcomes)
            self._log_many(results)
            reply.send(results)

        self.classify_async([params_list[position].data for position in pending], done, reply)

    def _start_one(self, params: InferenceParams, done: Callable, reply: Reply) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("request received uuid=%s", printable_uuid(getattr(params, "uuid", None)))
        error = self._check_params(params)
        if error is not None:
            reply.fail(self._failed(error, None))
            return
        self.classify_async([params.data], done, reply)

    def stats(self) -> ServerStats:
        """The server's counters and per-stage figures."""
        counts = self._outcomes.counts()
        return ServerStats(
            handler=self.handler_name,
            device=self.device,
            uptime_s=time.monotonic() - self._started_s,
            requests_ok=counts.ok,
            requests_failed=sum(counts.failures_by_code.values()),
            failures_by_code=counts.failures_by_code,
            nodes=self.node_stats(),
            gpus=None if self._gpu_reader is None else self._gpu_reader.read(),
            ready=None if self._state is None else self._state.ready,
            admission=self.admission.stats(),
            connections=None if self._connections is None else self._connections(),
            requests_cancelled=counts.cancelled,
        )

    # -- shared steps --------------------------------------------------------------------------

    def _predict_one(self, params: InferenceParams, k: int) -> list[Prediction]:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("request received uuid=%s", printable_uuid(getattr(params, "uuid", None)))
        error = self._check_params(params)
        if error is not None:
            raise self._failed(error, None)
        (outcome,) = self.classify([params.data])  # params checked above
        return self._predictions(outcome, k, params.uuid)

    def _predictions(
        self, outcome: Outcome, k: int, uuid: str | None = None, *, log: bool = True
    ) -> list[Prediction]:
        """Top-k of one image's outcome, counting it; raises its ``InferenceError``."""
        if isinstance(outcome, BaseException):
            raise self._failed(to_inference_error(outcome, uuid), outcome, log=log)
        if outcome is None:
            error = inference_error(ErrorCode.INVALID_IMAGE, "not a decodable image", uuid)
            raise self._failed(error, None, log=log)
        try:
            predictions = top_k(outcome, k)
        except Exception as exc:
            raise self._failed(to_inference_error(exc, uuid), exc, log=log) from exc
        self._outcomes.succeeded()
        return predictions

    def _check_params(self, params: InferenceParams | None) -> InferenceError | None:
        if params is None:
            return inference_error(ErrorCode.INVALID_ARGUMENT, "no params")
        uuid = params.uuid
        if not isinstance(params.data, bytes | bytearray):
            return inference_error(ErrorCode.INVALID_IMAGE, "no image data", uuid)
        if len(params.data) > self.limits.max_image_bytes:
            return inference_error(
                ErrorCode.TOO_LARGE,
                f"image of {len(params.data)} bytes; the limit is {self.limits.max_image_bytes}",
                uuid,
            )
        return None

    def _check_k(self, k: int, uuid: str | None) -> None:
        if not isinstance(k, int) or not 1 <= k <= MAX_TOP_K:
            error = inference_error(
                ErrorCode.INVALID_ARGUMENT, f"k must be in 1..{MAX_TOP_K}, got {k}", uuid
            )
            raise self._failed(error, None)
