"""NodeStats is the one schema of a node's figures: its metadata drives counting and adding up."""

from __future__ import annotations

import dataclasses
from time import monotonic
from typing import Any

import pytest

from torchpipe_lite.backends.base import Backend
from torchpipe_lite.metrics import (
    FIGURES,
    InstanceCounters,
    Merge,
    NodeStats,
    add_figures,
    total_of,
)
from torchpipe_lite.schedule.execution import run_batch
from torchpipe_lite.schedule.job import Job


class _Ended:
    deadline_s = float("inf")

    def end_branch(self, node: str, item: dict[str, Any], error: BaseException | None) -> None:
        """Nothing to tell: run_batch returns the outcomes."""


class _FailsOnNegative(Backend):
    def forward(self, batch: list[dict[str, Any]]) -> None:
        for item in batch:
            if item["data"] < 0:
                raise ValueError("negative")
            item["result"] = item["data"]


def test_a_batch_run_again_item_by_item_counts_once_in_executions_and_batch_sizes_alike():
    """Ten items in batches of 3, 3 and 4, the second of which raises and runs again item by
    item: the mean batch is 10 / 3 whichever figure it is read from."""
    counters = InstanceCounters()
    for values in ([1, 2, 3], [4, -5, 6], [7, 8, 9, 10]):
        batch = [Job({"data": value}, _Ended(), monotonic()) for value in values]
        run_batch(_FailsOnNegative(), batch, counters, node="n", backend_name="B")
    stats = NodeStats(node="n", backend="B", instances=1)
    counters.add_to(stats)
    assert stats.executions == sum(stats.batch_sizes.values()) == 3
    assert stats.inferences == sum(size * n for size, n in stats.batch_sizes.items()) == 10
    assert stats.mean_batch_size == pytest.approx(10 / 3)
    assert stats.items_rerun == 3 and (stats.requests_ok, stats.requests_failed) == (9, 1)


def test_instance_counters_hold_exactly_the_counted_figures():
    counted = {name for name, figure in FIGURES if figure.counted}
    assert set(InstanceCounters.__slots__) == counted
    assert [name for name, _ in FIGURES] == [f.name for f in dataclasses.fields(NodeStats)]


def test_figures_add_up_as_their_metadata_says():
    first = NodeStats(
        node="m", backend="B", instances=2, requests_ok=3, batch_sizes={4: 1, 2: 1},
        queue_time_ms_total=1.5, queue_length=1, instance_placements=["cuda:0", None],
    )  # fmt: skip
    second = NodeStats(
        node="m", backend="B", instances=1, requests_ok=5, batch_sizes={4: 2},
        queue_time_ms_total=2.0, queue_length=2, instance_placements=["cuda:1"],
    )  # fmt: skip
    total = total_of("m", "B", [first, second])
    assert (total.node, total.backend, total.instances, total.requests_ok) == ("m", "B", 3, 8)
    assert total.batch_sizes == {4: 3, 2: 1} and total.queue_time_ms_total == 3.5
    assert total.queue_length == 3 and total.instance_placements == ["cuda:0", None, "cuda:1"]
    assert first.batch_sizes == {4: 1, 2: 1}  # the parts are left as they were


def test_a_part_lacking_a_figure_or_leaving_it_unset_adds_nothing():
    class OlderPart:  # a struct from before requests_cancelled existed, placements unset
        requests_ok = 2
        instance_placements = None

    total = NodeStats(node="m", backend="B", instances=0, requests_cancelled=1)
    add_figures(total, OlderPart())
    assert (total.requests_ok, total.requests_cancelled, total.instance_placements) == (2, 1, [])


def test_every_figure_says_what_it_is_and_names_are_not_added():
    for name, figure in FIGURES:
        assert figure.help, name
        assert (figure.merge is Merge.KEY) == (name in {"node", "backend"}), name
