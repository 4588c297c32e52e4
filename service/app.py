"""Builds a handler from the command line's choices: config, model file, engine device."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from service.device import engine_device
from service.handlers.admission import Admission, AdmissionLimits, RequestLimits
from service.handlers.handler import ClassifierHandler
from service.model_file import ensure_model
from service.service_config import (
    DEFAULT_CONFIG,
    ServiceConfig,
    ServiceConfigError,
    load_service_config,
)
from torchpipe_lite import Precision
from torchpipe_lite.extend import param_precision, running_precision

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
    admission: Admission | None = None,
    core_socket: str | None = None,
    threads: int = 8,
) -> tuple[ClassifierHandler, list[str]]:
    """The ``name`` handler ("baseline" or "pipelined") on the engine ``config_path`` defines,
    and the lines of a start-up summary. ``model`` and ``device`` override the config's model
    node. Exports the model first when the shipped config's file is missing, or when ``arch``
    asks for it (a model file the user named must exist otherwise). ``core_socket``: the pipelined
    handler is a front of the GPU core there, which runs the model node and the GPU stages.
    ``threads``: the handler's pool threads, for the work that waits (``--threads``)."""
    if name not in HANDLERS:
        raise ValueError(f"unknown handler {name!r}; choose one of {', '.join(HANDLERS)}")
    config = load_service_config(config_path, model, device)
    if core_socket is not None:
        if name != "pipelined":
            raise ValueError("a GPU core serves the pipelined handler only")
        config = config.with_core(core_socket)
    exported = ensure_model(config.model_path, arch, user_given=config.model_user_given)
    admission = admission_for(config, admission, pipelined=name == "pipelined")
    engine = engine_device(config.model.params)
    if name == "baseline":
        from service.handlers.main_trt import BaselineHandler

        handler: ClassifierHandler = BaselineHandler(
            config, device=engine, limits=limits, admission=admission, threads=threads
        )
    else:
        from service.handlers.main_torchpipe import PipelinedHandler

        check_queues_hold_admitted_work(config, admission.limits.max_images_in_flight)
        handler = PipelinedHandler(
            config, device=engine, limits=limits, admission=admission, threads=threads
        )
    precision = engine_precision(config, on_gpu=engine != "cpu")
    summary = [
        f"handler: {name}",
        f"config: {config.path}",
        f"model: {config.model_path}" + (" (just exported, RANDOM WEIGHTS)" if exported else ""),
        f"engine: {config.engine_backend}, precision {precision}, device {engine}"
        + (f", in the GPU core process at {core_socket}" if core_socket else ""),
        *describe_nodes(handler, config, precision),
    ]
    return handler, summary


def admission_for(
    config: ServiceConfig, admission: Admission | None, *, pipelined: bool = True
) -> Admission:
    """``admission`` (or the default one) weighing images as this config's decoders do and,
    for the pipelined handler, knowing the shortest time its requests may wait in a queue."""
    limits = AdmissionLimits() if admission is None else admission.limits
    max_pixels = config.images.max_pixels
    queue_timeouts_s = [
        node.request_timeout_ms / 1000
        for node in config.pipeline.nodes
        if node.request_timeout_ms > 0 and not node.inline
    ]
    return Admission(
        dataclasses.replace(
            limits,
            max_pixels_per_image=max_pixels,
            queue_timeout_s=min(queue_timeouts_s) if pipelined and queue_timeouts_s else 0.0,
        )
    )


def check_queues_hold_admitted_work(config: ServiceConfig, max_images_in_flight: int) -> None:
    """Refuse a config whose node queues are smaller than the work the server admits: an
    admitted call would meet a full queue inside the pipeline and fail in part, where the
    server's own admission answers the whole call OVERLOADED at its door."""
    for node in config.pipeline.nodes:
        if node.inline or node.is_logical:  # no queue of its own
            continue
        size = node.max_queue_size
        if 0 < size < max_images_in_flight:
            raise ServiceConfigError(
                f"{config.path}: node [{node.name}] max_queue_size = {size} is below the "
                f"{max_images_in_flight} images the server admits at once (--max-in-flight): "
                "raise it, or lower --max-in-flight"
            )


def engine_precision(config: ServiceConfig, *, on_gpu: bool) -> str:
    """The precision the model node runs, as its engine decides it from the config, and
    what was asked where the engine overrules it."""
    params = config.model.params
    if any(part.name == "TensorrtTensor" for part in config.model.backend.walk()):
        return str(param_precision(params, Precision.FP16))
    running = running_precision(params, on_gpu=on_gpu)
    asked = param_precision(params, running)
    return str(running) if asked is running else f"{running} ({asked} requested; CPU)"


def describe_nodes(
    handler: ClassifierHandler, config: ServiceConfig, model_precision: str
) -> list[str]:
    """One line per node: backend, instances, batch range, placement, precision, limits."""
    lines = []
    for figures in handler.node_figures():
        low, high = handler.batch_range(figures.node)
        places = sorted({str(place) for place in figures.instance_placements if place})
        parts = [
            f"node {figures.node}: {figures.backend} x{figures.instances}",
            f"batch {low}..{high}",
            f"on {', '.join(places) or 'cpu'}",
        ]
        if figures.node == config.model_node:
            parts.append(f"precision {model_precision}")
        names = {node.name for node in config.pipeline.nodes}
        if handler.handler_name == "pipelined" and figures.node in names:  # queue limits
            node = config.pipeline.node(figures.node)
            parts.append(f"max_queue_size {node.max_queue_size or 'unbounded'}")
            timeout_ms = node.request_timeout_ms
            parts.append(f"request_timeout {f'{timeout_ms:g} ms' if timeout_ms else 'none'}")
        lines.append(", ".join(parts))
    return lines
