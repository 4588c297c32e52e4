"""The seam between the RPC layer and a handler: one method per RPC, none of them blocking.

The loop thread decodes a call and calls the handler's method for it with the call's
``CallContext`` first, then the IDL's arguments. The method must return at once: it starts
the work and answers later, through the context, from whichever thread finishes it (a
pipeline's worker, a handler's own pool thread). So no thread waits per request in this
layer, and one loop thread serves every connection. A method that raises before answering
is answered with what it raised.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from service.call_context import CallContext
from service.gen.inference.ttypes import InferenceParams


class CallHandler(Protocol):
    """What the RPC layer needs of a handler: ``InferenceService``'s methods, each written
    once, taking the call's context first. Called on the loop thread: return at once."""

    def ping_async(self, call: CallContext) -> None: ...

    def infer_batch_async(self, call: CallContext, params: InferenceParams) -> None: ...

    def infer_topk_async(self, call: CallContext, params: InferenceParams, k: int) -> None: ...

    def infer_many_async(
        self, call: CallContext, params_list: list[InferenceParams], k: int
    ) -> None: ...

    def stats_async(self, call: CallContext) -> None: ...


def handler_methods(handler: CallHandler) -> dict[str, Callable[..., None]]:
    """Each RPC's name in the IDL, and the handler's method that serves it."""
    return {
        "ping": handler.ping_async,
        "infer_batch": handler.infer_batch_async,
        "infer_topk": handler.infer_topk_async,
        "infer_many": handler.infer_many_async,
        "stats": handler.stats_async,
    }


class CallDispatcher:
    """Starts each decoded call on its handler method (on the loop thread)."""

    def __init__(self, handler: CallHandler, rpc_names: frozenset[str] | set[str]):
        self._methods = handler_methods(handler)
        missing = set(rpc_names) - set(self._methods)
        if missing:  # the IDL grew a method this seam does not know: a bug, found at start
            raise TypeError(f"no handler method for {', '.join(sorted(missing))}")

    def start(self, call: CallContext, args: tuple[Any, ...]) -> None:
        """Start ``call``; a failure before the work started answers it at once."""
        try:
            self._methods[call.method](call, *args)
        except Exception as error:
            call.fail(error)
