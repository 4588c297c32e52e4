"""TorchPipe's control flow between nodes: filters, joins and map, logical nodes, Jump, MapReduce.

Each test builds a small graph of test backends and checks what a request's dict looks like
after it, and which nodes ran (their stats), as TorchPipe's documentation defines it.
"""

from __future__ import annotations

import pytest

import torchpipe_lite as tp
from torchpipe_lite import Backend, register_backend
from torchpipe_lite.filters import Status, register_filter

WAIT_S = 5.0


@register_backend("GraphTag")
class Tag(Backend):
    """``result = (*data, tag)``: shows which nodes a request went through, in order."""

    def init(self, params):
        self.tag = params["tag"]

    def forward(self, batch):
        for item in batch:
            data = item["data"]
            item["result"] = (*data, self.tag) if isinstance(data, tuple) else (data, self.tag)


@register_backend("GraphJpegOnly")
class JpegOnly(Backend):
    """A stand-in for a GPU decoder: decodes ``b"jpeg..."`` only, no result for the rest."""

    def forward(self, batch):
        for item in batch:
            if item["data"].startswith(b"jpeg"):
                item["result"] = ("gpu", item["data"])


@register_backend("GraphAnyImage")
class AnyImage(Backend):
    """A stand-in for a CPU decoder: decodes anything."""

    def forward(self, batch):
        for item in batch:
            item["result"] = ("cpu", item["data"])


@register_backend("GraphPair")
class Pair(Backend):
    """``result = (data, other)``: shows what a join's map built."""

    def forward(self, batch):
        for item in batch:
            item["result"] = (item["data"], item.get("other"))


@register_filter("graph_big_only")
def big_only(item):
    """Run only for data over 10; skip the node otherwise."""
    return Status.RUN if item["result"] > 10 else Status.SKIP


def stats(model) -> dict[str, int]:
    return {name: figures.inferences for name, figures in model.stats().items()}


def tag(name: str, **keys) -> dict:
    return {"backend": "GraphTag", "tag": name, **keys}


def test_or_falls_back_to_a_second_decoder_only_where_the_first_gave_nothing():
    config = {
        "gpu": {"backend": "GraphJpegOnly", "next": "cpu"},
        "cpu": {"backend": "GraphAnyImage", "filter": "or", "next": "model"},
        "model": tag("model"),
    }
    with tp.pipe(config) as model:
        jpeg, png = {"data": b"jpeg-1"}, {"data": b"png-1"}
        model([jpeg, png])
        assert jpeg["result"] == ("gpu", b"jpeg-1", "model")
        assert png["result"] == ("cpu", b"png-1", "model")
        counts = model.stats()
    # How many requests took each path: the fallback ran once, the first decoder twice.
    assert counts["cpu"].inferences == 1 and counts["gpu"].inferences == 2
    assert counts["gpu"].requests_no_result == 1


def test_skip_run_break_and_error_from_filters():
    config = {
        "a": {"backend": "Identity", "next": "b"},
        "b": tag("b", filter="graph_big_only", next="c"),
        "c": tag("c"),
    }
    with tp.pipe(config) as model:
        small, big = {"data": 3}, {"data": 30}
        model([small, big])
        assert small["result"] == (3, "c")  # b skipped: c swapped in a's result
        assert big["result"] == (30, "b", "c")
    with tp.pipe({"a": {"backend": "Identity", "next": "b"}, "b": tag("b", filter="Break")}) as m:
        request = {"data": 5}
        m(request)
        assert request["result"] == 5 and stats(m)["b"] == 0  # ended as a left it
    with tp.pipe({"a": {"backend": "Identity", "next": "b"}, "b": tag("b", filter="error")}) as m:
        with pytest.raises(tp.FilterError) as caught:
            m({"data": 5})
        assert caught.value.node == "b"


def test_a_filter_that_raises_fails_only_its_request():
    @register_filter("graph_picky")
    def picky(item):
        if item["data"] == "bad":
            raise ValueError("cannot judge this")
        return Status.RUN

    with tp.pipe({"a": tag("a", filter="graph_picky")}) as model:
        with pytest.raises(tp.FilterError, match="ValueError: cannot judge this"):
            model({"data": "bad"})
        good = {"data": "good"}
        model(good)
        assert good["result"] == ("good", "a")


