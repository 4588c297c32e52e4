"""Scheduling: the batch-forming rule, per-node queues and workers, and the pipeline."""

from .batching import BatchDecision, decide_batch
from .pipeline import Pipeline, pipe

__all__ = ["BatchDecision", "Pipeline", "decide_batch", "pipe"]
