"""Reads a pipeline TOML for the service: the model path, the engine's parameters, the resize."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import service.handlers.class_scores  # noqa: F401  (registers ClassScores, which the configs name)
from torchpipe_lite.config import read_toml
from torchpipe_lite.errors import ConfigError

#: The configs shipped with the service; their model is exported on first start when missing.
SHIPPED_CONFIGS = Path(__file__).resolve().parent / "configs"
#: The default pipeline: CPU decode and resize, then the model stage.
DEFAULT_CONFIG = SHIPPED_CONFIGS / "resnet50.toml"


class ServiceConfigError(ValueError):
    """The service cannot use this configuration file; says which file and why."""


@dataclass(frozen=True)
class ServiceConfig:
    """A pipeline configuration plus what the service reads out of it."""

    path: Path
    #: The whole configuration, as ``tp.pipe`` takes it, with the model path made absolute.
    pipeline: dict[str, Any]
    #: The node that runs the model (the one with a ``model`` key).
    model_node: str
    #: Whether the user named the model file (``--model``, or a config of their own), which
    #: must then exist; the shipped configs' model may be exported on first start.
    model_user_given: bool = True
    #: Set in the workers of ``--shared-engine``: the model node runs in the engine process
    #: listening on this Unix socket, and this process sends it requests (``EngineTensor``).
    engine_socket: str | None = None
    #: With ``engine_socket``: how many requests this process may have at the engine at once.
    engine_clients: int = 8

    def with_engine(self, socket_path: str, clients: int) -> ServiceConfig:
        """This config for a worker of a shared engine listening on ``socket_path``."""
        return replace(self, engine_socket=socket_path, engine_clients=clients)

    def pipeline_to_build(self) -> dict[str, Any]:
        """The configuration this process builds: ``pipeline`` itself, or, with an engine,
        ``pipeline`` whose model node sends its requests to the engine.

        There the node keeps its queue limits, but batching is the engine's job: the node's
        instances (``engine_clients`` of them, each one connection) take requests as they come,
        with no batching window, so no request waits here for a fuller batch.
        """
        if self.engine_socket is None:
            return self.pipeline
        table = {
            key: value
            for key, value in self.pipeline[self.model_node].items()
            if key in ("next", "max", "max_queue_size", "request_timeout", "inline")
        }
        table.update(
            backend="Sequential[EngineTensor,ClassScores]"
            if self.scores_in_model_node
            else "EngineTensor",
            engine=self.engine_socket,
            instance_num=self.engine_clients,
            batching_timeout=0,
        )
        return {**self.pipeline, self.model_node: table}

    def input_hwc(self) -> tuple[int, int, int]:
        """The model's input pixels as the stages before it make them: height, width, 3."""
        params = self.preprocess_params()
        try:
            return int(params["resize_h"]), int(params["resize_w"]), 3
        except (KeyError, ValueError) as exc:
            raise ServiceConfigError(
                f"{self.path}: a shared engine needs the stages' resize_h and resize_w ({exc})"
            ) from None

    @property
    def scores_in_model_node(self) -> bool:
        """Whether the model node ends with ``ClassScores`` (softmax per batch)."""
        return _without_scores(self.engine_backend) != self.engine_backend

    def engine_node_pipeline(self) -> dict[str, Any]:
        """The configuration the shared engine process builds its node from: the model node
        without a final ``ClassScores``, which the workers run instead (the engine's slots
        carry float results)."""
        table = {**self.pipeline[self.model_node]}
        table["backend"] = _without_scores(self.engine_backend)
        return {**self.pipeline, self.model_node: table}

    @property
    def model_path(self) -> Path:
        return Path(self.pipeline[self.model_node]["model"])

    @property
    def engine_backend(self) -> str:
        """The model node's backend expression, e.g. ``SyncTensor[TorchTensor]``."""
        return str(self.node_params(self.model_node)["backend"])

    def node_params(self, node: str) -> dict[str, Any]:
        """A node's parameters: the top-level defaults overlaid with the node's own keys."""
        defaults = {k: v for k, v in self.pipeline.items() if not isinstance(v, dict)}
        return {**defaults, **self.pipeline[node]}

    def engine_params(self, batch_size: int) -> dict[str, Any]:
        """Parameters for one engine instance outside the pipeline (the locked baseline): what
        the pipeline gives its model node's first instance (the node's table over the top-level
        defaults, every key included, as ``torchpipe_lite`` passes them), with the batch range
        pinned to ``batch_size`` and one instance."""
        params = self.node_params(self.model_node)
        params.update(min=batch_size, max=batch_size, instance_index=0, instance_num=1)
        return params

    def preprocess_params(self) -> dict[str, Any]:
        """Parameters of the stages before the model (``resize_h``, ``color``...): the top-level
        defaults overlaid with every other node's keys, the first node in the file winning."""
        params = {k: v for k, v in self.pipeline.items() if not isinstance(v, dict)}
        tables = [
            t for n, t in self.pipeline.items() if isinstance(t, dict) and n != self.model_node
        ]
        for table in reversed(tables):
            params.update(table)
        return params


