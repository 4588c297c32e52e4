"""TorchPipe's configuration forms, brought to the one shape the loader validates.

- A ``global`` table holds defaults for every node, as top-level keys do.
- A configuration with no node table is one node: its keys (``{"backend": "DecodeMat"}``).
- ``Interpreter::backend`` names TorchPipe's scheduler: ``PipelineV3`` (its default, and what
  every graph here is run by) is dropped; another backend is the backend of a one-node
  configuration (TorchPipe then runs it alone) or of a node that names none.
- ``&`` in ``backend``, ``min``, ``max`` or ``instance_num`` makes instance groups, one per part
  (``backends.instance_groups``).
- TensorRT's forms of ``min``/``max``: an input shape (``"4x3x224x224"``, or several inputs'
  shapes joined by ``,``) is read as its batch axis, the first number; ``;`` between parts
  (``max = "16;16"``, ``min = "16;1"``) lists TensorRT optimisation profiles, one per
  instance. Here a node has one batch range, so the profiles' ranges load as the one range
  covering them all (logged): a TensorRT profile tuned for a narrower range is a speed matter
  that needs TensorRT.

A node that names no backend gets ``Identity``, TorchPipe's default; the loader does that.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError

logger = logging.getLogger(__name__)

#: The name of the node of a configuration written as one node's keys.
SINGLE_NODE_NAME = "default"
#: TorchPipe's default graph scheduler, the only one there is here.
GRAPH_SCHEDULER = "PipelineV3"
INTERPRETER_KEY = "Interpreter::backend"
DEFAULT_BACKEND = "Identity"
#: The node keys whose ``&`` parts make instance groups.
GROUP_KEYS = ("backend", "min", "max", "instance_num")
#: One input's shape as TensorRT's configs write it: "4x3x224x224" (or a bare "4").
_SHAPE = re.compile(r"\d+(x\d+)*")


def normalise(raw: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` with TorchPipe's forms (see the module docstring) rewritten as plain ones."""
    raw = dict(raw)
    shared = raw.pop("global", {})
    if not isinstance(shared, Mapping):
        raise ConfigError(f"must be a table of defaults, got {shared!r}", key="global")
    scalars = {key: value for key, value in raw.items() if not isinstance(value, Mapping)}
    tables = {key: value for key, value in raw.items() if isinstance(value, Mapping)}
    defaults = {**shared, **scalars}
    scheduler = defaults.pop(INTERPRETER_KEY, GRAPH_SCHEDULER)
    if not tables:
        if not defaults and scheduler == GRAPH_SCHEDULER:
            raise ConfigError("empty configuration: no node and no key")
        return {
            SINGLE_NODE_NAME: _with_batch_bounds(
                SINGLE_NODE_NAME, _with_backend(defaults, scheduler)
            )
        }
    if scheduler != GRAPH_SCHEDULER:
        if len(tables) != 1:
            raise ConfigError(
                f"{INTERPRETER_KEY} = {scheduler!r} over a graph of {len(tables)} nodes: a graph "
                f"runs on {GRAPH_SCHEDULER} here; give each node its backend instead",
                key=INTERPRETER_KEY,
            )
        defaults["backend"] = defaults.get("backend", scheduler)
    out: dict[str, Any] = _with_batch_bounds("global", defaults)
    for name, table in tables.items():
        own = dict(table)
        out[name] = _with_batch_bounds(
            name, _with_backend(own, own.pop(INTERPRETER_KEY, GRAPH_SCHEDULER))
        )
    return out


def _with_backend(table: dict[str, Any], scheduler: Any) -> dict[str, Any]:
    if scheduler != GRAPH_SCHEDULER and "backend" not in table:
        table["backend"] = scheduler
    return table


