"""The batch-forming rule: a pure function of a node's queue state, tested without threads."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BatchDecision:
    """Take ``size`` requests now, or (``size == 0``) wait ``wait_s`` seconds and decide again
    (``wait_s is None``: until something changes)."""

    size: int
    wait_s: float | None = None


WAIT_FOR_CHANGE = BatchDecision(0, None)


def decide_batch(
    *,
    queued: int,
    oldest_wait_s: float,
    busy_instances: int,
    min_batch: int,
    max_batch: int,
    batching_timeout_s: float,
    draining: bool = False,
    upstream_pending: int | None = None,
) -> BatchDecision:
    """Decide what an idle instance does with the queue.

    A batch goes out when the queue holds ``max_batch`` requests; when no other instance is
    busy (nothing is computing, so waiting would only add latency: a lone request never waits);
    when nothing is on its way from the upstream stages (``upstream_pending == 0``: waiting
    cannot fill the batch; ``None`` for an entry node, whose callers cannot be counted); when
    the oldest request has waited ``batching_timeout_s``; or when the node is draining.
    Never more than ``max_batch``, never fewer than ``min_batch``.
    """
    if queued < max(min_batch, 1):
        return WAIT_FOR_CHANGE
    if queued >= max_batch:
        return BatchDecision(max_batch)
    if (
        busy_instances == 0
        or upstream_pending == 0
        or draining
        or oldest_wait_s >= batching_timeout_s
    ):
        return BatchDecision(queued)
    return BatchDecision(0, batching_timeout_s - oldest_wait_s)