def diamond(**filters) -> dict:
    """TorchPipe's skip example: r_1 feeds a_1 (which feeds a_2_1 and a_2_2) and b_1 -> b_2;
    r_2 joins a_2_1, a_2_2 and b_2."""
    return {
        "r_1": {"backend": "Identity", "next": "a_1,b_1"},
        "a_1": tag("a_1", next="a_2_1,a_2_2", **filters.get("a_1", {})),
        "a_2_1": tag("a_2_1", next="r_2"),
        "a_2_2": tag("a_2_2", next="r_2"),
        "b_1": tag("b_1", next="b_2", **filters.get("b_1", {})),
        "b_2": tag("b_2", next="r_2"),
        "r_2": {
            "backend": "Identity",
            "map": "a_2_1[result:data],a_2_2[result:left],b_2[result:right]",
        },
    }


def test_a_join_runs_once_on_what_its_map_takes_from_each_predecessor():
    with tp.pipe(diamond()) as model:
        request = {"data": 0}
        model(request)
        ran = stats(model)
    assert request["result"] == (0, "a_1", "a_2_1")
    assert request["left"] == (0, "a_1", "a_2_2") and request["right"] == (0, "b_1", "b_2")
    assert ran == {name: 1 for name in ran}  # every node, the join included, ran once


def test_serial_skip_and_subgraph_skip_fold_what_they_skip_into_the_node():
    with tp.pipe(diamond(b_1={"filter": "SerialSkip"})) as model:
        request = {"data": 0}
        model(request)
        assert request["right"] == 0  # b_1 and b_2 skipped: r_2 read b_2's as b_1's input
        assert stats(model)["b_1"] == 0 and stats(model)["b_2"] == 0
    with tp.pipe(diamond(a_1={"filter": "subgraph_skip"})) as model:
        request = {"data": 0}
        model(request)
        assert request["result"] == 0 and request["left"] == 0  # a_1, a_2_1, a_2_2 folded
        assert request["right"] == (0, "b_1", "b_2")
        ran = stats(model)
        assert ran["a_1"] == ran["a_2_1"] == ran["a_2_2"] == 0 and ran["b_2"] == 1


def test_map_reads_an_ancestor_as_well_as_its_predecessor():
    config = {
        "a": {"backend": "Identity", "next": "b"},
        "b": tag("b", next="c"),
        "c": tag("c", next="d"),
        "d": {"backend": "GraphPair", "map": "c[result:data],b[result:other]"},
    }
    with tp.pipe(config) as model:
        request = {"data": 1}
        model(request)
    assert request["result"] == ((1, "b", "c"), (1, "b"))


def test_short_form_map_and_several_pairs_from_one_node():
    config = {
        "a": {"backend": "Identity", "next": "b"},
        "b": {"backend": "GraphPair", "map": "[result:data,result:other]"},
    }
    with tp.pipe(config) as model:
        request = {"data": 4}
        model(request)
    assert request["result"] == (4, 4)


def test_a_logical_node_shares_its_nodes_instances_with_its_own_next(tmp_path):
    toml = """
[in]
backend = "Identity"
next = "rec,rec.2"

[rec]
backend = "Identity"
next = "final"

[rec.2]
next = "final"
backend = "C10Exception"  # a logical node runs rec's backend: this one is never built

[final]
backend = "Identity"
map = "rec[result:data],rec.2[result:data.2]"
"""
    with tp.pipe(toml) as model:
        inputs = {"data": 1}
        model(inputs)
        assert inputs["result"] == inputs["data.2"] == 1
        ran = stats(model)
    assert "rec.2" not in ran and ran["rec"] == 2  # one node, two entries to it


def test_jump_runs_a_request_through_another_graph_and_goes_on():
    config = {
        "a": tag("a", next="j"),
        "j": {"backend": "Jump", "jump": "sub", "next": "c"},
        "c": tag("c"),
        "sub": tag("sub", next="sub_end"),
        "sub_end": tag("sub_end"),
    }
    with tp.pipe(config) as model:
        request = {"data": 0}
        model(request)  # "sub" is a jump target, so "a" is the only entry
    assert request["result"] == (0, "a", "sub", "sub_end", "c")


