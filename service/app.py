"""Builds a handler from the command line's choices: config, model file, engine device."""

from __future__ import annotations

import logging
from pathlib import Path

from service.device import engine_device
from service.handler import ClassifierHandler, RequestLimits
from service.model_file import ensure_model
from service.service_config import DEFAULT_CONFIG, load_service_config

logger = logging.getLogger(__name__)

HANDLERS = ("baseline", "pipelined")


def build_handler(
    name: str,
    config_path: str | Path = DEFAULT_CONFIG,
    *,
    model: str | Path | None = None,
    device: str | None = None,
    arch: str | None = None,
    limits: RequestLimits | None = None,
) -> tuple[ClassifierHandler, list[str]]:
    """The ``name`` handler ("baseline" or "pipelined") on the engine ``config_path`` defines,
    and the lines of a start-up summary. ``model`` and ``device`` override the config's model
    node. Exports the model first when its file is missing."""
    if name not in HANDLERS:
        raise ValueError(f"unknown handler {name!r}; choose one of {', '.join(HANDLERS)}")
    config = load_service_config(config_path, model, device)
    exported = ensure_model(config.model_path, arch)
    engine_params = config.node_params(config.model_node)
    engine = engine_device(engine_params)
    if name == "baseline":
        from service.main_trt import BaselineHandler

        handler: ClassifierHandler = BaselineHandler(config, device=engine, limits=limits)
    else:
        from service.main_torchpipe import PipelinedHandler

        handler = PipelinedHandler(config, device=engine, limits=limits)
    precision = str(engine_params.get("precision", "fp32"))
    if precision == "fp16" and engine == "cpu":
        precision = "fp16 requested, fp32 on the CPU"
    summary = [
        f"handler: {name}",
        f"config: {config.path}",
        f"model: {config.model_path}" + (" (just exported, RANDOM WEIGHTS)" if exported else ""),
        f"engine: {config.engine_backend}, precision {precision}, device {engine}",
    ]
    return handler, summary
