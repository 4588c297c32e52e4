"""The batch-forming rule, as a pure function (no threads)."""

import pytest

from torchpipe_lite.schedule.batching import BatchDecision, decide_batch


def decide(queued, *, oldest_wait_s=0.0, busy=1, min_batch=1, max_batch=8, timeout_s=0.005, **kw):
    return decide_batch(
        queued=queued,
        oldest_wait_s=oldest_wait_s,
        busy_instances=busy,
        min_batch=min_batch,
        max_batch=max_batch,
        batching_timeout_s=timeout_s,
        **kw,
    )


def test_empty_queue_waits_until_something_arrives():
    assert decide(0) == BatchDecision(0, None)


def test_full_batch_goes_at_once():
    assert decide(8) == BatchDecision(8)


def test_never_exceeds_max():
    assert decide(100, oldest_wait_s=1.0) == BatchDecision(8)


def test_lone_request_does_not_wait_when_every_instance_is_idle():
    assert decide(1, busy=0) == BatchDecision(1)


def test_partial_batch_waits_for_the_rest_of_the_timeout_while_others_compute():
    decision = decide(3, oldest_wait_s=0.002, busy=1, timeout_s=0.005)
    assert decision.size == 0
    assert decision.wait_s == pytest.approx(0.003)


def test_partial_batch_goes_when_the_oldest_reached_the_timeout():
    assert decide(3, oldest_wait_s=0.005, busy=2) == BatchDecision(3)


def test_zero_timeout_sends_whatever_is_queued():
    assert decide(2, busy=3, timeout_s=0.0) == BatchDecision(2)


def test_below_min_waits_even_when_idle_or_timed_out():
    assert decide(2, min_batch=4, busy=0, oldest_wait_s=10.0) == BatchDecision(0, None)


def test_min_reached_goes_when_idle():
    assert decide(4, min_batch=4, busy=0) == BatchDecision(4)


def test_draining_sends_partial_batches_without_waiting():
    assert decide(3, busy=1, draining=True) == BatchDecision(3)


def test_draining_still_respects_min():
    assert decide(1, min_batch=2, draining=True) == BatchDecision(0, None)


def test_partial_batch_goes_when_nothing_is_on_its_way_from_upstream():
    assert decide(3, busy=1, upstream_pending=0) == BatchDecision(3)


def test_partial_batch_waits_while_upstream_stages_hold_requests():
    assert decide(3, busy=1, oldest_wait_s=0.001, upstream_pending=2).size == 0


def test_entry_node_with_unknown_upstream_keeps_the_timeout_rule():
    assert decide(3, busy=1, oldest_wait_s=0.001, upstream_pending=None).size == 0
