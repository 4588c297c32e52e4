"""Every node kind is a ``Stage``, picked in one place, sharing one door and in-hand count."""

from __future__ import annotations

import threading

import pytest

from torchpipe_lite import load_config
from torchpipe_lite.errors import PipelineClosedError
from torchpipe_lite.schedule.inline_node import InlineNode
from torchpipe_lite.schedule.intake import Intake
from torchpipe_lite.schedule.jump_node import JumpNode
from torchpipe_lite.schedule.node import Node
from torchpipe_lite.schedule.stage import Stage, make_stage

WAIT_S = 10.0


def _stages() -> dict[str, Stage]:
    config = load_config({
        "queued": {"backend": "Identity", "next": "inline"},
        "inline": {"backend": "Identity", "inline": True},
        "jump": {"backend": "Jump", "jump": "queued"},
    })  # fmt: skip
    return {
        node.name: make_stage(node, lambda name, jobs: None, lambda root, handles: None)
        for node in config.nodes
    }


def test_make_stage_picks_the_kind_and_each_kind_is_a_stage():
    stages = _stages()
    kinds = {name: type(stage) for name, stage in stages.items()}
    assert kinds == {"queued": Node, "inline": InlineNode, "jump": JumpNode}
    for stage in stages.values():
        assert isinstance(stage, Stage)


def test_an_inline_stage_has_no_queue_and_says_what_ran_it():
    stage = _stages()["inline"]
    stage.start()
    try:
        assert not hasattr(stage, "queue")
        assert stage.batch_range() == (1, 1)
        stats = stage.stats()
        assert (stats.instances, stats.queue_length, stats.requests_rejected) == (1, 0, 0)
    finally:
        stage.close()
    with pytest.raises(PipelineClosedError):
        stage.put([])


def test_close_waits_for_the_jobs_in_hand_and_the_door_stays_shut():
    intake = Intake("n", "B")
    intake.admit(2)
    with intake.cond:
        intake.close_locked()
    with pytest.raises(PipelineClosedError, match="closed"):
        intake.admit(1)  # the door shuts at once, before the jobs in hand have ended
    closing = threading.Thread(target=intake.close_and_wait)
    closing.start()
    intake.release(1)
    closing.join(timeout=0.05)
    assert closing.is_alive() and intake.in_hand == 1  # one job still in hand
    intake.release(1)
    closing.join(timeout=WAIT_S)
    assert not closing.is_alive() and intake.in_hand == 0
