"""Running one batch on a backend instance: every request gets its own outcome, counted once.

A batch that raises is run again one request at a time, so only a request that fails on its
own gets an error (backends are written to be safe to re-run per item); the batch counts once
in ``executions`` and ``batch_sizes`` alike, its re-runs in ``items_rerun``. Whoever runs the
batch (a node's instance thread, the delivering thread of an inline node) goes through
``run_batch``, so these rules and the counters are written once.
"""

from __future__ import annotations

import logging
from time import monotonic
from typing import Any

from ..backends.base import Backend
from ..errors import RequestError, backend_error_for
from ..metrics import InstanceCounters
from .job import Job

logger = logging.getLogger(__name__)


def run_batch(
    backend: Backend, jobs: list[Job], counters: InstanceCounters, *, node: str, backend_name: str
) -> tuple[list[Job], list[tuple[Job, RequestError]]]:
    """Run ``jobs`` as one batch; (the jobs that succeeded, each failed job with its error)."""
    items = [job.item for job in jobs]
    started_s = monotonic()
    failures = _forward(backend, items, counters, node, backend_name)
    compute_s = monotonic() - started_s
    no_result = sum(
        "result" not in item for position, item in enumerate(items) if position not in failures
    )
    counters.record_batch(
        size=len(jobs),
        compute_s=compute_s,
        queue_s=sum(started_s - job.enqueued_s for job in jobs),
        failed=len(failures),
        no_result=no_result,
    )
    if not failures:
        return jobs, []
    failed = [(jobs[position], error) for position, error in failures.items()]
    ok = [job for position, job in enumerate(jobs) if position not in failures]
    return ok, failed


def _forward(
    backend: Backend,
    items: list[dict[str, Any]],
    counters: InstanceCounters,
    node: str,
    backend_name: str,
) -> dict[int, RequestError]:
    """Run the batch; on failure run each item alone so only the culprits fail."""
    inputs = [item.get("data") for item in items]
    try:
        backend.forward(items)
        return {}
    except Exception as error:
        if len(items) == 1:
            return {0: request_error(error, node, backend_name)}
        logger.debug("node %s: batch of %d failed, retrying alone", node, len(items))
    failures: dict[int, RequestError] = {}
    counters.items_rerun += len(items)  # the batch still counts once, as it was formed
    for position, (item, data) in enumerate(zip(items, inputs, strict=True)):
        item["data"] = data  # undo whatever the failed batch did to the item
        item.pop("result", None)
        try:
            backend.forward([item])
        except Exception as error:
            failures[position] = request_error(error, node, backend_name)
    return failures


def request_error(error: Exception, node: str, backend_name: str) -> RequestError:
    """``error`` as the request's typed error, naming the node and backend."""
    if isinstance(error, RequestError):
        if error.node is None:
            error.node, error.backend = node, backend_name
        return error
    wrapped = backend_error_for(error)(
        f"{type(error).__name__}: {error}", node=node, backend=backend_name
    )
    wrapped.__cause__ = error
    return wrapped
