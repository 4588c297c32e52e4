"""Load a pipeline configuration from TOML or a dict, and validate it into typed dataclasses."""

from __future__ import annotations

import difflib
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..backends.base import param_device_ids
from ..backends.registry import backend_class
from ..errors import ConfigError
from .expression import BackendSpec, ExpressionError, parse_backend_expression
from .schema import (
    DEFAULT_BATCHING_TIMEOUT_MS,
    DEFAULT_INSTANCE_NUM,
    NODE_KEYS,
    NodeConfig,
    PipelineConfig,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

logger = logging.getLogger(__name__)


def load_config(source: str | Path | Mapping[str, Any]) -> PipelineConfig:
    """Read ``source`` (a TOML file's path, TOML text, or a dict of the same shape) and
    validate it.

    Top-level keys that are not tables are defaults for every node; each table is a node.
    Raises :class:`ConfigError` naming the node and key at fault.
    """
    raw = _read(source)
    defaults = {key: value for key, value in raw.items() if not isinstance(value, Mapping)}
    tables = {name: value for name, value in raw.items() if isinstance(value, Mapping)}
    if not tables:
        raise ConfigError("no node defined: a node is a table with a 'backend' key")
    nodes = {
        name: _node(name, {**defaults, **table}, own_keys=set(table))
        for name, table in tables.items()
    }
    for name, table in tables.items():
        if nodes[name].inline:
            _warn_queue_keys_inline(name, table)
    order = _topological_order(nodes)
    fed = {target for node in nodes.values() for target in node.next_nodes}
    roots = tuple(name for name in order if name not in fed)
    return PipelineConfig(nodes=tuple(nodes[name] for name in order), roots=roots)


def _read(source: str | Path | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(source, Mapping):
        return source
    if isinstance(source, str) and _looks_like_toml(source):
        try:
            return tomllib.loads(source)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"the TOML text given is not valid TOML: {error}") from None
    path = Path(source)
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(
            f"configuration file not found: {path} (pass TOML text itself, or a dict, to load "
            f"a configuration that is not in a file)"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from None


def _looks_like_toml(text: str) -> bool:
    """A string with a line break or an ``=`` is TOML text, not a file name."""
    return "\n" in text or ("=" in text and not Path(text).exists())


def _node(name: str, table: dict[str, Any], own_keys: set[str]) -> NodeConfig:
    if "backend" not in table:
        close = difflib.get_close_matches("backend", sorted(own_keys), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r} for 'backend'?)" if close else ""
        raise ConfigError(f"missing required key{hint}", node=name, key="backend")
    spec = _backend_spec(name, table["backend"])
    min_batch = _optional_int(name, table, "min", minimum=1)
    max_batch = _optional_int(name, table, "max", minimum=1)
    if min_batch is not None and max_batch is not None and min_batch > max_batch:
        raise ConfigError(
            f"min ({min_batch}) is larger than max ({max_batch})", node=name, key="min"
        )
    try:
        param_device_ids(table)
    except ValueError as error:
        raise ConfigError(str(error), node=name, key="device_id") from None
    _warn_unknown_keys(name, table, spec, own_keys)
    _check_files(name, table, spec)
    return NodeConfig(
        name=name,
        backend=spec,
        instance_num=_int(name, table, "instance_num", DEFAULT_INSTANCE_NUM, minimum=1),
        batching_timeout_ms=_float(name, table, "batching_timeout", DEFAULT_BATCHING_TIMEOUT_MS),
        min_batch=min_batch,
        max_batch=max_batch,
        next_nodes=_next_nodes(name, table.get("next")),
        max_queue_size=_int(name, table, "max_queue_size", 0, minimum=0),
        request_timeout_ms=_float(name, table, "request_timeout", 0.0),
        inline=_bool(name, table, "inline"),
        params=dict(table),
    )


#: Keys that steer a node's queue and threads, which an inline node does not have.
_QUEUE_KEYS = ("instance_num", "batching_timeout", "max_queue_size", "request_timeout")


def _warn_queue_keys_inline(name: str, table: Mapping[str, Any]) -> None:
    """An inline node has no queue: a queue key set on the node itself has no effect there."""
    for key in _QUEUE_KEYS:
        if key in table:
            logger.warning(
                "[%s].%s has no effect: the node is inline (it runs on the delivering thread, "
                "with no queue or threads of its own)",
                name,
                key,
            )


def _backend_spec(node: str, text: Any) -> BackendSpec:
    if not isinstance(text, str):
        raise ConfigError(f"must be a string, got {text!r}", node=node, key="backend")
    try:
        spec = parse_backend_expression(text)
    except ExpressionError as error:
        raise ConfigError(str(error), node=node, key="backend") from None
    for part in spec.walk():
        try:
            cls = backend_class(part.name)
        except KeyError as error:
            raise ConfigError(str(error.args[0]), node=node, key="backend") from None
        limit = cls.MAX_CHILDREN
        if limit is not None and len(part.children) > limit:
            raise ConfigError(
                f"{part.name} takes at most {limit} child backend(s), got {len(part.children)}",
                node=node,
                key="backend",
            )
    return spec


def _number(node: str, table: Mapping[str, Any], key: str, kind: type) -> int | float:
    value = table[key]
    if isinstance(value, bool):
        raise ConfigError(f"must be a number, got {value!r}", node=node, key=key)
    try:
        if kind is int and isinstance(value, float):
            if not value.is_integer():
                raise ValueError
            return int(value)
        return kind(str(value).strip()) if isinstance(value, str) else kind(value)
    except (TypeError, ValueError):
        expected = "an integer" if kind is int else "a number"
        raise ConfigError(f"must be {expected}, got {value!r}", node=node, key=key) from None


def _int(node: str, table: Mapping[str, Any], key: str, default: int, *, minimum: int) -> int:
    value = _optional_int(node, table, key, minimum=minimum)
    return default if value is None else value


def _optional_int(node: str, table: Mapping[str, Any], key: str, *, minimum: int) -> int | None:
    if key not in table:
        return None
    value = int(_number(node, table, key, int))
    if value < minimum:
        raise ConfigError(f"must be at least {minimum}, got {value}", node=node, key=key)
    return value


def _float(node: str, table: Mapping[str, Any], key: str, default: float) -> float:
    if key not in table:
        return default
    value = float(_number(node, table, key, float))
    if value < 0 or value != value:  # NaN is not >= 0 either
        raise ConfigError(f"must be a non-negative number, got {value}", node=node, key=key)
    return value


def _bool(node: str, table: Mapping[str, Any], key: str) -> bool:
    value = table.get(key, False)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ConfigError(f"must be true or false, got {value!r}", node=node, key=key)


def _next_nodes(node: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    parts = value if isinstance(value, list | tuple) else str(value).split(",")
    names = tuple(str(part).strip() for part in parts if str(part).strip())
    if len(set(names)) != len(names):
        raise ConfigError(f"names a node twice: {value!r}", node=node, key="next")
    return names


def _warn_unknown_keys(
    node: str, table: Mapping[str, Any], spec: BackendSpec, own_keys: set[str]
) -> None:
    """Warn of keys no one reads, on the node's own keys only: a top-level default is meant
    for the nodes that use it. A near miss of a scheduler key is always a typo, even where a
    backend reads parameters it does not declare."""
    declared = [backend_class(part.name).PARAMS for part in spec.walk()]
    undeclared = any(params is None for params in declared)
    known = set(NODE_KEYS).union(*(params for params in declared if params is not None))
    for key in sorted(own_keys):
        if key in known:
            continue
        near_scheduler = difflib.get_close_matches(key, sorted(NODE_KEYS), n=1, cutoff=0.8)
        if undeclared and not near_scheduler:
            continue  # may be one of that backend's own parameters
        close = near_scheduler or difflib.get_close_matches(key, sorted(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        logger.warning("[%s].%s: unknown key, ignored by %s%s", node, key, spec, hint)


def _check_files(node: str, table: Mapping[str, Any], spec: BackendSpec) -> None:
    for part in spec.walk():
        for key in backend_class(part.name).FILE_PARAMS:
            if key in table and not Path(str(table[key])).is_file():
                raise ConfigError(f"file not found: {table[key]}", node=node, key=key)


def _topological_order(nodes: Mapping[str, NodeConfig]) -> list[str]:
    for node in nodes.values():
        for target in node.next_nodes:
            if target not in nodes:
                raise ConfigError(f"names an unknown node {target!r}", node=node.name, key="next")
    order: list[str] = []
    state: dict[str, str] = {}  # "visiting" or "done"

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = " -> ".join([*path[path.index(name) :], name])
            raise ConfigError(f"cycle: {cycle}", node=path[-1], key="next")
        state[name] = "visiting"
        for target in nodes[name].next_nodes:
            visit(target, [*path, name])
        state[name] = "done"
        order.append(name)

    for name in nodes:
        visit(name, [])
    order.reverse()
    return order
