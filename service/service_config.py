"""Reads a pipeline TOML for the service once: the typed pipeline, model node, image settings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import service.handlers.class_scores  # noqa: F401  (registers ClassScores, which the configs name)
from service.core_split import CoreSplitError, split_tables
from torchpipe_lite import Color, load_config
from torchpipe_lite.errors import ConfigError
from torchpipe_lite.extend import (
    DEFAULT_MAX_PIXELS,
    BackendSpec,
    NodeConfig,
    PipelineConfig,
    param_color,
    param_positive,
    read_toml,
)

#: The configs shipped with the service; their model is exported on first start when missing.
SHIPPED_CONFIGS = Path(__file__).resolve().parent / "configs"
#: The default pipeline: CPU decode and resize, then the model stage.
DEFAULT_CONFIG = SHIPPED_CONFIGS / "resnet50.toml"


class ServiceConfigError(ValueError):
    """The service cannot use this configuration file; says which file and why."""


@dataclass(frozen=True)
class ImageSettings:
    """What the image stages before the model do, for the code that does it outside the
    pipeline (the locked baseline, the peers' model code) and for the shared engine's slots."""

    #: The stages' ``resize_h`` x ``resize_w``; ``None`` when no stage sets both.
    resize_hw: tuple[int, int] | None = None
    color: Color = Color.RGB
    max_pixels: int = DEFAULT_MAX_PIXELS

    @classmethod
    def of(cls, stages: Sequence[NodeConfig]) -> ImageSettings:
        """The settings of ``stages`` (the nodes other than the model's, in the file's order):
        each key from the first stage that has it."""
        params: dict[str, Any] = {}
        for stage in reversed(stages):
            params.update(stage.params)
        resize_hw = None
        if "resize_h" in params and "resize_w" in params:
            resize_hw = (param_positive(params, "resize_h"), param_positive(params, "resize_w"))
        return cls(
            resize_hw=resize_hw,
            color=param_color(params, default=Color.RGB),
            max_pixels=param_positive(params, "max_pixels", DEFAULT_MAX_PIXELS),
        )


@dataclass(frozen=True)
class ServiceConfig:
    """A pipeline configuration, loaded and validated once, plus what the service reads out
    of it."""

    path: Path
    #: The whole pipeline, as ``tp.pipe`` takes it, with the model path made absolute.
    pipeline: PipelineConfig
    #: The node that runs the model (the one with a ``model`` key).
    model_node: str
    #: What the image stages before the model do.
    images: ImageSettings
    #: Whether the user named the model file (``--model``, or a config of their own), which
    #: must then exist; the shipped configs' model may be exported on first start.
    model_user_given: bool = True
    #: The node tables as read (with the model path made absolute): what the core split cuts.
    tables: Mapping[str, Any] = field(default_factory=dict)
    #: Set in the fronts of a core layout: the GPU cores' Unix sockets (one per GPU, comma-
    #: separated), each running the model node and the GPU stages before it
    #: (``service.core_split``).
    core_socket: str | None = None

    @property
    def model(self) -> NodeConfig:
        """The model node, validated (its ``params`` hold the typed precision and device)."""
        return self.pipeline.node(self.model_node)

    def with_core(self, socket_path: str) -> ServiceConfig:
        """This config for a front of the GPU core listening on ``socket_path``."""
        return replace(self, core_socket=socket_path)

    def front_pipeline(self) -> PipelineConfig | None:
        """What a front builds: the whole pipeline without a core; with one, the stages the
        core does not run, ending in a node that sends to it (None: the core runs them all)."""
        if self.core_socket is None:
            return self.pipeline
        front, _ = self._split()
        return None if front is None else load_config(front, require_files=False)

    def core_pipeline(self) -> PipelineConfig:
        """What the GPU core builds: the model node and the GPU stages before it."""
        _, core = self._split()
        return load_config(core, require_files=False)

    def _split(self) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        try:
            return split_tables(self.tables, self.model_node, self.core_socket or "")
        except CoreSplitError as error:
            raise ServiceConfigError(f"{self.path}: {error}") from None

    @property
    def scores_in_model_node(self) -> bool:
        """Whether the model node ends with ``ClassScores`` (softmax per batch)."""
        return _without_scores(self.model.backend) != self.model.backend

    @property
    def model_path(self) -> Path:
        return Path(self.model.params["model"])

    @property
    def engine_backend(self) -> str:
        """The model node's backend expression, e.g. ``SyncTensor[TorchTensor]``."""
        return str(self.model.backend)

    def engine_params(self, batch_size: int) -> dict[str, Any]:
        """Parameters for one engine instance outside the pipeline (the locked baseline): what
        the pipeline gives its model node's first instance (every key of the node, with the
        top-level defaults and the typed values), with the batch range pinned to
        ``batch_size`` and one instance."""
        return {
            **self.model.params,
            "min": batch_size,
            "max": batch_size,
            "instance_index": 0,
            "instance_num": 1,
        }


def load_service_config(
    path: str | Path,
    model_override: str | Path | None = None,
    device_override: str | None = None,
) -> ServiceConfig:
    """Reads ``path`` and validates it (``ConfigError`` naming node and key, before anything
    is built); ``model_override`` replaces the model node's ``model`` and ``device_override``
    its ``device``. A relative model path resolves against the current directory
    (TorchPipe's convention), here, once.

    A model node named after its model file (``[resnet50]`` for ``resnet50.onnx``) takes the
    name of the file ``model_override`` names, so that logs and metrics say which model runs.
    The model file need not exist yet: the service exports the shipped one after this.
    """
    path = Path(path)
    try:
        raw = read_toml(path)
    except ConfigError as exc:
        raise ServiceConfigError(f"cannot read the pipeline config {path}: {exc}") from None
    model_nodes = [
        name for name, table in raw.items() if isinstance(table, dict) and "model" in table
    ]
    if len(model_nodes) != 1:
        raise ServiceConfigError(
            f"{path}: the service needs exactly one node with a `model` key, found "
            f"{len(model_nodes)} ({', '.join(model_nodes) or 'none'})"
        )
    (model_node,) = model_nodes
    if "backend" not in raw[model_node]:
        raise ServiceConfigError(f"{path}: node [{model_node}] has no `backend`")
    if model_override is not None:
        renamed = _model_name(model_override)
        if model_node == _model_name(raw[model_node]["model"]) and renamed not in raw:
            raw = _renamed_node(raw, model_node, renamed)
            model_node = renamed
    model = model_override if model_override is not None else raw[model_node]["model"]
    raw[model_node]["model"] = str(Path(model).expanduser().absolute())
    if device_override is not None:
        raw[model_node]["device"] = device_override
    pipeline = load_config(raw, require_files=False)
    stages = [
        pipeline.node(name)
        for name, table in raw.items()
        if isinstance(table, dict) and name != model_node
    ]
    shipped = path.resolve().parent == SHIPPED_CONFIGS
    return ServiceConfig(
        path=path,
        pipeline=pipeline,
        model_node=model_node,
        images=ImageSettings.of(stages),
        tables=raw,
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


def _with_backend(node: NodeConfig, backend: BackendSpec, **params: Any) -> NodeConfig:
    """``node`` running ``backend``, with ``params`` over its own (its ``backend`` key
    following, for anyone who reads the node's params as written)."""
    return replace(node, backend=backend, params={**node.params, "backend": str(backend), **params})


def _without_scores(spec: BackendSpec) -> BackendSpec:
    """``spec`` without a ``ClassScores`` that ends its last ``Sequential``."""
    if not spec.children:
        return spec
    children = list(spec.children)
    if spec.name == "Sequential" and len(children) > 1 and children[-1].name == "ClassScores":
        children.pop()
        if len(children) == 1:
            return _without_scores(children[0])
    children[-1] = _without_scores(children[-1])
    return BackendSpec(spec.name, tuple(children))
