"""Config loading and validation: TOML and dicts, defaults, strings style, errors."""

import logging

import pytest

from torchpipe_lite import ConfigError, load_config

TOML = """
batching_timeout = 5
instance_num = 2

[decode]
backend = "Identity"
instance_num = 8
next = "post"

[post]
backend = "S[Identity,Identity]"
max = 4
next = "model"

[model]
backend = "Sleep"
sleep_ms = 1
min = 1
max = 8
"""


def test_loads_toml_with_top_level_defaults(tmp_path):
    path = tmp_path / "pipe.toml"
    path.write_text(TOML)
    config = load_config(path)
    assert [node.name for node in config.nodes] == ["decode", "post", "model"]
    assert config.roots == ("decode",)
    decode, post, model = config.nodes
    assert decode.instance_num == 8 and post.instance_num == 2
    assert post.batching_timeout_ms == 5.0
    assert str(post.backend) == "Sequential[Identity,Identity]"
    assert post.next_nodes == ("model",)
    assert (model.min_batch, model.max_batch) == (1, 8)
    assert model.params["sleep_ms"] == 1


def test_accepts_torchpipe_all_strings_style():
    config = load_config(
        {
            "batching_timeout": "2.5",
            "a": {"backend": "Identity", "max": "4", "min": "2", "instance_num": "3"},
        }
    )
    (node,) = config.nodes
    assert (node.min_batch, node.max_batch, node.instance_num) == (2, 4, 3)
    assert node.batching_timeout_ms == 2.5


def test_branches_and_topological_order():
    config = load_config(
        {
            "c": {"backend": "Identity"},
            "b": {"backend": "Identity"},
            "a": {"backend": "Identity", "next": "b, c"},
        }
    )
    names = [node.name for node in config.nodes]
    assert names.index("a") < names.index("b") and names.index("a") < names.index("c")
    assert config.node("a").next_nodes == ("b", "c")
    assert config.roots == ("a",)


def error_of(config) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    return caught.value


def test_unknown_backend_names_node_and_key():
    error = error_of({"a": {"backend": "Sequential[Identity,NoSuchThing]"}})
    assert (error.node, error.key) == ("a", "backend")
    assert "NoSuchThing" in str(error)


def test_malformed_expression():
    error = error_of({"a": {"backend": "Sequential[Identity"}})
    assert (error.node, error.key) == ("a", "backend")


def test_too_many_children():
    error = error_of({"a": {"backend": "Identity[Identity]"}})
    assert error.key == "backend" and "at most 0" in str(error)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max", "four"),
        ("max", 0),
        ("max", 2.5),
        ("instance_num", True),
        ("instance_num", 0),
        ("batching_timeout", -1),
        ("batching_timeout", "soon"),
        ("max_queue_size", -3),
        ("request_timeout", "nan"),
        ("device_id", "0,x"),
        ("device_id", -1),
        ("inline", "maybe"),
    ],
)
def test_bad_numbers(key, value):
    error = error_of({"a": {"backend": "Identity", key: value}})
    assert (error.node, error.key) == ("a", key)


def test_min_above_max():
    error = error_of({"a": {"backend": "Identity", "min": 5, "max": 4}})
    assert (error.node, error.key) == ("a", "min")


def test_cycle_in_next():
    error = error_of(
        {
            "a": {"backend": "Identity", "next": "b"},
            "b": {"backend": "Identity", "next": "c"},
            "c": {"backend": "Identity", "next": "a"},
        }
    )
    assert error.key == "next" and "cycle" in str(error)


def test_self_loop():
    assert "cycle" in str(error_of({"a": {"backend": "Identity", "next": "a"}}))


def test_next_to_unknown_node():
    error = error_of({"a": {"backend": "Identity", "next": "nowhere"}})
    assert (error.node, error.key) == ("a", "next")


def test_a_node_without_backend_runs_identity_as_in_torchpipe():
    config = load_config({"a": {"max": 2}})
    assert str(config.node("a").backend) == "Identity"


def test_keys_without_a_table_are_one_node_as_in_torchpipe():
    config = load_config({"instance_num": 2})
    assert [(node.name, str(node.backend), node.instance_num) for node in config.nodes] == [
        ("default", "Identity", 2)
    ]
    assert "empty configuration" in str(error_of({}))


