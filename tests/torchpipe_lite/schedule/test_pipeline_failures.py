"""The scheduler with fake backends when things go wrong: errors, overload, deadlines, close."""

from __future__ import annotations

import threading

import pytest

import torchpipe_lite as tp
from tests.pipeline_fakes import WAIT_S
from torchpipe_lite import Backend, register_backend


def test_one_bad_request_does_not_fail_its_batch_mates(gate):
    config = {
        "a": {"backend": "TestGate", "max": 8, "next": "b"},
        "b": {"backend": "Fail", "fail_on": "bad", "max": 8},
    }
    with tp.pipe(config) as model:
        blocker = model.submit({"data": "first"})
        assert gate.entered.acquire(timeout=WAIT_S)
        futures = [model.submit({"data": data}) for data in ["ok1", "bad", "ok2", "ok3"]]
        gate.gate.set()
        assert blocker.result(timeout=WAIT_S)["result"] == "first"
        assert futures[0].result(timeout=WAIT_S)["result"] == "ok1"
        with pytest.raises(tp.BackendError) as caught:
            futures[1].result(timeout=WAIT_S)
        assert [f.result(timeout=WAIT_S)["result"] for f in futures[2:]] == ["ok2", "ok3"]
        assert max(model.stats()["b"].batch_sizes) > 1  # they really were batched together
    error = caught.value
    assert (error.node, error.backend) == ("b", "Fail")
    assert isinstance(error.__cause__, RuntimeError) and "bad" in str(error)


def test_blocking_call_raises_the_typed_error():
    with tp.pipe({"a": {"backend": "Fail"}}) as model, pytest.raises(tp.BackendError, match="'a'"):
        model({"data": 1})


def test_invalid_input_error_reaches_the_caller_as_is():
    @register_backend("TestRejects")
    class Rejects(Backend):
        def forward(self, batch):
            raise tp.InvalidInputError("not an image")

    with (
        tp.pipe({"a": {"backend": "TestRejects"}}) as model,
        pytest.raises(tp.InvalidInputError) as caught,
    ):
        model({"data": b"xx"})
    assert caught.value.node == "a" and "not an image" in str(caught.value)


def test_overload_is_rejected_at_once(gate):
    with tp.pipe({"a": {"backend": "TestGate", "max_queue_size": 2}}) as model:
        running = model.submit({"data": 0})
        assert gate.entered.acquire(timeout=WAIT_S)
        queued = [model.submit({"data": index}) for index in (1, 2)]
        with pytest.raises(tp.OverloadedError) as caught:
            model({"data": 3}, timeout_s=WAIT_S)  # would time out if it queued
        assert caught.value.retryable and caught.value.node == "a"
        rejected = model.submit({"data": 4})
        assert isinstance(rejected.exception(timeout=0), tp.OverloadedError)
        gate.gate.set()
        assert [f.result(timeout=WAIT_S)["result"] for f in [running, *queued]] == [0, 1, 2]
        assert model.stats()["a"].requests_rejected == 2


def test_a_full_queue_downstream_fails_only_the_requests_it_refuses(gate):
    config = {
        "a": {"backend": "Identity", "next": "b"},
        "b": {"backend": "TestGate", "max_queue_size": 1},
    }
    with tp.pipe(config) as model:
        running = model.submit({"data": 0})
        assert gate.entered.acquire(timeout=WAIT_S)  # b's only instance is busy
        queued = model.submit({"data": 1})  # b's queue holds one (a runs one at a time, in order)
        refused = model.submit({"data": 2})
        assert isinstance(refused.exception(timeout=WAIT_S), tp.OverloadedError)
        gate.gate.set()
        assert [f.result(timeout=WAIT_S)["result"] for f in (running, queued)] == [0, 1]


def test_request_timeout_fails_without_running(gate):
    config = {"a": {"backend": "TestGate", "request_timeout": 1}}
    with tp.pipe(config) as model:
        running = model.submit({"data": 0})
        assert gate.entered.acquire(timeout=WAIT_S)
        late = model.submit({"data": 1})
        assert not gate.gate.wait(0.02)  # let the 1 ms request_timeout pass while it queues
        gate.gate.set()
        assert running.result(timeout=WAIT_S)["result"] == 0
        with pytest.raises(tp.RequestTimeoutError):
            late.result(timeout=WAIT_S)
        stats = model.stats()["a"]
    assert stats.requests_timed_out == 1 and stats.inferences == 1