def test_map_reduce_splits_a_list_runs_each_element_and_merges_in_order():
    config = {
        "split": {"backend": "MapReduce", "jump": "each"},
        "each": {"backend": "Fail", "fail_on": "bad", "next": "double"},
        "double": tag("x2"),
    }
    with tp.pipe(config) as model:
        request = {"data": ["p", "q", "r"]}
        model(request)
        assert request["result"] == [("p", "x2"), ("q", "x2"), ("r", "x2")]
        empty = {"data": []}
        model(empty)
        assert empty["result"] == []
        with pytest.raises(tp.RequestError, match="element 1 of 3 failed") as caught:
            model({"data": ["ok", "bad", "ok"]})
        assert caught.value.node == "split"
        with pytest.raises(tp.InvalidInputError, match="not a list"):
            model({"data": "not a list"})


def test_map_reduce_elements_batch_with_each_other():
    config = {
        "split": {"backend": "MapReduce", "jump": "each"},
        "each": {"backend": "Sleep", "sleep_ms": 20, "max": 8, "batching_timeout": 50},
    }
    with tp.pipe(config) as model:
        request = {"data": list(range(8))}
        model(request, timeout_s=WAIT_S)
        figures = model.stats()["each"]
    assert request["result"] == list(range(8))
    assert figures.executions < 8  # the elements ran in batches, not one by one


def test_a_break_in_one_branch_ends_the_whole_request():
    config = {
        "root": {"backend": "Identity", "next": "left,right"},
        "left": {"backend": "NoResult", "next": "after_left"},  # no result: swap says Break
        "after_left": tag("after_left"),
        "right": tag("right"),
    }
    with tp.pipe(config) as model:
        request = {"data": 7}
        model(request)
        assert "result" not in request  # ended as left left it
        assert stats(model)["after_left"] == 0


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"a": tag("a", filter="sometimes")}, "unknown filter 'sometimes'"),
        (
            {"a": tag("a", next="b"), "b": {"backend": "GraphPair", "map": "z[result:data]"}},
            "unknown node 'z'",
        ),
        (
            {"r": {"backend": "Identity", "next": "a,b"}, "a": tag("a", next="j"),
             "b": tag("b", next="j"), "j": tag("j")},
            "give it a map",
        ),
        (
            {"a": tag("a", next="b"), "b": tag("b"), "j": {"backend": "Jump", "jump": "b"}},
            "is not a root",
        ),
        (
            {"a": tag("a", next="b"), "b": {"backend": "Jump", "jump": "a"}},
            "jumps back into itself",
        ),
        (
            {"a": {"backend": "Jump", "jump": "s"}, "s": {"backend": "Identity", "next": "x,y"},
             "x": tag("x"), "y": tag("y")},
            "ends in 2 leaves",
        ),
        (
            {"m": {"backend": "Identity", "next": "j1"}, "j1": {"backend": "Jump", "jump": "s"},
             "s": {"backend": "Jump", "jump": "t"}, "t": {"backend": "Jump", "jump": "s"}},
            "jumps back into itself",
        ),
        ({"a": {"backend": "Jump"}}, "needs jump"),
        (
            {"a": tag("a", next="c"), "b": tag("b"),
             "c": {"backend": "GraphPair", "map": "a[result:data],b[result:other]"}},
            "never reaches",
        ),
    ],
)  # fmt: skip
def test_graph_mistakes_are_refused_at_load_naming_node_and_key(config, message):
    with pytest.raises(tp.ConfigError, match=message):
        tp.load_config(config)


def test_the_album_example_classifies_a_list_of_images_in_batches(resnet18_onnx, photos):
    """examples/album.toml: one request, five photographs, the model batching across them;
    each image's logits are those of classifying it alone."""
    from examples.classify_album import ALBUM, classify_album

    images = [photos[name] for name in ("chelsea", "coffee", "astronaut", "coins", "camera")]
    import torch

    together = classify_album(images, resnet18_onnx)
    config = tp.load_config(ALBUM.read_text().replace("models/resnet50.onnx", str(resnet18_onnx)))
    with tp.pipe(config) as alone:
        for image, logits in zip(images, together, strict=True):
            request = {"data": image, "node_name": "decode"}  # the per-image graph alone
            alone(request, strict=True)
            torch.testing.assert_close(logits, request["result"], atol=1e-4, rtol=1e-4)
