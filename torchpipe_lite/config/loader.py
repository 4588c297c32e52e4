"""Load a pipeline configuration from TOML or a dict, and validate it into typed dataclasses."""

from __future__ import annotations

import difflib
import logging
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..backends.base import param_device_ids
from ..backends.registry import backend_class
from ..errors import ConfigError
from ..filters import RUN, SWAP, check_filter
from ..values import Color, DeviceSpec, Precision
from .expression import BackendSpec, ExpressionError, parse_backend_expression
from .graph import JUMP_BACKENDS, Graph, build_graph, parse_map
from .schema import (
    DEFAULT_BATCHING_TIMEOUT_MS,
    DEFAULT_INSTANCE_NUM,
    NODE_KEYS,
    NodeConfig,
    PipelineConfig,
)
from .torchpipe_forms import (
    DEFAULT_BACKEND,
    group_count,
    group_instance_num,
    group_parts,
    group_ranges,
    normalise,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

logger = logging.getLogger(__name__)


def load_config(
    source: str | Path | Mapping[str, Any], *, require_files: bool = True
) -> PipelineConfig:
    """Read ``source`` (a TOML file's path, TOML text, or a dict of the same shape) and
    validate it.

    Top-level keys that are not tables (and the keys of a ``global`` table) are defaults for
    every node; each table is a node, and a table inside a node's table (``[rec.2]``) a logical
    node: another entry to that node's backend and instances, with its own ``next``, ``filter``
    and ``map``. TorchPipe's other forms load as there (``config.torchpipe_forms``): a node
    without ``backend`` runs ``Identity``, a configuration with no table is one node. A node's
    ``color``, ``precision`` and ``device`` become :class:`Color`, :class:`Precision` and
    :class:`DeviceSpec` in its ``params``. ``require_files=False`` leaves the backends' files
    (a model stage's ``model``) to be checked when the backend is created, for a caller that
    makes them after loading (the service exports its default model).
    Raises :class:`ConfigError` naming the node and key at fault.
    """
    raw = normalise(_read(source))
    defaults = {key: value for key, value in raw.items() if not isinstance(value, Mapping)}
    tables = _node_tables(raw)
    nodes: dict[str, NodeConfig] = {}
    for name, (table, physical) in tables.items():
        if physical == name:
            nodes[name] = _node(name, {**defaults, **table}, set(table), require_files)
    for name, (table, physical) in tables.items():
        if physical != name:
            nodes[name] = _logical_node(name, table, nodes[physical])
    next_nodes = {name: node.next_nodes for name, node in nodes.items()}
    feeders: dict[str, list[str]] = {name: [] for name in nodes}
    for name, targets in next_nodes.items():
        for target in targets:
            feeders.setdefault(target, []).append(name)
    maps = {
        name: parse_map(name, table["map"], feeders[name])
        for name, (table, _physical) in tables.items()
        if "map" in table
    }
    jumps = {name: _jump_target(node) for name, node in nodes.items() if _is_jump(node)}
    graph, order = build_graph(next_nodes, maps, jumps)
    for name, (table, _physical) in tables.items():
        nodes[name] = replace(
            nodes[name],
            filter=_filter(name, table, graph, name in maps),
            map_entries=maps.get(name, ()),
            jump=jumps.get(name),
        )
        if nodes[name].inline and not nodes[name].is_logical:
            _warn_queue_keys_inline(name, table)
    return PipelineConfig(
        nodes=tuple(nodes[name] for name in order), roots=graph.roots, graph=graph
    )


def _node_tables(raw: Mapping[str, Any]) -> dict[str, tuple[dict[str, Any], str]]:
    """Each node's own table and the physical node it runs on (itself, or for ``[rec.2]``,
    written as a table inside ``[rec]`` or as a ``"rec.2"`` key, ``rec``)."""
    found: dict[str, tuple[dict[str, Any], str]] = {}
    for name, value in raw.items():
        if not isinstance(value, Mapping):
            continue
        own = {key: item for key, item in value.items() if not isinstance(item, Mapping)}
        prefix = name.rsplit(".", 1)[0] if "." in name else None
        physical = prefix if prefix is not None and isinstance(raw.get(prefix), Mapping) else name
        found[name] = (own, physical)
        for alias, table in value.items():
            if isinstance(table, Mapping):
                found[f"{name}.{alias}"] = (dict(table), name)
    return found


def _logical_node(name: str, table: Mapping[str, Any], physical: NodeConfig) -> NodeConfig:
    """``name``: another entry to ``physical``'s backend and instances (its own next)."""
    for key in sorted(set(table) - {"next", "filter", "map", "backend"}):
        logger.warning(
            "[%s].%s has no effect: a logical node runs [%s]'s backend and instances, and "
            "reads only next, filter and map",
            name,
            key,
            physical.name,
        )
    return replace(
        physical, name=name, next_nodes=_next_nodes(name, table.get("next")), physical=physical.name
    )


def _is_jump(node: NodeConfig) -> bool:
    return node.backend.name in JUMP_BACKENDS and not node.is_logical


def _jump_target(node: NodeConfig) -> str:
    target = node.params.get("jump")
    if not isinstance(target, str) or not target.strip():
        raise ConfigError(
            f'{node.backend.name} needs jump = "<root of the graph to run>"',
            node=node.name,
            key="jump",
        )
    return target.strip()


def _filter(name: str, table: Mapping[str, Any], graph: Graph, has_map: bool) -> str:
    """The node's filter: as written, else Run at a root or where a map builds the input,
    else swap (the predecessor's result becomes the data)."""
    if "filter" in table:
        written = str(table["filter"]).strip()
        try:
            check_filter(written)
        except KeyError as error:
            raise ConfigError(str(error.args[0]), node=name, key="filter") from None
        return written
    return RUN if has_map or not graph.predecessors[name] else SWAP


def _read(source: str | Path | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(source, Mapping):
        return source
    if isinstance(source, str) and _looks_like_toml(source):
        try:
            return tomllib.loads(source)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"the TOML text given is not valid TOML: {error}") from None
    return read_toml(source)


def read_toml(source: str | Path) -> dict[str, Any]:
    """The tables of a TOML configuration file, unvalidated (for tools that adjust a
    configuration before loading it); ``ConfigError`` when it cannot be read or parsed."""
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
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error}") from None