def test_missing_file_and_bad_toml(tmp_path):
    assert "not found" in str(error_of(tmp_path / "absent.toml"))
    broken = tmp_path / "broken.toml"
    broken.write_text("[a\nbackend=")
    assert "not valid TOML" in str(error_of(broken))


def test_missing_model_file_is_reported(tmp_path):
    from torchpipe_lite import Backend, register_backend

    @register_backend("NeedsModelFile")
    class NeedsModelFile(Backend):
        PARAMS = frozenset({"model"})
        FILE_PARAMS = ("model",)

    error = error_of({"m": {"backend": "NeedsModelFile", "model": str(tmp_path / "x.onnx")}})
    assert (error.node, error.key) == ("m", "model")
    (tmp_path / "x.onnx").write_bytes(b"")
    load_config({"m": {"backend": "NeedsModelFile", "model": str(tmp_path / "x.onnx")}})


def test_unknown_keys_warn_with_a_suggestion(caplog):
    with caplog.at_level(logging.WARNING, logger="torchpipe_lite"):
        load_config({"a": {"backend": "Sleep", "sleep_msec": 3, "instance_nums": 2}})
    text = caplog.text
    assert "[a].sleep_msec" in text and "'sleep_ms'" in text
    assert "[a].instance_nums" in text and "'instance_num'" in text


def test_known_keys_do_not_warn(caplog):
    with caplog.at_level(logging.WARNING, logger="torchpipe_lite"):
        load_config({"a": {"backend": "Sleep", "sleep_ms": 3, "max": 2}})
    assert caplog.text == ""


def test_queue_keys_on_an_inline_node_warn(caplog):
    with caplog.at_level(logging.WARNING):
        load_config(
            {
                "batching_timeout": 5,
                "a": {"backend": "Identity", "inline": True, "max_queue_size": 8},
            }
        )
    warnings = [record.getMessage() for record in caplog.records]
    assert any("[a].max_queue_size has no effect: the node is inline" in m for m in warnings)
    assert not any("batching_timeout" in m for m in warnings)  # a top-level default: silent


def test_toml_text_loads_like_a_file_and_a_missing_file_says_both_tried():
    config = load_config('[a]\nbackend = "Identity"\nnext = "b"\n[b]\nbackend = "Identity"\n')
    assert [node.name for node in config.nodes] == ["a", "b"]
    with pytest.raises(ConfigError, match=r"file not found: nothere\.toml \(pass TOML text"):
        load_config("nothere.toml")
    with pytest.raises(ConfigError, match="TOML text given is not valid TOML"):
        load_config("[a\nbackend = 1")


def test_a_near_miss_of_a_scheduler_key_warns_even_for_backends_without_declared_params(caplog):
    from torchpipe_lite import Backend, register_backend

    @register_backend("OpenParams")
    class OpenParams(Backend):  # reads what it likes: PARAMS stays None
        def forward(self, batch):
            for item in batch:
                item["result"] = item["data"]

    with caplog.at_level(logging.WARNING):
        load_config({"a": {"backend": "OpenParams", "instance_nums": 2, "gain": 3}})
    warnings = [record.getMessage() for record in caplog.records]
    assert any("[a].instance_nums: unknown key" in m and "'instance_num'" in m for m in warnings)
    assert not any("gain" in m for m in warnings)  # may be the backend's own parameter


def test_a_misspelt_backend_key_is_named(caplog):
    with caplog.at_level(logging.WARNING):
        config = load_config({"a": {"bakend": "DecodeMat"}})
    assert str(config.node("a").backend) == "Identity"  # TorchPipe's default, as there
    warnings = [record.getMessage() for record in caplog.records]
    assert any("[a].bakend: unknown key" in m and "'backend'" in m for m in warnings)


def test_backend_names_match_without_regard_to_case_and_unknown_ones_get_a_hint():
    config = load_config({"a": {"backend": "Sequential[cvtColorMat,identity]", "color": "rgb"}})
    assert str(config.nodes[0].backend) == "Sequential[cvtColorMat,identity]"
    did_you_mean = r"unknown backend 'ResizeMatt' \(did you mean 'ResizeMat'"
    with pytest.raises(ConfigError, match=did_you_mean):
        load_config({"a": {"backend": "ResizeMatt"}})
