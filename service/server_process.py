"""Runs a server as a subprocess: a free loopback port, readiness by ``ping``, a clean stop."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from thrift.transport.TTransport import TTransportException

from service.thrift_client import connect

logger = logging.getLogger(__name__)

#: Servers run from the repository root, so ``python -m service`` works without an install.
REPO_ROOT = Path(__file__).resolve().parent.parent


class ServerStartError(RuntimeError):
    """The server exited or did not answer ``ping`` in time; the message holds its log's tail."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def service_command(
    handler: str,
    port: int,
    *,
    host: str = "127.0.0.1",
    threads: int | None = None,
    config: str | Path | None = None,
    model: str | Path | None = None,
) -> list[str]:
    """The ``python -m service`` command line of one handler."""
    command = [sys.executable, "-m", "service", "--handler", handler]
    command += ["--host", host, "--port", str(port)]
    if threads is not None:
        command += ["--threads", str(threads)]
    if config is not None:
        command += ["--config", str(config)]
    if model is not None:
        command += ["--model", str(model)]
    return command


class ServerProcess:
    """A server subprocess whose output goes to ``log_path``; a context manager that stops it."""

    def __init__(self, command: list[str], *, host: str, port: int, log_path: str | Path):
        self.command = command
        self.host = host
        self.port = port
        self.log_path = Path(log_path)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The server's process id (it must have been started)."""
        assert self._process is not None, "server not started"
        return self._process.pid

    def start(
        self,
        *,
        ready_timeout_s: float = 300.0,
        ready_url: str | None = None,
        ready_check: Callable[[], bool] | None = None,
        env: dict[str, str] | None = None,
    ) -> ServerProcess:
        """Starts the server and returns once it answers ``ping`` (and, with ``ready_url``,
        once that health endpoint answers 200: with several workers sharing the port, a ping
        reaches only one of them). ``ready_check`` replaces the ``ping`` (a server that does
        not speak Thrift); ``env`` is added to this process's environment for the server.

        Raises ``ServerStartError`` when it exits first or is still silent after
        ``ready_timeout_s`` (a GPU server converts the model and captures CUDA graphs first).
        """
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        logger.info("starting %s (log: %s)", " ".join(self.command), self.log_path)
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO_ROOT,
                env=None if env is None else {**os.environ, **env},
            )
        answers = self._answers_ping if ready_check is None else ready_check
        deadline_s = time.monotonic() + ready_timeout_s
        while True:
            if answers() and (ready_url is None or _answers_200(ready_url)):
                logger.info("server pid %d ready on %s:%d", self.pid, self.host, self.port)
                return self
            try:
                # Waiting on the process doubles as the pause between pings, and ends early
                # when the server dies.
                code = self._process.wait(timeout=0.25)
            except subprocess.TimeoutExpired:
                code = None
            if code is not None:
                raise ServerStartError(f"server exited with {code}:\n{self.log_tail()}")
            if time.monotonic() > deadline_s:
                self.stop()
                raise ServerStartError(
                    f"server did not become ready within {ready_timeout_s:.0f} s:\n"
                    + self.log_tail()
                )

    def _answers_ping(self) -> bool:
        # A plain connect first: thrift logs a traceback for every refused connection.
        try:
            socket.create_connection((self.host, self.port), timeout=2.0).close()
        except OSError:
            return False
        try:
            with connect(self.host, self.port, timeout_s=2.0) as connection:
                connection.client.ping()
            return True
        except (TTransportException, OSError):
            return False

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the server's output."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, *, timeout_s: float = 20.0) -> int | None:
        """Asks the server to stop (SIGTERM), kills it after ``timeout_s``; returns its code."""
        if self._process is None or self._process.poll() is not None:
            return None if self._process is None else self._process.returncode
        self._process.terminate()
        try:
            return self._process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            logger.warning("server pid %d ignored SIGTERM for %.0f s: killing", self.pid, timeout_s)
            self._process.kill()
            return self._process.wait(timeout=timeout_s)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False
