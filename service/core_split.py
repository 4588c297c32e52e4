"""Which of a pipeline's nodes run in the GPU core process, and what the fronts keep.

With a core (``--workers N`` for the pipelined handler), the nodes that need the process that
owns the GPU (the model node, and any stage on GPU tensors before it) run in the core; the
stages before them (CPU decode, resize) run in every front. The front's part ends in a node
that sends its batches to the core (``Remote``); a pipeline that is all core leaves the
front nothing to run: it calls the core directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Backends that need the GPU-owning process (their names in a node's backend expression).
CORE_BACKENDS = (
    "SyncTensor",
    "DecodeTensor",
    "ResizeTensor",
    "CvtColorTensor",
    "TorchTensor",
    "TensorrtTensor",
)
#: The front's node that sends its batches to the core.
FRONT_TAIL = "to_core"
#: Batches each front may have at the core at once (one connection each).
FRONT_TAIL_INSTANCES = 4


class CoreSplitError(ValueError):
    """The pipeline cannot be split into front stages followed by core stages."""


def core_nodes(tables: Mapping[str, Any], model_node: str) -> list[str]:
    """The nodes that run in the core: the model node and those whose backend needs the GPU."""
    return [
        name
        for name, table in tables.items()
        if isinstance(table, dict)
        and (name == model_node or any(b in str(table.get("backend", "")) for b in CORE_BACKENDS))
    ]


def split_tables(
    tables: Mapping[str, Any], model_node: str, core_address: str
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(the front's tables, or None when the core runs every node; the core's tables).

    Top-level defaults go to both. The front's nodes that fed a core node feed ``to_core``
    instead, a ``Remote`` node with the model node's queue limits.
    """
    in_core = set(core_nodes(tables, model_node))
    defaults = {key: value for key, value in tables.items() if not isinstance(value, dict)}
    nodes = {key: value for key, value in tables.items() if isinstance(value, dict)}
    for name in in_core:
        for target in _next(nodes[name]):
            if target not in in_core:
                raise CoreSplitError(
                    f"node [{name}] runs in the GPU core but feeds [{target}], which does not: "
                    "the core's nodes must end the pipeline"
                )
    core = {**defaults, **{name: table for name, table in nodes.items() if name in in_core}}
    front_names = [name for name in nodes if name not in in_core]
    if not front_names:
        return None, core
    front: dict[str, Any] = dict(defaults)
    for name in front_names:
        table = dict(nodes[name])
        targets = _next(table)
        if any(target in in_core for target in targets):
            kept = [target for target in targets if target not in in_core]
            table["next"] = ",".join([*kept, FRONT_TAIL])
        front[name] = table
    model = nodes[model_node]
    tail: dict[str, Any] = {
        "backend": "Remote",
        "address": core_address,
        "instance_num": FRONT_TAIL_INSTANCES,
        "batching_timeout": 0,
    }
    for key in ("max_queue_size", "request_timeout"):
        if key in model:
            tail[key] = model[key]
    front[FRONT_TAIL] = tail
    return front, core


def _next(table: Mapping[str, Any]) -> list[str]:
    value = table.get("next", "")
    parts = value if isinstance(value, list) else str(value).split(",")
    return [str(part).strip() for part in parts if str(part).strip()]
