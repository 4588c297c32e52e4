"""``--workers N``: N server processes behind one port, under a supervisor.

One Python process is bound by its interpreter lock before the CPU or the GPU is. So the
supervisor listens on the Thrift port and deals each new connection to N workers in turn
(``connection_dealer``), so they carry equal shares of the clients. For the pipelined handler
the workers are fronts (RPC, admission, CPU image stages) of the GPU core processes
(``core_process``), one per GPU (``core_plan``), started first, each owning a model copy and
the GPU stages and seeing every front's requests in batches; each front spreads its batches
over the cores, least outstanding work first (``tp.RemotePool``). For the baseline each worker
has its own model copy. Each
worker's start-up warm-up call goes through the port too: N warm-ups arriving while nothing
else connects land one on each worker.

The supervisor starts the cores and the workers, restarts a core that dies (the others serve
on untouched, and take its share until it is back), forwards
SIGTERM/SIGINT so each worker drains, and exits with the worst exit code. With
``--metrics-port`` it serves the ops endpoints for the whole group: ready only when every
worker is ready, and ``/stats`` and ``/metrics`` from the sum of the workers' and the core's
``ServerStats`` (each serves its own ``/stats`` on a private port the supervisor reads;
``service.ops.stats_sum`` adds them up), with the supervisor's own process figures beside them;
``/metrics`` also has each core's own figures, labelled with its GPU (``tp_core_*``).
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence

from service.command_line import ServerSettings
from service.gen.inference.ttypes import ServerStats
from service.ops.ops_server import OpsServer, ServiceState
from service.ops.prometheus_export import CoreFigures, MetricsRenderer, render_cores
from service.ops.stats_sum import decode_stats, sum_server_stats
from service.processes.connection_dealer import ConnectionDealer
from service.processes.core_plan import CorePlanError, CoreSpec, core_plan
from service.processes.core_process import CoreProcess, CoreStartError

logger = logging.getLogger("service.processes.workers")

_PROBE_TIMEOUT_S = 2.0


def worker_command(
    argv: Sequence[str], metrics_port: int, connection_fd: int, core_socket: str | None = None
) -> list[str]:
    """The command line of one worker: the supervisor's own, as a single server taking its
    connections from the supervisor on ``connection_fd`` (and, as a front of the GPU core,
    sending what the core runs to ``core_socket``).

    argparse keeps the last value of a repeated flag, so appending overrides what was given.
    """
    core = ["--core-socket", core_socket] if core_socket else []
    return [
        sys.executable,
        "-m",
        "service",
        *argv,
        "--workers",
        "1",
        "--connection-fd",
        str(connection_fd),
        "--metrics-port",
        str(metrics_port),
        *core,
    ]


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _probe_host(host: str) -> str:
    """Where this machine reaches a server listening on ``host``."""
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=_PROBE_TIMEOUT_S) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""
    except (urllib.error.URLError, OSError):
        return 0, b""


class WorkerGroup:
    """The worker processes and what the supervisor knows of them."""

    def __init__(
        self,
        argv: Sequence[str],
        count: int,
        host: str,
        with_metrics: bool,
        dealer: ConnectionDealer,
        cores: Sequence[CoreProcess] = (),
    ):
        probe_host = _probe_host(host)
        self.metrics_ports = [_free_port(probe_host) if with_metrics else 0 for _ in range(count)]
        core_socket = ",".join(core.socket_path for core in cores) or None
        # Each core's stages are counted once, in its own figures, added to the fronts' sum.
        self._cores = list(cores)
        self._renderer = MetricsRenderer(self.stats, extra=self._core_metrics)
        self._probe_host = probe_host
        self.processes = []
        for index, port in enumerate(self.metrics_ports):
            fd = dealer.worker_fd(index)
            command = worker_command(argv, port, fd, core_socket)
            self.processes.append(subprocess.Popen(command, pass_fds=(fd,)))
        dealer.forget_worker_ends()

    def all_ready(self) -> bool:
        """Every worker answers 200 on /health/ready."""
        return all(
            _get(f"http://{self._probe_host}:{port}/health/ready")[0] == 200
            for port in self.metrics_ports
        )

    def stats(self) -> ServerStats | None:
        """The sum of the workers' ``ServerStats`` and the cores' (those that answer; ``None``
        before any)."""
        ports = [*self.metrics_ports, *(core.metrics_port for core in self._cores)]
        parts = [self._read_stats(port) for port in ports if port]
        return sum_server_stats([part for part in parts if part is not None])

    def _read_stats(self, port: int) -> ServerStats | None:
        status, body = _get(f"http://{self._probe_host}:{port}/stats")
        return decode_stats(body) if status == 200 else None

    def _core_metrics(self) -> str:
        """Each core's own families, labelled with its GPU."""
        return render_cores(
            CoreFigures(
                core.spec.name,
                core.restarts,
                self._read_stats(core.metrics_port) if core.metrics_port else None,
            )
            for core in self._cores
        )

    def metrics(self) -> str:
        """The group's /metrics: the sum of the workers and the core, this process's."""
        return self._renderer.render()

    def signal_all(self, signum: int) -> None:
        """Send ``signum`` to every worker still running."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signum)

    def first_exit(self) -> int | None:
        """The exit code of a worker that has ended, if any has."""
        for process in self.processes:
            code = process.poll()
            if code is not None:
                return code
        return None


def run_workers(argv: Sequence[str], args: ServerSettings, *, with_core: bool) -> int:
    """Supervise ``args.workers`` servers (fronts of the GPU cores this starts, one per GPU,
    ``with_core``); returns the worst exit code."""
    state = ServiceState()
    try:
        dealer = ConnectionDealer(args.host, args.port, args.workers, reuse_port=args.reuse_port)
    except OSError as exc:
        logger.error("cannot listen on %s:%d: %s", args.host, args.port, exc)
        return 2
    try:
        cores = _start_cores(argv, args) if with_core else []
    except (CoreStartError, CorePlanError) as exc:
        logger.error("%s", exc)
        dealer.close()
        return 2
    group = WorkerGroup(
        argv,
        args.workers,
        args.host,
        with_metrics=bool(args.metrics_port),
        dealer=dealer,
        cores=cores,
    )
    dealer.start()
    logger.info(
        "started %d workers on port %d (pids %s); connections dealt to them in turn",
        args.workers,
        args.port,
        ", ".join(str(process.pid) for process in group.processes),
    )
    ops = None
    if args.metrics_port:
        ops = OpsServer(
            state,
            group.metrics,
            stats=group.stats,
            host=args.host,
            port=args.metrics_port,
        )
        ops.start()
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        logger.info("%s: stopping every worker", signal.Signals(signum).name)
        state.mark_draining()
        stopping.set()
        group.signal_all(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    _watch(group, cores, state, stopping, args)
    if stopping.is_set() and args.shutdown_delay_s > 0:
        # Each worker keeps taking connections for --shutdown-delay-s after the signal (while
        # /health/ready says draining): keep dealing them for as long.
        threading.Event().wait(args.shutdown_delay_s)
    dealer.close()  # new connections are refused from here; the workers finish their own
    codes = [process.wait() for process in group.processes]
    logger.info("connections dealt per worker: %s", dealer.dealt)
    codes += [core.stop() for core in cores]
    if ops is not None:
        ops.close()
    worst = max(codes, key=lambda code: (code != 0, abs(code)))
    logger.info("workers exited with codes %s", codes)
    return worst


def _start_cores(argv: Sequence[str], args: ServerSettings) -> list[CoreProcess]:
    """One core per GPU of the plan, each ready before the next starts; on a failure, the
    ones started are stopped and the error raised."""
    plan = core_plan(args, _gpu_count(args))
    logger.info(
        "starting %d GPU core(s) (%s): the model and the GPU stages, for every front",
        len(plan),
        ", ".join(spec.name for spec in plan),
    )
    cores: list[CoreProcess] = []
    try:
        for spec in plan:
            cores.append(_start_core(argv, args, spec))
    except CoreStartError:
        for core in cores:
            core.stop()
        raise
    return cores


def _start_core(argv: Sequence[str], args: ServerSettings, spec: CoreSpec) -> CoreProcess:
    return CoreProcess(
        argv,
        ready_timeout_s=args.warmup_timeout_s,
        spec=spec,
        metrics_port=_free_port(_probe_host(args.host)) if args.metrics_port else 0,
    )


def _gpu_count(args: ServerSettings) -> int:
    """Visible CUDA devices, where the plan depends on them (torch is loaded only then)."""
    if args.device_ids is None and args.device is not None:
        return 0
    import torch

    return torch.cuda.device_count()


def _watch(
    group: WorkerGroup,
    cores: Sequence[CoreProcess],
    state: ServiceState,
    stopping: threading.Event,
    args: ServerSettings,
) -> None:
    """Until a signal: mark the group ready once every worker is. When a core dies, start
    it again (the fronts fail what it held, send to the other cores meanwhile, and reconnect);
    the other cores are not touched. When a worker dies, stop the rest (the process manager
    then restarts the whole server rather than it serving on at lower capacity)."""
    while not stopping.is_set():
        dead = next((core for core in cores if core.process.poll() is not None), None)
        if dead is not None:
            try:
                dead.restart()
            except CoreStartError as exc:
                logger.error("%s: stopping the fronts", exc)
                code: int | None = 1
            else:
                continue
        else:
            code = group.first_exit()
        if code is not None:
            logger.error("a worker or the core exited with code %s: stopping the rest", code)
            state.mark_draining()
            group.signal_all(signal.SIGTERM)
            return
        if not state.ready and args.metrics_port and group.all_ready():
            state.mark_ready()
            logger.info("ready: all %d workers warmed up", args.workers)
        stopping.wait(0.5)
