"""TorchPipe's composite nodes, ``min = "1&4&8"``: instance groups, one per batch range.

TorchPipe runs a node written with ``&`` (in ``backend``, ``min``, ``max``, ``instance_num`` or a
parameter such as ``model = "b1.onnx&b4.onnx&b8.onnx"``) as one backend per part, each with
its own range, and pools one backend of every group into a "virtual instance" whose range
spans them all. ``InstanceGroups`` is that virtual instance: the config loader makes a node of
``instance_num`` of them, each holding one child per group, and a batch is cut into pieces that
the groups accept, the largest first.
"""

from __future__ import annotations

from typing import Any

from .base import UNBOUNDED_BATCH, Backend
from .registry import register_backend


def group_params(params: dict[str, Any], index: int, groups: int) -> dict[str, Any]:
    """The parameters of group ``index``: every ``a&b&c`` value with one part per group
    becomes its part."""
    own = dict(params)
    for key, value in params.items():
        if isinstance(value, str) and "&" in value:
            parts = [part.strip() for part in value.split("&")]
            if len(parts) == groups:
                own[key] = parts[index]
    return own


def plan_pieces(size: int, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Cut a batch of ``size`` into (group, count) pieces: each time the group with the largest
    ``max`` whose ``min`` fits what is left, as many as it takes. ``ValueError`` when what is
    left fits no group."""
    pieces = []
    left = size
    while left:
        fitting = [(high, -group) for group, (low, high) in enumerate(ranges) if low <= left]
        if not fitting:
            raise ValueError(f"no instance group takes a batch of {left} (ranges {ranges})")
        high, negative = max(fitting)
        count = min(left, high)
        pieces.append((-negative, count))
        left -= count
    return pieces


@register_backend("InstanceGroups")
class InstanceGroups(Backend):
    """One backend per ``&`` group (its children), each given that group's parameters and
    run on the batches within its range; see the module docstring."""

    PARAMS = None
    MAX_CHILDREN = None

    def init(self, params: dict[str, Any]) -> None:
        if len(self.children) < 2:
            raise ValueError("InstanceGroups needs a child backend per group")
        groups = len(self.children)
        self.ranges: list[tuple[int, int]] = []
        for index, child in enumerate(self.children):
            own = group_params(params, index, groups)
            child.init(own)
            low = int(own.get("min", child.min()))
            high = int(own.get("max", child.max()))
            if low < child.min() or high > child.max() or low > high:
                raise ValueError(
                    f"group {index}: range {low}..{high} is not within what its backend "
                    f"accepts ({child.min()}..{child.max()})"
                )
            self.ranges.append((low, high))

    def forward(self, batch: list[dict[str, Any]]) -> None:
        start = 0
        for group, count in plan_pieces(len(batch), self.ranges):
            self.children[group].forward(batch[start : start + count])
            start += count

    def min(self) -> int:
        return min(low for low, _high in self.ranges)

    def max(self) -> int:
        highest = max(high for _low, high in self.ranges)
        return UNBOUNDED_BATCH if highest >= UNBOUNDED_BATCH else highest

    def placement(self) -> str | None:
        return self.children[0].placement()

    def close(self) -> None:
        for child in self.children:
            child.close()
