"""The servers of the side-by-side run: ours and each peer, started, probed, driven, stopped.

Each kind knows whether it can run here (``unavailable`` says why not, in one line), how to
start it on a free loopback port with the run's settings, how to tell it is ready (a real image
answered with a top-1), and how to load it (``client_qps`` for ours, the HTTP driver for the
peers). Stopping sends SIGTERM to the server and then ends, by process id, any of the
processes it had started that outlived it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import logging
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

import torchpipe_lite
from benchmarks.peers.http_load import HttpClient, HttpProtocol, JsonTop1, TritonV2, run_http_load
from benchmarks.peers.triton_repo import (
    MODEL_NAME,
    TritonModelSettings,
    find_tritonserver,
    stub_sys_path,
    write_repository,
)
from benchmarks.server_figures import server_stats
from clients.client_qps import run_load
from clients.load_result import LoadResult
from clients.load_worker import WorkerSpec
from service.server_process import REPO_ROOT, ServerProcess, free_port, service_command

logger = logging.getLogger(__name__)

#: A GPU server converts the model and captures CUDA graphs before it answers.
READY_TIMEOUT_S = 600.0
PROBE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RunSettings:
    """What every server of one run shares: model, engine config, batching, processes."""

    config: Path
    model: Path
    device: str  # "cpu" or "cuda"
    workers: int  # server processes on each side
    max_batch_size: int
    batch_timeout_ms: float
    threads: int  # our server's RPC pool threads
    probe_image: bytes
    log_dir: Path
    litserve_fast_queue: bool = True
    tritonserver: str | None = None


@dataclass
class RunningServer:
    """A started server: who it is, what it runs with, how to load it."""

    name: str
    version: str
    protocol: str
    settings: dict[str, Any]
    server_processes: int  # ours: --workers; LitServe: inference workers; Triton: instances
    device: str
    process: ServerProcess
    load: Callable[..., LoadResult]
    stats: Callable[[], dict[str, Any]] = field(default=lambda: {})

    def tree_processes(self) -> int:
        """Processes in the server's tree right now (API servers, workers, stubs...)."""
        try:
            root = psutil.Process(self.process.pid)
            return 1 + len(root.children(recursive=True))
        except psutil.NoSuchProcess:
            return 0


def shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (results are committed)."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(REPO_ROOT)) if resolved.is_relative_to(REPO_ROOT) else str(path)


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@contextlib.contextmanager
def _running(process: ServerProcess) -> Iterator[ServerProcess]:
    """Stops ``process`` on exit, then ends (by pid) any descendant that outlived it."""
    try:
        yield process
    finally:
        try:
            descendants = psutil.Process(process.pid).children(recursive=True)
        except (psutil.NoSuchProcess, AssertionError):
            descendants = []
        code = process.stop()
        logger.info("%s stopped (exit %s)", process.log_path.stem, code)
        for child in descendants:
            with contextlib.suppress(psutil.NoSuchProcess):
                if child.is_running():
                    logger.warning("ending pid %d left by %s", child.pid, process.log_path.stem)
                    child.kill()