def _looks_like_toml(text: str) -> bool:
    """A string with a line break or an ``=`` is TOML text, not a file name."""
    return "\n" in text or ("=" in text and not Path(text).exists())


def _node(name: str, table: dict[str, Any], own_keys: set[str], require_files: bool) -> NodeConfig:
    if "backend" not in table:  # TorchPipe's default (a near miss is warned of as unknown)
        table = {**table, "backend": DEFAULT_BACKEND}
    groups = group_count(name, table)
    if groups > 1:
        group_ranges(name, table, groups)
        parts = group_parts(name, table, "backend", groups)
        spec = BackendSpec("InstanceGroups", tuple(_backend_spec(name, part) for part in parts))
        min_batch = max_batch = None  # each group's own, applied by InstanceGroups
        instance_num = group_instance_num(name, table, groups)
    else:
        spec = _backend_spec(name, table["backend"])
        min_batch = _optional_int(name, table, "min", minimum=1)
        max_batch = _optional_int(name, table, "max", minimum=1)
        instance_num = _int(name, table, "instance_num", DEFAULT_INSTANCE_NUM, minimum=1)
    if min_batch is not None and max_batch is not None and min_batch > max_batch:
        raise ConfigError(
            f"min ({min_batch}) is larger than max ({max_batch})", node=name, key="min"
        )
    try:
        param_device_ids(table)
    except ValueError as error:
        raise ConfigError(str(error), node=name, key="device_id") from None
    _warn_unknown_keys(name, table, spec, own_keys)
    if require_files:
        _check_files(name, table, spec)
    return NodeConfig(
        name=name,
        backend=spec,
        instance_num=instance_num,
        batching_timeout_ms=_float(name, table, "batching_timeout", DEFAULT_BATCHING_TIMEOUT_MS),
        min_batch=min_batch,
        max_batch=max_batch,
        next_nodes=_next_nodes(name, table.get("next")),
        max_queue_size=_int(name, table, "max_queue_size", 0, minimum=0),
        request_timeout_ms=_float(name, table, "request_timeout", 0.0),
        inline=_bool(name, table, "inline"),
        params=_typed_params(name, table),
        physical=name,
    )


#: Parameters read once here into a typed value, so that no backend re-parses the string.
_TYPED_PARAMS = {"color": Color.parse, "precision": Precision.parse, "device": DeviceSpec.parse}


def _typed_params(node: str, table: Mapping[str, Any]) -> dict[str, Any]:
    params = dict(table)
    for key, parse in _TYPED_PARAMS.items():
        if key in params:
            try:
                params[key] = parse(params[key])
            except ValueError as error:
                raise ConfigError(str(error), node=node, key=key) from None
    return params


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
    if spec.filter:
        raise ConfigError(
            f"({spec.filter}) in {text!r}: a filter in parentheses goes before a child of "
            "Sequential; a node's own filter is its 'filter' key",
            node=node,
            key="backend",
        )
    for part in spec.walk():
        _check_child_filters(node, part)
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


def _check_child_filters(node: str, part: BackendSpec) -> None:
    for child in part.children:
        if not child.filter:
            continue
        if part.name != "Sequential":
            raise ConfigError(
                f"({child.filter}){child.name}: filters go before children of Sequential, "
                f"not of {part.name}",
                node=node,
                key="backend",
            )
        try:
            check_filter(child.filter)
        except KeyError as error:
            raise ConfigError(str(error.args[0]), node=node, key="backend") from None


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
            if key not in table:
                continue
            paths = str(table[key]).split("&") if spec.name == "InstanceGroups" else [table[key]]
            for path in paths:
                if not Path(str(path).strip()).is_file():
                    raise ConfigError(f"file not found: {path}", node=node, key=key)
