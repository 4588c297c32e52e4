"""What became of a handler's requests: counted by outcome, and logged at a bounded rate."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass

from thrift.Thrift import TApplicationException

from service.errors import code_name, is_internal, printable_uuid
from service.gen.inference.ttypes import InferenceError, ItemResult
from service.ops.log_limit import LogLimiter

#: The answer to a call whose client went away before it (it reaches no one).
CLIENT_GONE = TApplicationException(TApplicationException.UNKNOWN, "the client went away")


@dataclass(frozen=True)
class OutcomeCounts:
    """Images answered with predictions, with an ``InferenceError`` (by code), and those whose
    client went away before their answer."""

    ok: int
    failures_by_code: dict[int, int]
    cancelled: int


class RequestOutcomes:
    """Counts each image's outcome; every line a request causes goes through ``log``, at most
    one per kind a second (a client can make every request fail, or give up on every one).
    Thread-safe."""

    def __init__(self, logger: logging.Logger):
        self.log = LogLimiter(logger)
        self._lock = threading.Lock()
        self._ok = 0
        self._cancelled = 0
        self._failures_by_code: Counter[int] = Counter()

    def succeeded(self) -> None:
        """One image answered with predictions."""
        with self._lock:
            self._ok += 1

    def counts(self) -> OutcomeCounts:
        """The counts so far."""
        with self._lock:
            return OutcomeCounts(self._ok, dict(self._failures_by_code), self._cancelled)

    def refused(self, code: int, images: int) -> None:
        """``images`` refused with ``code`` before they ran (logged by the caller)."""
        with self._lock:
            self._failures_by_code[code] += images

    def failed(
        self,
        error: InferenceError,
        cause: BaseException | None,
        *,
        log: bool = True,
        images: int = 1,
    ) -> InferenceError:
        """Count ``images`` failed with ``error`` and log it (INTERNAL at ERROR with the
        ``cause``'s traceback, the rest at INFO; ``log=False``: the caller sums them up, but
        INTERNAL is always logged); returns ``error`` for raising or returning."""
        with self._lock:
            self._failures_by_code[error.code] += images
        internal = is_internal(error)
        if not log and not internal:
            return error
        uuid, code = printable_uuid(error.uuid), code_name(error.code)
        if internal:
            self.log.log(
                code, logging.ERROR, "request failed uuid=%s code=%s", uuid, code, exc_info=cause
            )
        else:
            self.log.log(
                code, logging.INFO, "request failed uuid=%s code=%s: %s", uuid, code, error.message
            )
        return error

    def cancelled(self, method: str, images: int) -> TApplicationException:
        """Count ``images`` of a ``method`` call whose client went away before the answer
        (no fault of the server's: neither ok nor failed, logged at INFO); returns the answer
        to end the call with."""
        with self._lock:
            self._cancelled += images
        self.log.log(
            "cancelled", logging.INFO, "%s: the client went away before the answer", method
        )
        return CLIENT_GONE

    def log_failed_items(self, results: list[ItemResult]) -> None:
        """One line for the failed images of an ``infer_many`` call, however many failed."""
        codes = Counter(code_name(r.error.code) for r in results if r.error is not None)
        if codes:
            self.log.log(
                "infer_many",
                logging.INFO,
                "infer_many: %d of %d images failed (%s)",
                sum(codes.values()),
                len(results),
                ", ".join(f"{code} x{count}" for code, count in codes.most_common()),
            )
