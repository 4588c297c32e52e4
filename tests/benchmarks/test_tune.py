"""benchmarks.tune's pure parts: settings, the grid, config rewriting, TOML out, the pick."""

from __future__ import annotations

import argparse
import sys

import pytest

from benchmarks.tune import Setting, apply_point, best, grid, parse_setting, render_toml
from service.service_config import DEFAULT_CONFIG

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_parse_setting_types_values_and_splits_node_from_key() -> None:
    assert parse_setting("resnet50.max=8,32") == Setting("resnet50", "max", (8, 32))
    assert parse_setting("batching_timeout=0.5,2") == Setting(None, "batching_timeout", (0.5, 2))
    assert parse_setting("dec.inline=true,false").values == (True, False)
    assert parse_setting("dec.color=rgb").values == ("rgb",)


@pytest.mark.parametrize("text", ["resnet50.max", "=1,2", "resnet50.max="])
def test_parse_setting_refuses_malformed_text(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"NODE\.KEY=V1,V2"):
        parse_setting(text)


def test_grid_is_every_combination_with_workers_last() -> None:
    settings = [Setting("a", "instance_num", (1, 2)), Setting(None, "batching_timeout", (1,))]
    assert grid(settings, [4, 8]) == [
        {"a.instance_num": 1, "batching_timeout": 1, "workers": 4},
        {"a.instance_num": 1, "batching_timeout": 1, "workers": 8},
        {"a.instance_num": 2, "batching_timeout": 1, "workers": 4},
        {"a.instance_num": 2, "batching_timeout": 1, "workers": 8},
    ]


def test_apply_point_copies_and_names_an_unknown_node() -> None:
    base = {"batching_timeout": 2, "model": {"max": 8}}
    settings = [Setting("model", "max", (32,)), Setting(None, "batching_timeout", (1,))]
    changed = apply_point(base, settings, {"model.max": 32, "batching_timeout": 1})
    assert changed == {"batching_timeout": 1, "model": {"max": 32}}
    assert base == {"batching_timeout": 2, "model": {"max": 8}}  # untouched
    with pytest.raises(KeyError, match=r"no node \[decoder\] \(nodes: model\)"):
        apply_point(base, [Setting("decoder", "max", (1,))], {"decoder.max": 1})


def test_render_toml_round_trips_the_shipped_config_and_odd_keys() -> None:
    config = tomllib.loads(DEFAULT_CONFIG.read_text())
    config["resnet50"]["model::cache"] = 'a "quoted" path'
    config["resnet50"]["inline"] = False
    assert tomllib.loads(render_toml(config)) == config


def test_best_is_the_fastest_within_budget_and_without_errors() -> None:
    points = [
        {"qps": 900.0, "tp99_ms": 9.0, "errors": 0},
        {"qps": 1200.0, "tp99_ms": 12.0, "errors": 0},  # over budget
        {"qps": 1100.0, "tp99_ms": 8.0, "errors": 3},  # had errors
        {"qps": 0.0, "tp99_ms": None, "errors": -1},  # the run broke
    ]
    assert best(points, 10.0) is points[0]
    assert best(points, 12.0) is points[1]
    assert best(points[2:], 100.0) is None
