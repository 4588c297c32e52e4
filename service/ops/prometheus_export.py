"""Renders the server's stats as Prometheus text with Triton Inference Server's metric names.

Each pipeline node is a Triton "model" (label ``model`` = node name, ``version`` = "1"), so
dashboards and alerts written for Triton work unchanged. Triton's counters carry no ``_total``
suffix; prometheus-client's counter families always add one, so the Triton families are written
here in the text format (0.0.4) directly, and prometheus-client adds the process figures (RSS,
CPU, open files). Everything is read from ``ServerStats`` at scrape time: the request path
updates no metric.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.process_collector import ProcessCollector

from service.errors import code_name
from service.gen.inference.ttypes import GpuStats, ServerStats, WireNodeStats
from torchpipe_lite.extend import FIGURES

#: Triton's failure reasons, in its order.
FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")

_US = 1000.0  # microseconds per millisecond

#: The per-node figure families, each read from a ``NodeStats`` field whose metadata names
#: it: (name, type, help, field, scale), in the schema's order.
_FIELD_FAMILIES = tuple(
    (figure.metric, figure.metric_type, figure.help, name, figure.metric_scale)
    for name, figure in FIGURES
    if figure.metric
)

_GPU_FAMILIES: tuple[tuple[str, str, Callable[[GpuStats], float]], ...] = (
    ("nv_gpu_utilization", "GPU utilization rate [0.0 - 1.0)", lambda g: g.utilization),
    ("nv_gpu_memory_total_bytes", "GPU total memory, in bytes", lambda g: g.memory_total_bytes),
    ("nv_gpu_memory_used_bytes", "GPU used memory, in bytes", lambda g: g.memory_used_bytes),
)


def _node_families(nodes: list[WireNodeStats]) -> list[str]:
    """One family per ``NodeStats`` figure that names one, and Triton's request duration
    (queue and compute time as each request saw them: the sum of two of them)."""
    parts = []
    for name, kind, help_text, field, scale in _FIELD_FAMILIES:
        samples = [(_node_labels(n), (getattr(n, field) or 0) * scale) for n in nodes]
        parts.append(_family(name, kind, help_text, samples))
    durations = [
        (_node_labels(n), (n.queue_time_ms_total + (n.request_compute_time_ms_total or 0)) * _US)
        for n in nodes
    ]
    help_text = "Cumulative inference request duration in microseconds (queue + compute)"
    parts.append(_family("nv_inference_request_duration_us", "counter", help_text, durations))
    return parts


def _node_labels(node: WireNodeStats) -> str:
    return _labels(model=node.node, version="1")


def _label_value(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: object) -> str:
    return "{" + ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items()) + "}"


def _family(name: str, kind: str, help_text: str, samples: Iterable[tuple[str, float]]) -> str:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{labels} {float(value)!r}" for labels, value in samples]
    return "\n".join(lines) + "\n"


def failures_by_reason(node: WireNodeStats) -> dict[str, int]:
    """A node's failed requests in Triton's reasons: REJECTED = refused by the scheduler (queue
    full) or expired in its queue (request_timeout, or the call's deadline); CANCELED = dropped
    unrun because the client went away; BACKEND = failed in the backend, or ended there
    without a result (bytes that are not an image: the service answers INVALID_IMAGE); nothing
    else fails inside a node."""
    reasons = dict.fromkeys(FAILURE_REASONS, 0)
    for name, figure in FIGURES:
        if figure.failure_reason:
            reasons[figure.failure_reason] += getattr(node, name) or 0
    return reasons


def render_triton(stats: ServerStats) -> str:
    """The Triton-named families (per node, per GPU) and the service's own ``tp_`` families."""
    nodes = stats.nodes or []
    parts = _node_families(nodes)
    failure_samples = [
        (_labels(model=n.node, reason=reason, version="1"), count)
        for n in nodes
        for reason, count in failures_by_reason(n).items()
    ]
    parts.append(
        _family(
            "nv_inference_request_failure",
            "counter",
            "Number of failed inference requests, all batch sizes",
            failure_samples,
        )
    )
    placements = [
        (_labels(model=n.node, instance=index, device=place), 1)
        for n in nodes
        for index, place in enumerate(n.instance_placements or [])
        if place
    ]
    if placements:
        parts.append(
            _family(
                "tp_instance_placement",
                "gauge",
                "1 for each instance of a node on the device it computes on",
                placements,
            )
        )
    if stats.gpus:  # absent without NVML or a GPU: not exported at all, as Triton does
        for name, help_text, value in _GPU_FAMILIES:
            samples = [(_labels(gpu_uuid=g.uuid), value(g)) for g in stats.gpus]
            parts.append(_family(name, "gauge", help_text, samples))
    parts.append(_service_families(stats))
    return "".join(parts)


def _service_families(stats: ServerStats) -> str:
    """Whole-service figures that Triton has no name for (requests as the client saw them)."""
    handler = _labels(handler=stats.handler)
    failures = sorted((stats.failures_by_code or {}).items())
    parts = [
        _family(
            "tp_requests_success",
            "counter",
            "Images answered with predictions, over every RPC",
            [(handler, stats.requests_ok)],
        ),
        _family(
            "tp_requests_failure",
            "counter",
            "Images answered with an InferenceError, by error code",
            [(_labels(handler=stats.handler, code=code_name(c)), n) for c, n in failures],
        ),
        _family(
            "tp_requests_cancelled",
            "counter",
            "Images whose client went away before their answer (neither success nor failure)",
            [(handler, stats.requests_cancelled or 0)],
        ),
        _family(
            "tp_uptime_seconds",
            "gauge",
            "Seconds since the handler was built",
            [(handler, stats.uptime_s)],
        ),
    ]
    if stats.ready is not None:
        parts.append(
            _family(
                "tp_ready",
                "gauge",
                "1 when warmed up and not draining (what /health/ready reports)",
                [(handler, 1 if stats.ready else 0)],
            )
        )
    if stats.admission is not None:
        parts += [_family(*family, [(handler, value)]) for *family, value in _admission(stats)]
    if stats.connections is not None:
        parts += [_family(*family, [(handler, value)]) for *family, value in _connections(stats)]
    return "".join(parts)


def _admission(stats: ServerStats) -> list[tuple[str, str, str, float]]:
    admitted = stats.admission
    return [
        ("tp_admission_images_in_flight", "gauge", "Images admitted and not yet answered",
         admitted.images_in_flight),
        ("tp_admission_images_limit", "gauge", "Images admitted at once (--max-in-flight)",
         admitted.max_images_in_flight),
        ("tp_admission_megapixels_in_flight", "gauge", "Megapixels the admitted images declare",
         admitted.megapixels_in_flight),
        ("tp_admission_megapixels_limit", "gauge", "Admitted at once (--max-in-flight-mp)",
         admitted.max_megapixels_in_flight),
        ("tp_admission_calls_refused", "counter", "Calls answered OVERLOADED at once, unrun",
         admitted.calls_refused),
        ("tp_admission_images_limit_now", "gauge",
         "Images admitted at once now: what is cleared within the deadline, floor to ceiling",
         admitted.images_limit or 0),
        ("tp_admission_images_cleared_per_s", "gauge",
         "Images the server clears per busy second, as admission measures it",
         admitted.images_cleared_per_s or 0.0),
    ]  # fmt: skip


def _connections(stats: ServerStats) -> list[tuple[str, str, str, float]]:
    seen = stats.connections
    return [
        ("tp_connections_open", "gauge", "Client connections open", seen.open),
        ("tp_connections_limit", "gauge", "Connections the process keeps (--max-connections)",
         seen.max_open),
        ("tp_connections_accepted", "counter", "Connections accepted", seen.accepted),
        ("tp_connections_refused", "counter", "Connections closed at accept: at the limit",
         seen.refused_over_cap),
        ("tp_connections_closed_idle", "counter", "Closed after --idle-timeout-s of silence",
         seen.closed_idle),
        ("tp_connections_closed_slow", "counter", "Closed: a message outlasted --message-timeout-s",
         seen.closed_slow_message),
        ("tp_connections_closed_malformed", "counter", "Closed: not this protocol, or over a limit",
         seen.closed_malformed),
        ("tp_replies_undelivered", "counter", "Answers whose client had gone when they were ready",
         seen.replies_undelivered),
        ("tp_calls_abandoned", "counter", "Calls whose client went away while they were running",
         seen.calls_abandoned),
    ]  # fmt: skip


@dataclass(frozen=True)
class CoreFigures:
    """One GPU core as the supervisor sees it, for its own families beside the sum."""

    #: Its GPU (``cuda:1``), or ``default`` for the one core of a plan that pins none.
    gpu: str
    restarts: int
    #: Its ``/stats``; None when it did not answer (restarting, or not up yet).
    stats: ServerStats | None


#: The per-core node families: (name, type, help, value of a node).
_CORE_NODE_FAMILIES: tuple[tuple[str, str, str, Callable[[WireNodeStats], float]], ...] = (
    ("tp_core_request_success", "counter", "Requests a core's node ended with a result",
     lambda n: n.requests_ok),
    ("tp_core_request_failure", "counter", "Requests a core's node failed",
     lambda n: n.requests_failed),
    ("tp_core_inference_count", "counter", "Requests a core's node ran, all batch sizes",
     lambda n: n.inferences),
    ("tp_core_execution_count", "counter", "Batches a core's node ran", lambda n: n.executions),
    ("tp_core_compute_duration_us", "counter", "Compute time of a core's node's batches",
     lambda n: n.compute_time_ms_total * _US),
)  # fmt: skip


def render_cores(cores: Iterable[CoreFigures]) -> str:
    """Each GPU core's own figures, labelled ``gpu`` (the Triton families carry the sum of
    every core and front): whether it answers, its restarts, and each of its nodes."""
    cores = list(cores)
    if not cores:
        return ""
    parts = [
        _family(
            "tp_core_up",
            "gauge",
            "1 when the GPU core answers its ops port",
            [(_labels(gpu=c.gpu), 0 if c.stats is None else 1) for c in cores],
        ),
        _family(
            "tp_core_restarts",
            "counter",
            "Times the supervisor restarted the GPU core after it died",
            [(_labels(gpu=c.gpu), c.restarts) for c in cores],
        ),
    ]
    nodes = [(c.gpu, n) for c in cores if c.stats is not None for n in c.stats.nodes or []]
    for name, kind, help_text, value in _CORE_NODE_FAMILIES:
        samples = [(_labels(gpu=gpu, model=n.node), value(n)) for gpu, n in nodes]
        parts.append(_family(name, kind, help_text, samples))
    return "".join(parts)


class MetricsRenderer:
    """``render()`` gives the whole /metrics body; ``stats`` is read on each call, and
    ``extra`` (families of the process's own) when given."""

    def __init__(
        self,
        stats: Callable[[], ServerStats | None],
        extra: Callable[[], str] | None = None,
    ):
        self._stats = stats
        self._extra = extra
        self._process = CollectorRegistry()
        ProcessCollector(registry=self._process)

    def render(self) -> str:
        """The exposition text (only process figures while the models are still loading)."""
        current = self._stats()
        triton = "" if current is None else render_triton(current)
        extra = "" if self._extra is None else self._extra()
        return triton + extra + generate_latest(self._process).decode()
