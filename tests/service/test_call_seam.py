"""The seam between the RPC layer and the handlers: the protocol, the call context, the rules."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
from thrift.Thrift import TApplicationException

from service.call_context import CallContext
from service.gen.inference import InferenceService
from service.handlers.handler import ClassifierHandler
from service.rpc.call_handler import CallDispatcher, CallHandler, handler_methods
from service.rpc.codec import service_methods

SERVICE = Path(__file__).resolve().parents[2] / "service"


class Answers:
    """What a call was answered with, in order."""

    def __init__(self) -> None:
        self.given: list[tuple[object, BaseException | None]] = []

    def __call__(self, value: object, error: BaseException | None) -> None:
        self.given.append((value, error))


def test_every_rpc_of_the_idl_has_one_handler_method_taking_the_context_first():
    assert set(handler_methods(ClassifierHandler)) == set(service_methods(InferenceService))
    for name, method in handler_methods(ClassifierHandler).items():
        idl = inspect.signature(getattr(InferenceService.Iface, name)).parameters
        ours = list(inspect.signature(method).parameters)
        assert ours[:2] == ["self", "call"], name
        assert len(ours) == len(idl) + 1, name  # the IDL's arguments after the context


def test_the_handler_protocol_is_what_the_rpc_layer_calls():
    wanted = {name for name in vars(CallHandler) if name.endswith("_async")}
    assert wanted == {method.__name__ for method in handler_methods(ClassifierHandler).values()}


def test_a_method_that_raises_before_answering_is_answered_with_what_it_raised():
    class Raising:
        def __getattr__(self, name):
            def method(call, *args):
                raise TApplicationException(TApplicationException.UNKNOWN, name)

            return method

    answers = Answers()
    dispatcher = CallDispatcher(Raising(), set(service_methods(InferenceService)))
    dispatcher.start(CallContext("ping", answers), ())
    ((value, error),) = answers.given
    assert value is None and str(error) == "ping_async"


def test_a_dispatcher_refuses_a_handler_that_lacks_an_idl_method():
    class Partial:
        ping_async = infer_batch_async = infer_topk_async = infer_many_async = stats_async = None

    with pytest.raises(TypeError, match="no handler method for reload"):
        CallDispatcher(Partial(), {"ping", "reload"})


def test_a_call_is_answered_once_and_its_answered_hooks_run_first():
    answers = Answers()
    call = CallContext("infer_batch", answers)
    order: list[str] = []
    call.when_answered(lambda: order.append(f"released before {len(answers.given)} answers"))
    call.send("first")
    call.fail(RuntimeError("second"))  # dropped, logged
    assert answers.given == [("first", None)]
    assert order == ["released before 0 answers"]


def test_cancelling_runs_the_hooks_registered_so_far_and_any_registered_later_at_once():
    call = CallContext("infer_many", Answers())
    cancelled: list[str] = []
    call.when_cancelled(lambda: cancelled.append("queued work"))
    assert not call.cancelled and cancelled == []
    call.cancel()
    assert call.cancelled and cancelled == ["queued work"]
    call.when_cancelled(lambda: cancelled.append("late work"))
    assert cancelled == ["queued work", "late work"]


def test_a_call_has_no_deadline_until_it_is_admitted_with_one():
    call = CallContext("infer_batch", Answers())
    assert call.timeout_s() is None and not call.expired()
    call.deadline_s = 0.0  # long past
    assert call.expired() and call.timeout_s() == 0.001


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_handlers_never_import_the_rpc_layer_and_it_never_probes_a_handler():
    for path in sorted((SERVICE / "handlers").glob("*.py")):
        rpc = [name for name in _imports(path) if name.startswith("service.rpc")]
        assert rpc == [], f"{path.name} imports {rpc}"
    for path in sorted((SERVICE / "rpc").glob("*.py")):
        assert "getattr(handler" not in path.read_text(), path.name
        assert "getattr(self._handler" not in path.read_text(), path.name
