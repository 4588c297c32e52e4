"""The scheduler end to end with fake backends: concurrency, batching, branches, inline nodes."""

from __future__ import annotations

import threading
from concurrent.futures import wait

import pytest

import torchpipe_lite as tp
from tests.pipeline_fakes import WAIT_S, BarrierBackend, Gate, run_threads
from torchpipe_lite import Backend, register_backend


def test_single_request_result_and_stats():
    with tp.pipe({"a": {"backend": "Identity"}}) as model:
        request = {"data": 42}
        model(request)
        assert request["result"] == 42
        stats = model.stats()["a"]
        assert (stats.requests_ok, stats.inferences, stats.executions) == (1, 1, 1)


def test_sixteen_threads_thousands_of_requests_no_mixups():
    config = {
        "batching_timeout": 1,
        "first": {
            "backend": "TestAddNode",
            "tag": "first",
            "max": 8,
            "instance_num": 2,
            "next": "second",
        },
        "second": {"backend": "TestAddNode", "tag": "second", "max": 4, "instance_num": 3},
    }
    with tp.pipe(config) as model:

        def caller(index):
            for sequence in range(1000):
                value = index * 100_000 + sequence
                request = {"data": value}
                model(request)
                assert request["result"] == (value, "first", "second")

        run_threads(16, caller)
        stats = model.stats()
        assert stats["first"].requests_ok == stats["second"].requests_ok == 16_000
        assert max(stats["first"].batch_sizes) > 1, "no batch larger than 1 formed"
        assert max(stats["first"].batch_sizes) <= 8 and max(stats["second"].batch_sizes) <= 4


def test_batches_form_while_the_instance_is_busy(gate):
    with tp.pipe({"a": {"backend": "TestGate", "max": 4}}) as model:
        futures = [model.submit({"data": 0})]
        assert gate.entered.acquire(timeout=WAIT_S)  # the first batch (of one) is running
        futures += [model.submit({"data": index}) for index in range(1, 7)]
        gate.gate.set()
        wait(futures, timeout=WAIT_S)
        sizes = model.stats()["a"].batch_sizes
    assert sizes == {1: 1, 4: 1, 2: 1}


def test_four_instances_run_in_parallel():
    BarrierBackend.barrier = threading.Barrier(4)
    with tp.pipe({"a": {"backend": "TestBarrier", "instance_num": 4}}) as model:
        futures = [model.submit({"data": index}) for index in range(4)]
        threads = {future.result(timeout=WAIT_S)["result"] for future in futures}
    assert len(threads) == 4  # four distinct instance threads were inside forward together


def test_instances_are_initialised_on_their_own_threads():
    init_threads = []

    @register_backend("TestInitThread")
    class InitThread(Backend):
        def init(self, params):
            init_threads.append((params["instance_index"], threading.current_thread().name))

        def forward(self, batch):
            for item in batch:
                item["result"] = threading.current_thread().name

    with tp.pipe({"n": {"backend": "TestInitThread", "instance_num": 3}}) as model:
        request = {"data": 1}
        model(request)
    assert sorted(index for index, _ in init_threads) == [0, 1, 2]
    assert {name for _, name in init_threads} == {"tp-n-0", "tp-n-1", "tp-n-2"}
    assert request["result"] in {"tp-n-0", "tp-n-1", "tp-n-2"}


def test_no_result_ends_the_request_quietly():
    config = {
        "a": {"backend": "NoResult", "drop_on": "junk", "next": "b"},
        "b": {"backend": "Identity"},
    }
    with tp.pipe(config) as model:
        junk, good = {"data": "junk"}, {"data": "fine"}
        model([junk, good])
        assert "result" not in junk and good["result"] == "fine"
        assert model.stats()["b"].inferences == 1  # the junk request never reached b


def test_strict_turns_a_missing_result_into_an_error_naming_the_node():
    config = {
        "a": {"backend": "NoResult", "drop_on": "junk", "next": "b"},
        "b": {"backend": "Identity"},
    }
    with tp.pipe(config) as model:
        with pytest.raises(tp.NoResultError, match="without a result") as caught:
            model({"data": "junk"}, strict=True)
        assert caught.value.node == "a"
        good = {"data": "fine"}
        model(good, strict=True)  # a request with a result is untouched by strict
        assert good["result"] == "fine"
        future = model.submit({"data": "junk"}, strict=True)
        with pytest.raises(tp.NoResultError):
            future.result(timeout=WAIT_S)
        ended = threading.Event()
        errors: list[BaseException | None] = []

        def on_done(request, error):
            errors.append(error)
            ended.set()

        model.dispatch({"data": "junk"}, on_done, strict=True)
        assert ended.wait(WAIT_S)
        assert isinstance(errors[0], tp.NoResultError)


def test_strict_with_branches_fails_only_when_no_branch_produced_a_result():
    config = {
        "root": {"backend": "Identity", "next": "left,right"},
        "left": {"backend": "NoResult", "drop_on": 7},
        "right": {"backend": "NoResult", "drop_on": 7},
    }
    with tp.pipe(config) as model:
        with pytest.raises(tp.NoResultError):
            model({"data": 7}, strict=True)
        request = {"data": 8}
        model(request, strict=True)
        assert request["result"] == {"left": 8, "right": 8}


