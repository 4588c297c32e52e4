"""The adapter from a blocking ``classify`` to the non-blocking seam, on the pool threads.

A handler built on it writes ``classify`` as plain blocking code; each call runs it on one of
the handler's pool threads (``service.handlers.pool``), which answers the call.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence

from service.call_context import CallContext
from service.handlers.admission import Ticket
from service.handlers.handler import ClassifierHandler, Outcome
from torchpipe_lite.errors import RequestCancelledError


class BlockingHandler(ClassifierHandler):
    """A handler whose ``classify`` blocks: each call's images are classified on one of its
    pool threads, one call per thread (the thread-pool server's model, and the baseline's).

    A call whose client went away while it waited for a thread is not run (its images end
    cancelled, and the call is answered cancelled); one whose deadline passed is answered
    TIMEOUT unrun."""

    @abc.abstractmethod
    def classify(self, images: Sequence[bytes]) -> list[Outcome]:
        """Logits of each image, in order. Must not raise for one image's failure: return it."""

    def start_classify(
        self,
        images: Sequence[bytes],
        call: CallContext,
        ticket: Ticket | None,
        done: Callable[[list[Outcome]], None],
    ) -> None:
        def work() -> None:
            if call.cancelled:  # nobody reads the answer: ``done`` answers it cancelled
                done([RequestCancelledError("the client went away")] * len(images))
            elif ticket is not None and call.expired():
                call.fail(self.expired(call.method, ticket))
            else:
                done(self.classify(images))

        self.blocking.run(call, work)
