"""TorchPipe's configuration forms, brought to the one shape the loader validates.

- A ``global`` table holds defaults for every node, as top-level keys do.
- A configuration with no node table is one node: its keys (``{"backend": "DecodeMat"}``).
- ``Interpreter::backend`` names TorchPipe's scheduler: ``PipelineV3`` (its default, and what
  every graph here is run by) is dropped; another backend is the backend of a one-node
  configuration (TorchPipe then runs it alone) or of a node that names none.
- ``&`` in ``backend``, ``min``, ``max`` or ``instance_num`` makes instance groups, one per part
  (``backends.instance_groups``).

A node that names no backend gets ``Identity``, TorchPipe's default; the loader does that.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError

#: The name of the node of a configuration written as one node's keys.
SINGLE_NODE_NAME = "default"
#: TorchPipe's default graph scheduler, the only one there is here.
GRAPH_SCHEDULER = "PipelineV3"
INTERPRETER_KEY = "Interpreter::backend"
DEFAULT_BACKEND = "Identity"
#: The node keys whose ``&`` parts make instance groups.
GROUP_KEYS = ("backend", "min", "max", "instance_num")


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
        return {SINGLE_NODE_NAME: _with_backend(defaults, scheduler)}
    if scheduler != GRAPH_SCHEDULER:
        if len(tables) != 1:
            raise ConfigError(
                f"{INTERPRETER_KEY} = {scheduler!r} over a graph of {len(tables)} nodes: a graph "
                f"runs on {GRAPH_SCHEDULER} here; give each node its backend instead",
                key=INTERPRETER_KEY,
            )
        defaults["backend"] = defaults.get("backend", scheduler)
    out: dict[str, Any] = dict(defaults)
    for name, table in tables.items():
        own = dict(table)
        out[name] = _with_backend(own, own.pop(INTERPRETER_KEY, GRAPH_SCHEDULER))
    return out


def _with_backend(table: dict[str, Any], scheduler: Any) -> dict[str, Any]:
    if scheduler != GRAPH_SCHEDULER and "backend" not in table:
        table["backend"] = scheduler
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