def tensorrt_batch_bounds(text: str) -> list[int] | None:
    """The batch sizes a TensorRT-style ``min``/``max`` names, one per ``;`` profile: each
    profile's first input's first axis. ``None`` when ``text`` is not of that form."""
    batches = []
    for profile in text.split(";"):
        shapes = [shape.strip() for shape in profile.split(",")]
        if not all(_SHAPE.fullmatch(shape) for shape in shapes):
            return None
        batches.append(int(shapes[0].split("x")[0]))
    return batches


def _with_batch_bounds(node: str, table: dict[str, Any]) -> dict[str, Any]:
    """``table`` with a TensorRT-style ``min``/``max`` as the batch size it means: the
    smallest of its profiles' for ``min``, the largest for ``max``."""
    for key, pick in (("min", min), ("max", max)):
        value = table.get(key)
        if not isinstance(value, str) or not (";" in value or "x" in value) or "&" in value:
            continue
        batches = tensorrt_batch_bounds(value)
        if batches is None:
            continue  # the loader reports it as it stands
        table[key] = pick(batches)
        if len(batches) > 1:
            logger.warning(
                "[%s].%s = %r: TensorRT optimisation profiles, one per instance; loaded as "
                "one range for every instance, %s %d (a profile per narrower range needs "
                "TensorRT, and changes only speed)",
                node,
                key,
                value,
                key,
                table[key],
            )
    return table


def group_count(node: str, table: Mapping[str, Any]) -> int:
    """How many instance groups the node's ``&`` values make (1: none); ``ConfigError`` when
    they disagree."""
    counts = {
        key: len(str(table[key]).split("&"))
        for key in GROUP_KEYS
        if isinstance(table.get(key), str) and "&" in table[key]
    }
    if not counts:
        return 1
    if len(set(counts.values())) != 1:
        written = ", ".join(f"{key} = {table[key]!r}" for key in counts)
        raise ConfigError(f"instance groups disagree in number: {written}", node=node)
    return next(iter(counts.values()))


def group_parts(node: str, table: Mapping[str, Any], key: str, groups: int) -> list[str]:
    """The ``groups`` parts of ``key`` (one value repeated for each when it has no ``&``)."""
    parts = [part.strip() for part in str(table[key]).split("&")]
    if len(parts) == 1:
        return parts * groups
    if len(parts) != groups:
        raise ConfigError(
            f"has {len(parts)} parts for {groups} instance groups", node=node, key=key
        )
    return parts


def group_instance_num(node: str, table: Mapping[str, Any], groups: int) -> int:
    """The node's virtual instances: each group's ``instance_num``, which must agree."""
    if "instance_num" not in table:
        return 1
    counts = set(group_parts(node, table, "instance_num", groups))
    if len(counts) != 1:
        raise ConfigError(
            f"{table['instance_num']!r}: instance groups of different sizes are not supported "
            "(each virtual instance holds one backend of every group)",
            node=node,
            key="instance_num",
        )
    try:
        count = int(counts.pop())
    except ValueError:
        raise ConfigError(
            f"must be an integer, got {table['instance_num']!r}", node=node, key="instance_num"
        ) from None
    if count < 1:
        raise ConfigError(f"must be at least 1, got {count}", node=node, key="instance_num")
    return count


def group_ranges(node: str, table: Mapping[str, Any], groups: int) -> None:
    """Check each group's ``min``/``max`` parts (integers, at least 1, min <= max)."""
    bounds = {}
    for key in ("min", "max"):
        if key not in table:
            continue
        try:
            bounds[key] = [int(part) for part in group_parts(node, table, key, groups)]
        except ValueError:
            raise ConfigError(
                f"must be integers like '1&4&8', got {table[key]!r}", node=node, key=key
            ) from None
        if min(bounds[key]) < 1:
            raise ConfigError(f"must be at least 1, got {table[key]!r}", node=node, key=key)
    if len(bounds) == 2:
        for index, (low, high) in enumerate(zip(bounds["min"], bounds["max"], strict=True)):
            if low > high:
                raise ConfigError(f"group {index}: min {low} > max {high}", node=node, key="min")
