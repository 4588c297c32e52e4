"""Programs and configurations written as TorchPipe documents them run here: its Python names,
its config forms, and its semantics (the behaviour asserted is TorchPipe's, from its docs and
tests; the code is ours). The configs of ``tests/data/torchpipe/v0`` are TorchPipe's own."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest

import torchpipe_lite as tp
from torchpipe_lite.backends.instance_groups import plan_pieces

V0 = Path(__file__).resolve().parents[1] / "data" / "torchpipe" / "v0"


class AddOne:
    """A TorchPipe-style Python backend: no base class, string parameters, batches of one."""

    def init(self, params: dict[str, str]) -> None:
        self.step = int(params.get("step", "1"))
        self.sizes: list[int] = []

    def forward(self, batch: list[dict[str, Any]]) -> None:
        assert len(batch) == 1  # TorchPipe's default max() for a Python backend is 1
        batch[0]["result"] = batch[0]["data"] + self.step


class RecordSizes(tp.Backend):
    """result = data; remembers every batch size it was given (the tests read ``SIZES``)."""

    SIZES: ClassVar[list[int]] = []
    LOCK: ClassVar[threading.Lock] = threading.Lock()

    def forward(self, batch):
        with self.LOCK:
            self.SIZES.append(len(batch))
        for item in batch:
            item["result"] = item["data"]


tp.register_backend(AddOne, "CompatAddOne")
tp.register_backend(RecordSizes, "CompatRecordSizes")


def test_torchpipe_names_exist_with_torchpipe_values():
    assert (tp.TASK_DATA_KEY, tp.TASK_RESULT_KEY, tp.TASK_BOX_KEY) == ("data", "result", "_box")
    assert (tp.TASK_EVENT_KEY, tp.TASK_INFO_KEY, tp.TASK_NODE_NAME_KEY) == (
        "event",
        "_info",
        "node_name",
    )
    assert tp.Status.Run is tp.Status.RUN and tp.Status.Continue is tp.Status.RUN
    assert tp.Status.Error is tp.Status.ERROR and tp.Status.SerialSkip is tp.Status.SERIAL_SKIP


def test_parse_toml_flattens_logical_nodes_and_keeps_top_level_keys_global(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('backend = "Identity"\n[in]\nnext = "rec"\n[rec]\n[rec.2]\nnext = "x"\n')
    config = tp.parse_toml(path)
    assert config == {
        "global": {"backend": "Identity"},
        "in": {"next": "rec"},
        "rec": {},
        "rec.2": {"next": "x"},
    }


def test_python_class_backend_by_name_and_as_python_bracket():
    for backend in ("CompatAddOne", "Python[CompatAddOne]"):
        with tp.pipe({"backend": backend, "step": 2, "instance_num": 2}) as model:
            requests = [{"data": n} for n in range(6)]
            model(requests)
            assert [r["result"] for r in requests] == [n + 2 for n in range(6)]
            assert model.max() == 1


def test_keys_given_by_name_and_a_call_without_a_request():
    with tp.pipe({"backend": "Identity"}) as model:
        assert model(data=7) == 7
        request = {"data": 1}
        model(request, color="bgr")
        assert request["color"] == "bgr"


class OnlyThree:
    """A TorchPipe-style filter class: init(params, shared), forward(item) -> Status."""

    def init(self, params: dict[str, str], shared: Any) -> None:
        self.wanted = int(params["wanted"])

    def forward(self, item: dict[str, Any]) -> tp.Status:
        return tp.Status.Run if item["data"] == self.wanted else tp.Status.Error


def test_filter_class_registered_torchpipe_style_gets_the_node_parameters():
    tp.register_filter(OnlyThree, "compat_only_three")
    with tp.pipe({"backend": "Identity", "filter": "compat_only_three", "wanted": 3}) as model:
        request = {"data": 3}
        model(request)
        assert request["result"] == 3
        with pytest.raises(RuntimeError, match="said Error"):
            model({"data": 4})


def test_default_backend_global_section_and_one_node_dicts():
    config = tp.load_config({"global": {"instance_num": 3}, "a": {"next": "b"}, "b": {}})
    assert [(n.name, str(n.backend), n.instance_num) for n in config.nodes] == [
        ("a", "Identity", 3),
        ("b", "Identity", 3),
    ]
    with tp.pipe({"backend": "CompatAddOne"}) as model:  # one node: node_name is not read
        request = {"data": 1, "node_name": "anything"}
        model(request)
        assert request["result"] == 2


def test_several_roots_need_node_name_an_index_error_as_in_torchpipe():
    with tp.pipe({"a": {}, "b": {}}) as model:
        with pytest.raises(IndexError):
            model({"data": 1})
        with pytest.raises(IndexError):
            model({"data": 1, "node_name": "zz"})


def test_backend_errors_are_runtime_errors_and_keep_their_type():
    with tp.pipe({"backend": "C10Exception"}) as model:
        with pytest.raises(RuntimeError) as raised:
            model({"data": 1})
        assert isinstance(raised.value, IndexError) and isinstance(raised.value, tp.BackendError)
    with tp.pipe({"backend": "RuntimeError"}) as model, pytest.raises(tp.BackendError):
        model({"data": 1})
    with pytest.raises(RuntimeError):
        tp.pipe({"instance_num": "dd"})


def test_maps_with_torchpipe_key_names_and_a_nameless_map_on_a_join():
    config = {
        "r": {"next": "b,a"},
        "a": {"backend": "CompatAddOne", "next": "j"},
        "b": {"backend": "CompatAddOne", "step": 10, "next": "j"},
        "j": {"map": "[TASK_RESULT_KEY:TASK_DATA_KEY]"},  # reads a: first by name, as there
        "m": {"map": "a[TASK_RESULT_KEY:TASK_DATA_KEY], b[TASK_RESULT_KEY:TASK_BOX_KEY]"},
    }
    with tp.pipe({k: v for k, v in config.items() if k != "m"}) as model:
        request = {"data": 1}
        model(request)
        assert request["result"] == 2
    config["j"] = {"map": "a[TASK_RESULT_KEY:TASK_DATA_KEY], b[TASK_RESULT_KEY:TASK_BOX_KEY]"}
    del config["m"]
    with tp.pipe(config) as model:
        request = {"data": 1}
        model(request)
        assert (request["result"], request["_box"]) == (2, 11)


def test_a_map_without_data_loads_and_fails_each_request(caplog):
    with caplog.at_level(logging.WARNING):
        model = tp.pipe({"a": {"next": "b"}, "b": {"map": "a[result:data1]"}})
    assert any("gives the node no 'data'" in r.getMessage() for r in caplog.records)
    with model, pytest.raises(RuntimeError, match="no 'data'"):
        model({"data": 1})


def test_an_event_makes_the_call_asynchronous_and_wait_raises_the_error():
    with tp.pipe({"backend": "Sleep", "Sleep::time": 50}) as model:
        event = tp.Event()
        request = {"data": 1, tp.TASK_EVENT_KEY: event}
        model(request)
        event.Wait(timeout_s=10)
        assert request["result"] == 1 and request[tp.TASK_EVENT_KEY] is event
        assert event.time_passed() >= 50
    with tp.pipe({"backend": "RuntimeError"}) as model:
        event = tp.Event()
        model({"data": 1, "event": event})
        with pytest.raises(RuntimeError):
            event.Wait(timeout_s=10)


def test_instance_groups_plan():
    assert plan_pieces(13, [(1, 1), (4, 4), (8, 8)]) == [(2, 8), (1, 4), (0, 1)]
    assert plan_pieces(3, [(1, 1), (4, 4), (8, 8)]) == [(0, 1), (0, 1), (0, 1)]
    with pytest.raises(ValueError, match="no instance group"):
        plan_pieces(3, [(4, 4), (8, 8)])


def test_composite_min_max_run_each_batch_on_a_group_that_takes_it():
    RecordSizes.SIZES.clear()
    config = {
        "backend": "CompatRecordSizes",
        "min": "1&4&8",
        "max": "1&4&8",
        "instance_num": 2,
        "batching_timeout": 50,
    }
    loaded = tp.load_config(config)
    assert (
        str(loaded.nodes[0].backend).startswith("InstanceGroups[")
        and loaded.nodes[0].instance_num == 2
    )
    with tp.pipe(loaded) as model:
        assert (model.min(), model.max()) == (1, 8)
        requests = [{"data": n} for n in range(13)]
        model(requests)
        assert [r["result"] for r in requests] == list(range(13))
    assert RecordSizes.SIZES and set(RecordSizes.SIZES) <= {1, 4, 8}
    with pytest.raises(tp.ConfigError, match="disagree"):
        tp.load_config({"min": "1&4", "max": "1&4&8"})
    with pytest.raises(tp.ConfigError, match="different sizes"):
        tp.load_config({"min": "1&4", "max": "1&4", "instance_num": "1&2"})


@pytest.mark.parametrize(
    ("backend", "data", "expected"),
    [
        ("S[CompatAddOne,CompatAddOne]", 1, 3),
        ("S[(Run)CompatAddOne,(swap)CompatAddOne]", 1, 3),  # the defaults, written out
        ("S[CompatAddOne,(or)CompatAddOne]", 1, 2),  # a result: or skips the second
        ("S[NoResult,(or)CompatAddOne]", 1, 2),  # none: or runs it, on the data
        ("S[CompatAddOne,(Break)CompatAddOne]", 1, 2),  # leaves after the first
        ("S[CompatAddOne,(Skip)CompatAddOne,(swap)CompatAddOne]", 1, 3),
    ],
)
def test_filters_inside_sequential(backend, data, expected):
    import torchpipe_lite.testing  # noqa: F401  (NoResult)

    with tp.pipe({"backend": backend}) as model:
        request = {"data": data}
        model(request)
        assert request["result"] == expected


def test_filter_in_parentheses_only_before_a_sequential_child():
    with pytest.raises(tp.ConfigError, match="children of Sequential"):
        tp.load_config({"backend": "SyncTensor[(or)Identity]"})
    with pytest.raises(tp.ConfigError, match="unknown filter"):
        tp.load_config({"backend": "S[Identity,(nosuch)Identity]"})
    with pytest.raises(tp.ConfigError, match="goes before a child of Sequential"):
        tp.load_config({"backend": "(or)Identity"})


def test_sequential_error_filter_fails_the_request():
    with tp.pipe({"backend": "S[Identity,(Error)Identity]"}) as model, pytest.raises(RuntimeError):
        model({"data": 1})


def test_a_custom_filter_replaces_swap_as_in_torchpipe():
    """A filter is TorchPipe's swap's replacement: the node computes on ``data`` as the
    filter leaves it. One that does not move ``result`` to ``data`` makes the node compute on
    its predecessor's input (the README's first big_only did: results one short)."""
    tp.register_filter("compat_big_unswapped")(
        lambda item: tp.Status.RUN if item["result"] > 10 else tp.Status.SKIP
    )

    @tp.register_filter("compat_big_only")
    def big_only(item):
        if item["result"] <= 10:
            return tp.Status.SKIP
        item["data"] = item.pop("result")
        return tp.Status.RUN

    results = {}
    for name in ("compat_big_unswapped", "compat_big_only"):
        config = {"a": {"backend": "CompatAddOne", "next": "b"}}
        config["b"] = {"backend": "CompatAddOne", "filter": name}
        with tp.pipe(config) as model:
            requests = [{"data": n} for n in (5, 20)]
            model(requests)
            results[name] = [r["result"] for r in requests]
    assert results["compat_big_only"] == [6, 22]  # small: skipped, a's result; big: a then b
    assert results["compat_big_unswapped"] == [6, 21]  # b ran on a's input, 20


def test_a_run_drops_the_predecessors_result():
    import torchpipe_lite.testing  # noqa: F401  (NoResult)

    config = {"a": {"next": "b"}, "b": {"backend": "NoResult", "filter": "Run"}}
    with tp.pipe(config) as model:
        request = {"data": 1}
        model(request)
        assert "result" not in request  # b produced none; a's must not pass for b's


def test_torchpipe_graph0_config_runs_as_its_tests_say():
    config = tp.parse_toml(V0 / "graph0.toml")
    config["a_1"]["filter"] = "SubGraphSkip"
    config["a_3"]["backend"] = "C10Exception"  # inside the skipped subgraph: never runs
    with tp.pipe(config) as model:
        request = {tp.TASK_DATA_KEY: "1", "node_name": "r_1"}
        model(request)
        assert request[tp.TASK_RESULT_KEY] == "1"  # TorchPipe's C++ core gives b"1"
    config["a_2_1"]["filter"] = "Break"
    config["a_1"]["filter"] = "Run"
    config["r_2"]["backend"] = "C10Exception"
    with tp.pipe(config) as model:
        request = {tp.TASK_DATA_KEY: 1, "node_name": "r_1"}
        model(request)  # Break ends it before r_2
        assert request["result"] == 1


@pytest.mark.parametrize(
    "name",
    [
        "graph0.toml",
        "graph1.toml",
        "graph2.toml",
        "logical.toml",
        "nondirect_map.toml",
        "PipelineV3.toml",
        "PipelineV3_event_sleep.toml",
        "PipelineV3_gpu_cpu.toml",
        "PipelineV3_single_map.toml",
        "PipelineV3_stop.toml",
    ],
)
def test_torchpipe_test_configs_load(name):
    tp.load_config(V0 / name, require_files=False)


@pytest.mark.parametrize(
    ("name", "message"),
    [("PipelineV3_loss_map.toml", "give it a map"), ("PipelineV3_previous.toml", "never reaches")],
)
def test_torchpipe_configs_its_tests_expect_refused_are_refused(name, message):
    with pytest.raises(RuntimeError, match=message):
        tp.pipe(V0 / name)


def test_torchpipe_logical_and_mapreduce_configs_run():
    with tp.pipe(V0 / "logical.toml") as model:
        requests = [{"data": 1}, {"data": 2}]
        model(requests)
        assert [(r["result"], r["data.2"]) for r in requests] == [(1, 1), (2, 2)]
    with tp.pipe(V0 / "graph2.toml") as model:
        request = {"data": 1, "node_name": "det"}
        model(request)
        assert request["result"] == [1] * 5
