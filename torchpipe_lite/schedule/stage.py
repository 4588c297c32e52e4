"""The one interface of a pipeline's physical nodes (``Stage``) and the one place that picks
which kind runs a node (``make_stage``).

Three kinds implement it: ``Node`` (a queue and ``instance_num`` instance threads that form
batches), ``InlineNode`` (``inline = true``: the stage runs on the thread that delivers the
request) and ``JumpNode`` (``Jump``/``MapReduce``: the request goes through another graph).
Each shares its door, its count of jobs in hand and how it ends jobs (``intake``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from ..config.schema import NodeConfig
from ..metrics import NodeStats
from .inline_node import InlineNode
from .job import Job, Router
from .jump_node import Enter, JumpNode
from .node import Node


@runtime_checkable
class Stage(Protocol):
    """One physical node: started once, fed jobs from any thread, closed once."""

    name: str
    backend_name: str

    def start(self) -> None:
        """Create and initialise what runs the node; raise ``BackendInitError`` if it fails."""

    def put(self, jobs: list[Job]) -> None:
        """Take ``jobs`` (all or none): ``PipelineClosedError`` once closed, and for a queue,
        ``OverloadedError`` when it is full."""

    def pending(self) -> int:
        """Jobs queued or running here (a cheap, racy read for the nodes it feeds)."""

    def feed_from(self, upstream: Sequence[Stage] | None) -> None:
        """The stages whose jobs reach this one (``None``: callers, who cannot be counted). A
        queued node waits for a batch to fill only while they have jobs pending."""

    def batch_range(self) -> tuple[int, int]:
        """The (min, max) batch it runs, settled once its backends initialised."""

    def stats(self) -> NodeStats:
        """A snapshot of its figures."""

    def close(self) -> None:
        """Refuse new jobs, end those in hand, release what runs it."""


def make_stage(config: NodeConfig, router: Router, enter: Enter) -> Stage:
    """The stage that runs physical node ``config`` (not yet started). ``router`` takes the
    jobs it ran on; ``enter`` starts requests at a root of the pipeline (for ``Jump``)."""
    if config.jump is not None:
        return JumpNode(config, router, enter)
    if config.inline:
        return InlineNode(config, router)
    return Node(config, router)