def _http_probe(port: int, protocol: HttpProtocol, image: bytes, health_path: str) -> bool:
    """True once ``health_path`` answers 200 and one real image gets a valid top-1."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{health_path}", timeout=2.0) as r:
            if r.status != 200:
                return False
    except (urllib.error.URLError, OSError):
        return False
    spec = WorkerSpec(0, "127.0.0.1", port, "probe", 1, PROBE_TIMEOUT_S, (0,), (0,), (1,))
    try:
        client = HttpClient(spec, 0, [image], protocol=protocol)
    except OSError:
        return False
    try:
        failed = client.one_call()
    finally:
        client.close()
    if failed:
        logger.info("probe of port %d: %s", port, failed[0])
    return not failed


class Ours:
    """Our pipelined Thrift server (``python -m service``), loaded with ``client_qps``."""

    name = "pipelined"

    def unavailable(self) -> str | None:
        """Why it cannot run here, or None (ours always can)."""
        return None

    def start(self, run: RunSettings, stack: contextlib.ExitStack) -> RunningServer:
        """Starts it (``stack`` stops it) and returns once it answers ``ping``."""
        port = free_port()
        command = service_command(
            "pipelined", port, threads=run.threads, config=run.config, model=run.model
        )
        ready_url = None
        if run.workers > 1:
            metrics_port = free_port()
            command += ["--workers", str(run.workers), "--metrics-port", str(metrics_port)]
            ready_url = f"http://127.0.0.1:{metrics_port}/health/ready"
        process = ServerProcess(
            command, host="127.0.0.1", port=port, log_path=run.log_dir / "pipelined.log"
        )
        stack.enter_context(_running(process))
        process.start(ready_timeout_s=READY_TIMEOUT_S, ready_url=ready_url)
        device = server_stats(port)["device"]

        def load(**kwargs: Any) -> LoadResult:
            return run_load(port=port, **kwargs)

        return RunningServer(
            name=self.name,
            version=f"torchpipe-lite {torchpipe_lite.__version__}",  # also when not installed
            protocol="Thrift (infer_batch)",
            settings={"config": shown(run.config), "workers": run.workers, "threads": run.threads},
            server_processes=run.workers,
            device=device,
            process=process,
            load=load,
            stats=lambda: server_stats(port),
        )


def _http_load(port: int, protocol: HttpProtocol) -> Callable[..., LoadResult]:
    def load(**kwargs: Any) -> LoadResult:
        return run_http_load(protocol, port=port, **kwargs)

    return load


class LitServePeer:
    """LitServe (``benchmarks.peers.litserve_app``): its batching, ``workers_per_device``."""

    name = "litserve"

    def unavailable(self) -> str | None:
        """Why it cannot run here (LitServe not installed), or None."""
        if importlib.util.find_spec("litserve") is None:
            return "litserve is not installed (pip install -e '.[peers]', or make peers)"
        return None

    def start(self, run: RunSettings, stack: contextlib.ExitStack) -> RunningServer:
        """Starts it (``stack`` stops it) and returns once it answers a photograph."""
        port = free_port()
        settings = {
            "max_batch_size": run.max_batch_size,
            "batch_timeout_ms": run.batch_timeout_ms,
            "workers_per_device": run.workers,
            "num_api_servers": run.workers,
            "accelerator": run.device,
            "devices": 1,
            "fast_queue": run.litserve_fast_queue,
        }
        command = [sys.executable, "-m", "benchmarks.peers.litserve_app", "--port", str(port)]
        command += ["--config", str(run.config), "--model", str(run.model)]
        command += ["--max-batch-size", str(run.max_batch_size)]
        command += ["--batch-timeout-ms", str(run.batch_timeout_ms)]
        command += ["--workers-per-device", str(run.workers), "--api-servers", str(run.workers)]
        command += ["--accelerator", run.device]
        command.append("--fast-queue" if run.litserve_fast_queue else "--no-fast-queue")
        process = ServerProcess(
            command, host="127.0.0.1", port=port, log_path=run.log_dir / "litserve.log"
        )
        stack.enter_context(_running(process))
        protocol = JsonTop1("/predict")
        process.start(
            ready_timeout_s=READY_TIMEOUT_S,
            ready_check=lambda: _http_probe(port, protocol, run.probe_image, "/health"),
        )
        return RunningServer(
            name=self.name,
            version=f"litserve {_version('litserve')}",
            protocol="HTTP POST /predict, JPEG body, JSON answer",
            settings=settings,
            server_processes=run.workers,
            device="cuda:0" if run.device == "cuda" else "cpu",
            process=process,
            load=_http_load(port, protocol),
        )


class TritonPeer:
    """Triton Inference Server with the Python backend model of ``triton/model_repository``."""

    name = "triton"

    def __init__(self, explicit_binary: str | None = None):
        self.runtime = find_tritonserver(explicit_binary)

    def unavailable(self) -> str | None:
        """Why it cannot run here (no tritonserver found), or None."""
        return self.runtime if isinstance(self.runtime, str) else None

    def start(self, run: RunSettings, stack: contextlib.ExitStack) -> RunningServer:
        """Writes its model repository, starts it (``stack`` stops it and removes the
        folder) and returns once it answers a photograph."""
        runtime = self.runtime
        assert not isinstance(runtime, str), runtime
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="triton-peer-")))
        model = TritonModelSettings(
            max_batch_size=run.max_batch_size,
            max_queue_delay_us=round(run.batch_timeout_ms * 1000),
            instances=run.workers,
            kind="KIND_GPU" if run.device == "cuda" else "KIND_CPU",
            repo_root=str(Path(__file__).resolve().parents[2]),
            torchpipe_config=str(run.config),
            model=str(run.model),
        )
        repository = write_repository(folder / "repository", model)
        port = free_port()
        command = [str(runtime.binary), f"--model-repository={repository}"]
        command += ["--http-address=127.0.0.1", f"--http-port={port}"]
        command += ["--allow-grpc=false", "--allow-metrics=false", "--exit-timeout-secs=10"]
        command.append("--log-info=false")  # its warnings and errors stay in the log
        backends = runtime.backend_directory(folder)
        if backends is not None:
            command.append(f"--backend-directory={backends}")
        env = {**runtime.env, "TORCHPIPE_LITE_SYS_PATH": ":".join(stub_sys_path())}
        process = ServerProcess(
            command, host="127.0.0.1", port=port, log_path=run.log_dir / "triton.log"
        )
        stack.enter_context(_running(process))
        protocol = TritonV2(MODEL_NAME)
        process.start(
            ready_timeout_s=READY_TIMEOUT_S,
            ready_check=lambda: _http_probe(port, protocol, run.probe_image, "/v2/health/ready"),
            env=env,
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2", timeout=5.0) as response:
            version = json.loads(response.read()).get("version", "unknown")
        return RunningServer(
            name=self.name,
            version=f"tritonserver {version} ({runtime.source})",
            protocol="HTTP KServe v2, binary BYTES input, JSON outputs",
            settings={
                "max_batch_size": model.max_batch_size,
                "max_queue_delay_us": model.max_queue_delay_us,
                "instance_group": f"{model.instances} x {model.kind}",
                "backend": "python",
            },
            server_processes=run.workers,
            device="cuda:0" if run.device == "cuda" else "cpu",
            process=process,
            load=_http_load(port, protocol),
        )


#: Every peer by name, in the order they run.
PEER_NAMES = ("litserve", "triton")


def make_peer(name: str, *, tritonserver: str | None = None) -> LitServePeer | TritonPeer:
    """The peer called ``name`` (one of ``PEER_NAMES``)."""
    if name == "litserve":
        return LitServePeer()
    if name == "triton":
        return TritonPeer(tritonserver)
    raise ValueError(f"unknown peer {name!r}; choose from {', '.join(PEER_NAMES)}")
