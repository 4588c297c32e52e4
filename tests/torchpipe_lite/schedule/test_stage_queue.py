"""The scheduling core: StageQueue's admission, expiry, batching and draining, and run_batch's
per-request outcomes, on one thread (no worker threads; nothing here waits)."""

from __future__ import annotations

import math
from time import monotonic
from typing import Any

import pytest

from torchpipe_lite.backends.base import Backend
from torchpipe_lite.errors import BackendError, OverloadedError, PipelineClosedError
from torchpipe_lite.metrics import InstanceCounters, NodeStats
from torchpipe_lite.schedule.execution import run_batch
from torchpipe_lite.schedule.job import CANCELLED, Job
from torchpipe_lite.schedule.stage_queue import StageQueue


class Recorder:
    """A completion that remembers how each branch ended."""

    def __init__(self, deadline_s: float = math.inf) -> None:
        self.deadline_s = deadline_s
        self.ended: list[tuple[str, Any, BaseException | None]] = []

    def end_branch(self, node: str, item: dict[str, Any], error: BaseException | None) -> None:
        self.ended.append((node, item.get("result"), error))


def jobs(count: int, *, age_s: float = 0.0) -> list[Job]:
    now = monotonic()
    return [Job({"data": index}, Recorder(), now - age_s) for index in range(count)]


def queue(**settings: Any) -> StageQueue:
    min_batch = settings.pop("min_batch", 1)
    max_batch = settings.pop("max_batch", 4)
    stage = StageQueue("n", "B", **settings)
    stage.min_batch, stage.max_batch = min_batch, max_batch
    return stage


def test_a_full_batch_is_taken_at_once_and_never_more_than_max():
    stage = queue(batching_timeout_ms=10_000)
    stage.put(jobs(6))
    taken = stage.take()
    assert [job.item["data"] for job in taken.batch] == [0, 1, 2, 3]
    assert stage.pending() == 6  # two queued, four in service


def test_an_idle_stage_takes_a_partial_batch_without_waiting():
    stage = queue(batching_timeout_ms=10_000)
    stage.put(jobs(2))
    assert len(stage.take().batch) == 2  # no instance busy: a lone request never waits


def test_finish_releases_the_instance_and_its_jobs():
    stage = queue()
    stage.put(jobs(3))
    taken = stage.take()
    stage.finish(len(taken.batch))
    assert stage.pending() == 0


def test_a_full_queue_refuses_the_whole_put_and_counts_it():
    stage = queue(max_queue_size=3)
    stage.put(jobs(2))
    with pytest.raises(OverloadedError, match="queue full"):
        stage.put(jobs(2))
    assert stage.rejected == 2 and len(stage) == 2


def test_requests_past_their_timeout_are_handed_back_unrun():
    stage = queue(request_timeout_ms=5)
    stage.put(jobs(2, age_s=1.0) + jobs(1))
    taken = stage.take()
    assert len(taken.expired) == 2 and not taken.batch
    assert len(stage.take().batch) == 1


def test_a_closed_stage_refuses_new_jobs_and_runs_what_is_queued():
    stage = queue(batching_timeout_ms=10_000)
    stage.put(jobs(2))
    stage.close()
    with pytest.raises(PipelineClosedError):
        stage.put(jobs(1))
    assert len(stage.take().batch) == 2  # draining: no waiting for a fuller batch
    assert stage.take().closed


def test_draining_hands_back_what_can_never_reach_min():
    stage = queue(min_batch=3, max_batch=4)
    stage.put(jobs(2))
    stage.close()
    taken = stage.take()
    assert taken.closed and len(taken.leftovers) == 2 and not taken.batch


class Picky(Backend):
    """Fails a batch holding a negative number; alone, only that item fails."""

    def forward(self, batch: list[dict[str, Any]]) -> None:
        for item in batch:
            if item["data"] < 0:
                raise ValueError("negative")
            item["result"] = item["data"] * 10


def test_run_batch_reruns_a_failed_batch_per_item_and_counts_each_outcome():
    counters = InstanceCounters()
    batch = [Job({"data": value}, Recorder(), monotonic()) for value in (1, -1, 2)]
    ok, failed = run_batch(Picky(), batch, counters, node="n", backend_name="Picky")
    assert [job.item["result"] for job in ok] == [10, 20]
    ((job, error),) = failed
    assert job.item["data"] == -1 and isinstance(error, BackendError)
    assert error.node == "n" and "ValueError: negative" in str(error)
    stats = NodeStats(node="n", backend="Picky", instances=1)
    counters.add_to(stats)
    assert (stats.requests_ok, stats.requests_failed, stats.inferences) == (2, 1, 3)
    assert (stats.executions, stats.items_rerun) == (1, 3)  # the batch once; each item again
    assert stats.batch_sizes == {3: 1}


def test_jobs_past_their_deadline_or_cancelled_are_dropped_when_a_batch_forms():
    stage = queue(max_batch=4)
    now = monotonic()
    wanted, late, cancelled = Recorder(), Recorder(now - 1.0), Recorder(CANCELLED)
    stage.put([Job({"data": 0}, wanted, now), Job({"data": 1}, late, now)])
    stage.put([Job({"data": 2}, cancelled, now), Job({"data": 3}, wanted, now)])
    taken = stage.take()
    assert [job.item["data"] for job in taken.batch] == [0, 3]
    assert [job.completion for job in taken.abandoned] == [late, cancelled]
    assert stage.pending() == 2  # only the wanted ones are in service


def test_wanted_jobs_too_few_for_a_batch_wait_again_at_the_head():
    stage = queue(min_batch=2, max_batch=2)
    now = monotonic()
    stage.put([Job({"data": 0}, Recorder(), now), Job({"data": 1}, Recorder(CANCELLED), now)])
    taken = stage.take()
    assert taken.batch == [] and len(taken.abandoned) == 1
    assert [job.item["data"] for job in stage._jobs] == [0]
    stage.put([Job({"data": 2}, Recorder(), now)])
    assert [job.item["data"] for job in stage.take().batch] == [0, 2]
