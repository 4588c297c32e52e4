"""Builds a handler from the command line's choices: config, model file, engine device."""

from __future__ import annotations

import logging
from pathlib import Path

from service.device import engine_device
from service.handler import ClassifierHandler, RequestLimits
from service.model_file import ensure_model
from service.service_config import DEFAULT_CONFIG, ServiceConfig, load_service_config

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
    engine_socket: str | None = None,
    engine_clients: int = 8,
) -> tuple[ClassifierHandler, list[str]]:
    """The ``name`` handler ("baseline" or "pipelined") on the engine ``config_path`` defines,
    and the lines of a start-up summary. ``model`` and ``device`` override the config's model
    node. Exports the model first when the shipped config's file is missing, or when ``arch``
    asks for it (a model file the user named must exist otherwise). ``engine_socket``: the pipelined
    handler sends its model node's requests to the shared engine there (``--shared-engine``),
    at most ``engine_clients`` at a time."""
    if name not in HANDLERS:
        raise ValueError(f"unknown handler {name!r}; choose one of {', '.join(HANDLERS)}")
    config = load_service_config(config_path, model, device)
    if engine_socket is not None:
        if name != "pipelined":
            raise ValueError("a shared engine serves the pipelined handler only")
        config = config.with_engine(engine_socket, engine_clients)
    exported = ensure_model(config.model_path, arch, user_given=config.model_user_given)
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
        f"engine: {config.engine_backend}, precision {precision}, device {engine}"
        + (f", in the shared engine process at {engine_socket}" if engine_socket else ""),
        *describe_nodes(handler, config),
    ]
    return handler, summary


def describe_nodes(handler: ClassifierHandler, config: ServiceConfig) -> list[str]:
    """One line per node: backend, instances, batch range, placement, precision, limits."""
    lines = []
    for figures in handler.node_figures():
        params = config.node_params(figures.node) if figures.node in config.pipeline else {}
        low, high = handler.batch_range(figures.node)
        places = sorted({str(place) for place in figures.instance_placements if place})
        parts = [
            f"node {figures.node}: {figures.backend} x{figures.instances}",
            f"batch {low}..{high}",
            f"on {', '.join(places) or 'cpu'}",
        ]
        if "precision" in params:
            wanted = str(params["precision"])
            on_cpu = all(place.startswith("cpu") for place in places) if places else True
            parts.append(
                f"precision fp32 ({wanted} requested; CPU)"
                if wanted == "fp16" and on_cpu
                else f"precision {wanted}"
            )
        if handler.handler_name == "pipelined":  # the baseline has no queue to bound
            parts.append(f"max_queue_size {params.get('max_queue_size') or 'unbounded'}")
            timeout_ms = params.get("request_timeout")
            parts.append(f"request_timeout {f'{timeout_ms} ms' if timeout_ms else 'none'}")
        lines.append(", ".join(parts))
    return lines
