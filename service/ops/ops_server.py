"""The operations port: ``/metrics`` (Prometheus), ``/stats``, ``/health/live``, ``/health/ready``.

``/stats`` is the server's ``ServerStats`` (what the Thrift ``stats`` call returns) in Thrift's
binary encoding, for a supervisor that sums its workers (``service.ops.stats_sum``);
``/stats.json`` is the same struct as JSON, for people and scripts (``curl .../stats.json``).

``/health/ready`` answers 200 when the server is ready, 503 while it starts (models loading,
warm-up), 404 while it is saturated (refusing calls as OVERLOADED, or every connection slot
taken) and 404 from the moment it drains (SIGTERM) until it exits. Two statuses for "not
ready" because load balancers should treat the two differently: HAProxy with ``http-check
disable-on-404`` (deploy/haproxy.cfg) takes a server answering 404 out of the pool without
marking it down, so it sends it no new connections but leaves the calls still running on it
alone, whereas a failed check (503, or no answer) marks a server down and ``on-marked-down
shutdown-sessions`` then closes its connections. Kubernetes takes any status outside 200-399
as not ready, so both keep a pod out of a Service's endpoints.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from service.gen.inference.ttypes import ServerStats
from service.ops.ops_http import BoundedHttpServer
from service.ops.stats_json import STATS_JSON_CONTENT_TYPE, stats_json
from service.ops.stats_sum import encode_stats

logger = logging.getLogger(__name__)

#: Content type of the Prometheus text exposition format, version 0.0.4.
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: The content type of ``/stats`` (``service.ops.stats_sum``: a ``ServerStats``, Thrift binary).
STATS_CONTENT_TYPE = "application/vnd.apache.thrift.binary"

LIVE_PATH = "/health/live"
READY_PATH = "/health/ready"


#: The status of ``/health/ready`` in each life stage of the server (see the module docstring).
READINESS_STATUS = {"starting": 503, "ready": 200, "saturated": 404, "draining": 404}


class ServiceState:
    """What the health endpoints report: the life stages of the server process.

    ``starting`` (models loading, warm-up not yet done) -> ``ready`` (warmed up, Thrift port
    accepting) -> ``draining`` (SIGTERM received, or the warm-up failed: finishing in-flight
    requests; a server may go there straight from ``starting``). A ready server reads as
    ``saturated`` while one of its load checks (``add_load_check``) gives a reason. Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready = False
        self._draining = False
        self._detail = "starting: loading the models"
        self._load_checks: list[Callable[[], str | None]] = []

    def add_load_check(self, check: Callable[[], str | None]) -> None:
        """``check()`` says why the server should get no new clients now, or None."""
        self._load_checks.append(check)

    def set_detail(self, detail: str) -> None:
        """A human line for the readiness body while not ready (e.g. "warming up")."""
        with self._lock:
            self._detail = detail

    def mark_ready(self) -> None:
        """Warm-up done and the port answers: ready, unless draining already began."""
        with self._lock:
            if not self._draining:
                self._ready = True
                self._detail = "ready"

    def mark_draining(self) -> None:
        """Draining began: never ready again in this process."""
        with self._lock:
            self._draining = True
            self._ready = False
            self._detail = "draining: finishing in-flight requests"

    @property
    def ready(self) -> bool:
        with self._lock:
            return self._ready

    @property
    def draining(self) -> bool:
        with self._lock:
            return self._draining

    def readiness(self) -> tuple[str, str]:
        """(life stage: "starting", "ready" or "draining"; one-line explanation), read together."""
        with self._lock:
            if self._draining:
                return "draining", self._detail
            if not self._ready:
                return "starting", self._detail
            detail = self._detail
        for check in self._load_checks:
            reason = check()
            if reason is not None:
                return "saturated", reason
        return "ready", detail


class OpsServer:
    """A small HTTP server for probes and scrapes, separate from the Thrift port, bounded
    against floods (``service.ops.ops_http``).

    ``render_metrics`` is called at scrape time and returns the exposition text, so no metric
    is updated on the request path; ``stats``, where given, returns the ``ServerStats`` that
    ``/stats`` sends (``None`` while there are none yet: the models are loading).
    """

    def __init__(
        self,
        state: ServiceState,
        render_metrics: Callable[[], str],
        *,
        stats: Callable[[], ServerStats | None] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        self.state = state
        self._render_metrics = render_metrics
        self._current_stats = stats
        # The health answers are cheap and must come at once, whatever else is asked.
        self.http = BoundedHttpServer(
            self.respond, quick_paths=(LIVE_PATH, READY_PATH), host=host, port=port
        )

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return self.http.port

    def start(self) -> None:
        """Serve from a background thread."""
        self.http.start()
        logger.info(
            "ops port %d: /metrics, /stats, /stats.json, /health/live, /health/ready", self.port
        )

    def close(self) -> None:
        """Stop serving and release the port."""
        self.http.close()

    def respond(self, path: str) -> tuple[int, str, str | bytes]:
        """(status, content type, body) for a GET of ``path``."""
        path = path.split("?", 1)[0]
        if path == LIVE_PATH:
            return 200, "text/plain; charset=utf-8", "live\n"
        if path == READY_PATH:
            stage, detail = self.state.readiness()
            return READINESS_STATUS[stage], "text/plain; charset=utf-8", detail + "\n"
        if path == "/metrics":
            try:
                return 200, PROMETHEUS_CONTENT_TYPE, self._render_metrics()
            except Exception:  # a broken scrape must not take the ops port down
                logger.exception("rendering /metrics failed")
                return 500, "text/plain; charset=utf-8", "metrics unavailable; see the log\n"
        if path in ("/stats", "/stats.json") and self._current_stats is not None:
            return self._stats(as_json=path == "/stats.json")
        return (
            404,
            "text/plain; charset=utf-8",
            "not found; try /metrics, /stats.json or /health/ready\n",
        )

    def _stats(self, *, as_json: bool) -> tuple[int, str, str | bytes]:
        try:
            stats = self._current_stats()
        except Exception:  # as for /metrics: the port stays up
            logger.exception("rendering /stats failed")
            return 500, "text/plain; charset=utf-8", "stats unavailable; see the log\n"
        if stats is None:
            return 503, "text/plain; charset=utf-8", "no stats yet: the models are loading\n"
        if as_json:
            return 200, STATS_JSON_CONTENT_TYPE, stats_json(stats)
        return 200, STATS_CONTENT_TYPE, encode_stats(stats)