def test_branches_run_and_the_caller_gets_every_end():
    config = {
        "root": {"backend": "Identity", "next": "left,right"},
        "left": {"backend": "TestAddNode", "tag": "L"},
        "right": {"backend": "TestAddNode", "tag": "R", "next": "tail"},
        "tail": {"backend": "TestAddNode", "tag": "T"},
    }
    with tp.pipe(config) as model:
        request = {"data": 7}
        model(request)
    assert request["result"] == {"left": (7, "L"), "tail": (7, "R", "T")}


def test_node_name_picks_the_entry_and_is_required_with_several_roots():
    config = {
        "x": {"backend": "TestAddNode", "tag": "x"},
        "y": {"backend": "TestAddNode", "tag": "y"},
    }
    with tp.pipe(config) as model:
        request = {"data": 1, "node_name": "y"}
        model(request)
        assert request["result"] == (1, "y")
        with pytest.raises(tp.errors.InvalidRequestError, match="node_name"):
            model({"data": 1})
        with pytest.raises(tp.errors.InvalidRequestError, match="unknown"):
            model({"data": 1, "node_name": "z"})


def test_design_doc_custom_backend_example():
    @register_backend("Scale")
    class Scale(Backend):
        def init(self, params):
            self.k = float(params.get("k", 2))

        def forward(self, batch):
            for item in batch:
                item["result"] = item["data"] * self.k

        def max(self):
            return 8

    with tp.pipe({"s": {"backend": "Scale", "k": "3"}}) as model:
        requests = [{"data": value} for value in range(5)]
        model(requests)
        assert [request["result"] for request in requests] == [0, 3, 6, 9, 12]
        assert model.batch_range("s") == (1, 8)


def test_device_id_spreads_instances_round_robin_and_stats_show_it():
    @register_backend("TestPlaced")
    class Placed(Backend):
        def init(self, params):
            self.where = f"fake:{params['device_id']}"

        def forward(self, batch):
            for item in batch:
                item["result"] = self.where

        def placement(self):
            return self.where

    config = {"m": {"backend": "S[TestPlaced]", "instance_num": 4, "device_id": "0,1"}}
    with tp.pipe(config) as model:
        placements = model.stats()["m"].instance_placements
    assert placements == ["fake:0", "fake:1", "fake:0", "fake:1"]


def test_no_wait_for_a_fuller_batch_when_nothing_is_upstream(gate):
    @register_backend("TestBlockOn")
    class BlockOn(Backend):
        def forward(self, batch):
            if any(item["data"] == "block" for item in batch):
                Gate.entered.release()
                assert Gate.gate.wait(WAIT_S)
            for item in batch:
                item["result"] = item["data"]

    config = {
        "a": {"backend": "Identity", "next": "b"},
        # A 60 s batching window would hold a lone request for a minute, were it applied while
        # the other instance is busy and nothing more can arrive from upstream.
        "b": {"backend": "TestBlockOn", "instance_num": 2, "max": 8, "batching_timeout": 60_000},
    }
    with tp.pipe(config) as model:
        blocked = model.submit({"data": "block"})
        assert gate.entered.acquire(timeout=WAIT_S)  # one instance of b is now busy
        request = {"data": "free"}
        model(request, timeout_s=WAIT_S)
        assert request["result"] == "free"
        gate.gate.set()
        assert blocked.result(timeout=WAIT_S)["result"] == "block"


def test_inline_node_runs_on_the_callers_thread_with_one_instance_per_thread():
    @register_backend("TestThreadName")
    class ThreadName(Backend):
        def init(self, params):
            self.index = params["instance_index"]

        def forward(self, batch):
            for item in batch:
                item["result"] = (item["data"], threading.current_thread().name, self.index)

    config = {
        "pre": {"backend": "TestThreadName", "inline": True, "next": "post"},
        "post": {"backend": "Identity", "max": 4},
    }
    with tp.pipe(config) as model:
        seen = {}

        def caller(index):
            for sequence in range(50):
                request = {"data": sequence}
                model(request)
                data, thread, instance = request["result"]
                assert (data, thread) == (sequence, threading.current_thread().name)
                seen.setdefault(thread, set()).add(instance)

        run_threads(4, caller)
        stats = model.stats()["pre"]
    assert all(len(instances) == 1 for instances in seen.values())  # one instance per thread
    assert len({next(iter(i)) for i in seen.values()}) == 4  # and a different one each
    assert stats.instances == 5  # the four callers' and the one created at start-up
    assert stats.requests_ok == 200


def test_inline_node_isolates_errors_and_close_waits_for_it(gate):
    config = {
        "check": {"backend": "Fail", "fail_on": "bad", "inline": True, "next": "slow"},
        "slow": {"backend": "TestGate", "max": 8},
    }
    model = tp.pipe(config)
    with pytest.raises(tp.BackendError):
        model({"data": "bad"})
    futures = [model.submit({"data": index}) for index in range(5)]
    assert gate.entered.acquire(timeout=WAIT_S)
    closer = threading.Thread(target=model.close)
    closer.start()
    gate.gate.set()
    closer.join(timeout=WAIT_S)
    assert [future.result(timeout=0)["result"] for future in futures] == list(range(5))
    with pytest.raises(tp.PipelineClosedError):
        model({"data": 1})


def test_inline_refuses_a_minimum_batch():
    with pytest.raises(tp.errors.BackendInitError, match="inline"):
        tp.pipe({"a": {"backend": "Identity", "inline": "true", "min": 2, "max": 4}})
