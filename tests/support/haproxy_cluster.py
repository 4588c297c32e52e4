"""Two service subprocesses behind a real HAProxy, for the load-balancer tests: start, stop,
call through, watch HAProxy's view of each server."""

from __future__ import annotations

import csv
import logging
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from thrift.protocol import TBinaryProtocol
from thrift.transport import TTransport

from deploy.render_haproxy import TEMPLATE_PATH, Layout, Upstream, render
from service.gen.inference import InferenceService
from service.gen.inference.ttypes import InferenceParams, InferenceResult
from service.thrift_client import connect

logger = logging.getLogger(__name__)

#: Upper bound for what should happen within seconds; never reached when the tests pass.
WAIT_S = 60.0
#: Concurrent load-test clients, each with its own connection (leastconn: half per server).
CLIENTS = 6
#: Timed calls per run, and how many the victim must have answered before it is stopped.
CALLS = 240
CALLS_BEFORE_STOP = 30
#: More RPC threads than client connections: the test also calls each server directly.
SERVER_THREADS = CLIENTS + 4


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    """Polls ``condition`` (each poll is a real query) until it holds; fails after the timeout."""
    deadline_s = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline_s:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.1)  # the pause between polls (each costs the servers a call)


def requests_ok(port: int) -> int:
    """The server's own count of answered requests (its ``stats`` call, straight to it)."""
    with connect("127.0.0.1", port, timeout_s=10) as connection:
        return connection.client.stats().requests_ok


def http_status(url: str) -> int | None:
    """The HTTP status of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


class Haproxy:
    """HAProxy in the foreground with a rendered configuration; reads its stats socket."""

    def __init__(self, layout: Layout, workdir: Path):
        self.config_path = workdir / "haproxy.cfg"
        self.config_path.write_text(render(TEMPLATE_PATH.read_text(), layout))
        self.socket_path = layout.stats_socket
        self.log_path = workdir / "haproxy.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                ["haproxy", "-db", "-f", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def command(self, line: str) -> str:
        """One command on the admin socket and its answer; "" when the socket is not up yet."""
        if self.process.poll() is not None:
            pytest.fail(f"haproxy exited with {self.process.returncode}:\n{self.log()}")
        try:
            with socket.socket(socket.AF_UNIX) as admin:
                admin.settimeout(5)
                admin.connect(self.socket_path)
                admin.sendall(line.encode() + b"\n")
                chunks = []
                while chunk := admin.recv(65536):
                    chunks.append(chunk)
        except OSError:
            return ""
        return b"".join(chunks).decode()

    def servers(self) -> dict[str, dict[str, str]]:
        """``show stat`` rows of the Thrift backend's servers, by server name."""
        lines = self.command("show stat").lstrip("# ").splitlines()
        return {
            row["svname"]: row
            for row in csv.DictReader(lines)
            if row["pxname"] == "thrift_servers" and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def status(self, name: str) -> str:
        return self.servers().get(name, {}).get("status", "")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Server:
    """``python -m service`` as a subprocess with its metrics port; ready means /health/ready."""

    def __init__(self, command: list[str], upstream: Upstream, log_path: Path):
        self.upstream = upstream
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def wait_ready(self) -> None:
        url = f"http://127.0.0.1:{self.upstream.metrics_port}/health/ready"

        def ready() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"server exited with {self.process.returncode}:\n{self.log()}")
            return http_status(url) == 200

        wait_until(ready, f"{url} to answer 200")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class HeldCall:
    """An ``infer_batch`` call through HAProxy, held in flight: all of its request but the last
    byte is sent at once, so the server's thread is inside the call (reading the rest) and a
    draining server waits for it; ``finish`` sends the last byte and reads the answer."""

    def __init__(self, port: int, image: bytes):
        message = TTransport.TMemoryBuffer()
        InferenceService.Client(TBinaryProtocol.TBinaryProtocol(message)).send_infer_batch(
            InferenceParams(uuid="held", data=image)
        )
        self._request = message.getvalue()
        self.connection = connect("127.0.0.1", port, timeout_s=WAIT_S)
        self._send(self._request[:-1])

    def _send(self, data: bytes) -> None:
        self.connection.transport.write(data)
        self.connection.transport.flush()

    def finish(self) -> InferenceResult:
        self._send(self._request[-1:])
        return self.connection.client.recv_infer_batch()


@dataclass
class Cluster:
    """Two servers (tp1 is the one stopped mid-run, tp2 the survivor) behind HAProxy."""

    command: Callable[[Upstream], list[str]]
    upstreams: tuple[Upstream, ...]
    haproxy: Haproxy
    frontend_port: int
    logdir: Path
    servers: list[Server] = field(default_factory=list)

    def start(self, index: int) -> Server:
        upstream = self.upstreams[index]
        log_path = self.logdir / f"tp{index + 1}-{len(self.servers)}.log"
        server = Server(self.command(upstream), upstream, log_path)
        self.servers.append(server)
        return server

    def server(self, index: int) -> Server:
        """The newest process of server ``index``."""
        return [s for s in self.servers if s.upstream == self.upstreams[index]][-1]

    def wait_all_up(self) -> None:
        for index in range(len(self.upstreams)):
            self.server(index).wait_ready()
        wait_until(
            lambda: (
                {self.haproxy.status(f"tp{i + 1}") for i in range(len(self.upstreams))} == {"UP"}
            ),
            "HAProxy to see every server UP",
        )

    def hold_call_on(self, name: str, image: bytes) -> HeldCall:
        """A held call on server ``name``: the others take no new connections (admin state
        ``drain``) while it connects, so HAProxy has to place it there."""
        others = [f"tp{i + 1}" for i in range(len(self.upstreams)) if f"tp{i + 1}" != name]
        sessions = int(self.haproxy.servers()[name]["scur"])
        try:
            for other in others:
                answer = self.haproxy.command(f"set server thrift_servers/{other} state drain")
                assert answer.strip() == "", answer
            held = HeldCall(self.frontend_port, image)
            wait_until(
                lambda: int(self.haproxy.servers()[name]["scur"]) == sessions + 1,
                f"the held call's session on {name}",
            )
        finally:
            for other in others:
                self.haproxy.command(f"set server thrift_servers/{other} state ready")
        assert {self.haproxy.status(other) for other in others} <= {"UP"}
        return held

    def logs(self) -> str:
        parts = [f"--- haproxy\n{self.haproxy.log()}"]
        parts += [f"--- {s.log_path.name}\n{s.log()[-4000:]}" for s in self.servers]
        return "\n".join(parts)
