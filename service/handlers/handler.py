"""The Thrift interface both handlers share: validation, top-k, errors, counters, stats."""

from __future__ import annotations

import abc
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch

import torchpipe_lite as tp
from service.call_context import CallContext
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
from service.handlers.pool import BlockingPool
from service.handlers.predictions import top_k
from service.ops.gpu_stats import GpuReader
from service.ops.ops_server import ServiceState
from service.ops.wire_stats import wire_node_stats

logger = logging.getLogger(__name__)

#: Largest ``k`` a client may ask for (ImageNet has 1000 classes).
MAX_TOP_K = 1000

#: What ``classify`` returns per image: its scores (or logits, from a model node without
#: ClassScores), ``None`` (no result: not an image), or the error.
Outcome = Scores | torch.Tensor | None | BaseException


class ClassifierHandler(abc.ABC):
    """Implements every RPC of ``InferenceService`` once, on top of ``start_classify``: the
    ``CallHandler`` of ``service.rpc.call_handler``, whose methods return at once and answer
    through the call's context from whichever thread finishes the work.

    Subclasses provide the engine: ``start_classify`` (logits per image, each image failing on
    its own), ``node_figures`` and ``close``; one whose engine blocks builds on
    ``service.handlers.blocking.BlockingHandler``. Every failure reaches the client as an
    ``InferenceError`` and is logged once, with the request's uuid and code, at a bounded rate.
    A call whose client went away before its answer is neither: it is counted cancelled.
    """

    #: "baseline" or "pipelined": reported by ``stats()``.
    handler_name: ClassVar[str]

    def __init__(
        self,
        *,
        device: str,
        limits: RequestLimits | None = None,
        admission: Admission | None = None,
        threads: int = 8,
    ):
        self.device = device
        #: Where the work that waits runs (``stats``, and a blocking engine's calls).
        self.blocking = BlockingPool(threads, name=f"{self.handler_name}-call")
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
        """Let ``stats()`` report the connection layer (``ThriftServer.connection_stats``)."""
        self._connections = connections

    # -- admission (each RPC with images asks first, on the loop thread) ----------------------

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
    def start_classify(
        self,
        images: Sequence[bytes],
        call: CallContext,
        ticket: Ticket | None,
        done: Callable[[list[Outcome]], None],
    ) -> None:
        """Start classifying ``images`` and return; ``done(outcomes)`` is called once, from any
        thread, with each image's outcome in order (an image's failure is its outcome).

        ``call`` bounds the work: its deadline, and its cancellation (work still waiting when
        its client goes away is dropped). ``ticket`` is the call's share of the admission
        budget (None: not admitted through it), told of each image that ends."""

    @abc.abstractmethod
    def node_figures(self) -> list[tp.NodeStats]:
        """Per-stage figures (the library's, with each instance's placement), in order."""

    def classify(self, images: Sequence[bytes]) -> list[Outcome]:
        """The outcomes of ``images``, waiting for them (for tools and tests: no RPC waits)."""
        finished = threading.Event()
        outcomes: list[list[Outcome]] = []

        def done(result: list[Outcome]) -> None:
            outcomes.append(result)
            finished.set()

        self.start_classify(images, CallContext("classify", _nobody), None, done)
        finished.wait()
        return outcomes[0]

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

    def close(self) -> None:
        """Release the engine; called once the server has stopped. Subclasses that hold
        more call this too."""
        self.blocking.close()

    # -- the RPCs (``service.rpc.call_handler.CallHandler``): each returns at once ------------

    def ping_async(self, call: CallContext) -> None:
        """Liveness check, answered on the loop thread."""
        call.send(None)

    def stats_async(self, call: CallContext) -> None:
        """``stats()``, on a pool thread: reading the GPUs may take a while."""
        self.blocking.run(call, lambda: call.send(self.stats()))

    def infer_batch_async(self, call: CallContext, params: InferenceParams) -> None:
        """Top-1 of one image (the reference call)."""
        ticket = self._admit_call(call, (params,))

        def answer(outcome: Outcome) -> InferenceResult:
            best = self._predictions(outcome, 1, params.uuid)[0]
            return InferenceResult(label=best.label, score=best.score)

        self._start_one(call, ticket, params, answer)

    def infer_topk_async(self, call: CallContext, params: InferenceParams, k: int) -> None:
        """The ``k`` most probable classes of one image."""
        ticket = self._admit_call(call, (params,))
        self._check_k(k, getattr(params, "uuid", None))
        self._start_one(
            call, ticket, params, lambda outcome: self._predictions(outcome, k, params.uuid)
        )

    def infer_many_async(
        self, call: CallContext, params_list: list[InferenceParams], k: int
    ) -> None:
        """Several images, each with its own outcome, in order; answered once the last of
        them is finished."""
        ticket = self._admit_call(call, (params_list, k))
        results, pending = self._many_start(params_list, k)
        if not pending:
            self._outcomes.log_failed_items(results)
            call.send(results)
            return

        def answer(outcomes: list[Outcome]) -> list[ItemResult]:
            self._many_finish(params_list, k, results, pending, outcomes)
            self._outcomes.log_failed_items(results)
            return results

        images = [params_list[position].data for position in pending]
        self._classify_then(call, ticket, images, answer)

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

    def _admit_call(self, call: CallContext, args: tuple) -> Ticket | None:
        """Admit ``call`` (raises its refusal): its deadline is the ticket's, and the ticket
        is given back when the call is answered."""
        ticket = self.admit(call.method, args)
        if ticket is not None:
            call.deadline_s = ticket.deadline_s
            call.when_answered(ticket.release)
        return ticket

    def _start_one(
        self,
        call: CallContext,
        ticket: Ticket | None,
        params: InferenceParams,
        answer: Callable[[Outcome], Any],
    ) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("request received uuid=%s", printable_uuid(getattr(params, "uuid", None)))
        error = self._check_params(params)
        if error is not None:
            raise self._failed(error, None)
        self._classify_then(call, ticket, [params.data], lambda outcomes: answer(outcomes[0]))

    def _classify_then(
        self,
        call: CallContext,
        ticket: Ticket | None,
        images: list[bytes],
        answer: Callable[[list[Outcome]], Any],
    ) -> None:
        """Classify ``images``, then answer ``call`` with ``answer(outcomes)``, or with what
        it raised; a call whose client went away is answered cancelled."""

        def done(outcomes: list[Outcome]) -> None:
            if call.cancelled:
                call.fail(self.abandoned(call.method, len(images)))
                return
            try:
                value = answer(outcomes)
            except Exception as error:
                call.fail(error)
                return
            call.send(value)

        self.start_classify(images, call, ticket, done)

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


def _nobody(_value: Any, _error: BaseException | None) -> None:
    """The answer of a call nobody made (``classify``): its outcomes go to ``done``."""