def test_a_cancelled_request_is_dropped_at_the_next_stage_unrun(gate):
    config = {
        "a": {"backend": "TestGate", "next": "b"},
        "b": {"backend": "TestAddNode", "tag": "b"},
    }
    with tp.pipe(config) as model:
        running = model.submit({"data": 0})
        assert gate.entered.acquire(timeout=WAIT_S)  # the only instance of a is busy
        ended = threading.Semaphore(0)
        outcome: list[BaseException | None] = []

        def on_done(request, error):
            outcome.append(error)
            ended.release()

        in_flight = model.dispatch({"data": 1}, on_done)  # it waits for a behind the gate
        waiting = model.dispatch({"data": 2}, on_done)
        waiting.cancel()
        in_flight.cancel()  # too late for a (it may be batched already), in time for b
        gate.gate.set()
        assert running.result(timeout=WAIT_S)["result"] == (0, "b")
        assert ended.acquire(timeout=WAIT_S) and ended.acquire(timeout=WAIT_S)
        stats = model.stats()
    assert all(isinstance(error, tp.RequestCancelledError) for error in outcome), outcome
    assert stats["a"].requests_cancelled + stats["b"].requests_cancelled == 2
    assert stats["b"].inferences == 1  # only the request nobody cancelled reached b


def test_timeout_s_is_a_deadline_that_drops_the_request_where_it_waits(gate):
    with tp.pipe({"a": {"backend": "TestGate"}}) as model:
        running = model.submit({"data": 0})
        assert gate.entered.acquire(timeout=WAIT_S)
        with pytest.raises(tp.RequestTimeoutError, match="no answer within"):
            model({"data": 1}, timeout_s=0.01)
        late = model.submit({"data": 2}, timeout_s=0.01)
        assert not gate.gate.wait(0.05)  # let the deadline pass while it queues
        gate.gate.set()
        assert running.result(timeout=WAIT_S)["result"] == 0
        with pytest.raises(tp.RequestTimeoutError, match="deadline"):
            late.result(timeout=WAIT_S)
        stats = model.stats()["a"]
    assert stats.inferences == 1  # neither late request ran
    assert stats.requests_cancelled + stats.requests_timed_out == 2


def test_close_with_work_in_flight_loses_nothing(gate):
    model = tp.pipe(
        {
            "a": {"backend": "TestGate", "max": 4, "next": "b"},
            "b": {"backend": "Sleep", "sleep_ms": 1, "max": 2},
        }
    )
    futures = [model.submit({"data": index}) for index in range(50)]
    assert gate.entered.acquire(timeout=WAIT_S)
    closer = threading.Thread(target=model.close)
    closer.start()
    gate.gate.set()
    closer.join(timeout=WAIT_S)
    assert not closer.is_alive()
    assert [future.result(timeout=0)["result"] for future in futures] == list(range(50))
    with pytest.raises(tp.PipelineClosedError):
        model({"data": 1})


def test_backend_init_failure_names_node_and_backend():
    @register_backend("TestBrokenInit")
    class BrokenInit(Backend):
        def init(self, params):
            raise OSError("device missing")

    with pytest.raises(tp.errors.BackendInitError, match="device missing") as caught:
        tp.pipe(
            {"ok": {"backend": "Identity", "next": "bad"}, "bad": {"backend": "TestBrokenInit"}}
        )
    assert (caught.value.node, caught.value.backend) == ("bad", "TestBrokenInit")


def test_configured_max_beyond_the_backend_is_refused():
    @register_backend("TestMaxTwo")
    class MaxTwo(Backend):
        def max(self):
            return 2

    with pytest.raises(tp.errors.BackendInitError, match="exceeds"):
        tp.pipe({"a": {"backend": "TestMaxTwo", "max": 4}})
    with tp.pipe({"a": {"backend": "S[Identity,TestMaxTwo]"}}) as model:
        assert model.batch_range("a") == (1, 2)


def test_bad_requests_are_refused_up_front():
    with tp.pipe({"a": {"backend": "Identity"}}) as model:
        with pytest.raises(tp.errors.InvalidRequestError):
            model({"no_data": 1})
        with pytest.raises(tp.errors.InvalidRequestError):
            model.submit("not a dict")