def load_service_config(
    path: str | Path,
    model_override: str | Path | None = None,
    device_override: str | None = None,
) -> ServiceConfig:
    """Reads ``path``; ``model_override`` replaces the model node's ``model`` and
    ``device_override`` its ``device``. A relative model path resolves against the current
    directory (TorchPipe's convention), here, once.

    A model node named after its model file (``[resnet50]`` for ``resnet50.onnx``) takes the
    name of the file ``model_override`` names, so that logs and metrics say which model runs.
    """
    path = Path(path)
    try:
        pipeline = read_toml(path)
    except ConfigError as exc:
        raise ServiceConfigError(f"cannot read the pipeline config {path}: {exc}") from None
    model_nodes = [
        name for name, table in pipeline.items() if isinstance(table, dict) and "model" in table
    ]
    if len(model_nodes) != 1:
        raise ServiceConfigError(
            f"{path}: the service needs exactly one node with a `model` key, found "
            f"{len(model_nodes)} ({', '.join(model_nodes) or 'none'})"
        )
    (model_node,) = model_nodes
    if "backend" not in pipeline[model_node]:
        raise ServiceConfigError(f"{path}: node [{model_node}] has no `backend`")
    if model_override is not None:
        renamed = _model_name(model_override)
        if model_node == _model_name(pipeline[model_node]["model"]) and renamed not in pipeline:
            pipeline = _renamed_node(pipeline, model_node, renamed)
            model_node = renamed
    model = model_override if model_override is not None else pipeline[model_node]["model"]
    pipeline[model_node]["model"] = str(Path(model).expanduser().absolute())
    if device_override is not None:
        pipeline[model_node]["device"] = device_override
    shipped = path.resolve().parent == SHIPPED_CONFIGS
    return ServiceConfig(
        path=path,
        pipeline=pipeline,
        model_node=model_node,
        model_user_given=model_override is not None or not shipped,
    )


def _model_name(model: str | Path) -> str:
    """The name a model file gives its node: ``models/resnet18.onnx`` -> ``resnet18``."""
    return Path(model).name.split(".")[0]


def _renamed_node(pipeline: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """``pipeline`` with node ``old`` called ``new``, in its place and in every ``next``."""

    def renamed_next(value: Any) -> Any:
        parts = value if isinstance(value, list) else str(value).split(",")
        names = [new if str(part).strip() == old else str(part).strip() for part in parts]
        return names if isinstance(value, list) else ",".join(names)

    result: dict[str, Any] = {}
    for name, table in pipeline.items():
        if isinstance(table, dict) and "next" in table:
            table = {**table, "next": renamed_next(table["next"])}
        result[new if name == old else name] = table
    return result


def _without_scores(expression: str) -> str:
    """``expression`` without a ``ClassScores`` that ends its last ``Sequential``."""
    from torchpipe_lite.config import parse_backend_expression
    from torchpipe_lite.config.expression import BackendSpec

    def strip(spec: BackendSpec) -> BackendSpec:
        if not spec.children:
            return spec
        children = list(spec.children)
        if spec.name == "Sequential" and len(children) > 1 and children[-1].name == "ClassScores":
            children.pop()
            if len(children) == 1:
                return strip(children[0])
        children[-1] = strip(children[-1])
        return BackendSpec(spec.name, tuple(children))

    return str(strip(parse_backend_expression(expression)))
