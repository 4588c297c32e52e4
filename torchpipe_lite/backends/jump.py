"""Jump and MapReduce: nodes that send a request through another graph of the same pipeline.

They are scheduling, not computation: the pipeline runs such a node in its router
(``schedule.jump_node``), with no instances of its own, so that no thread waits while the
sub-requests run (they queue and batch with all other traffic). These classes give the config
loader their names and keys.
"""

from __future__ import annotations

from typing import Any

from .base import Backend
from .registry import register_backend


@register_backend("Jump")
class Jump(Backend):
    """Runs the request through the graph rooted at ``jump`` (one root, one leaf) and goes on
    with that graph's ``result``."""

    PARAMS = frozenset({"jump"})

    def forward(self, batch: list[dict[str, Any]]) -> None:
        raise RuntimeError(f"{type(self).__name__} runs in the pipeline's router, not as a stage")


@register_backend("MapReduce")
class MapReduce(Jump):
    """Splits the list in ``split`` (default "data") into one sub-request per element, runs
    each through the graph at ``jump``, and merges their ``merge`` keys (default "result")
    back into a list, in order. A failing element fails the request, saying which one."""

    PARAMS = frozenset({"jump", "split", "merge"})
