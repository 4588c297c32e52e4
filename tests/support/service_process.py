"""``python -m service`` in a subprocess, as users run it, its output read line by line."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from service.server_process import free_port

REPO = Path(__file__).resolve().parents[2]
START_S = 180.0  # start-up includes exporting the model in one case


class ServiceProcess:
    """``python -m service`` in a subprocess, its merged output read line by line."""

    def __init__(self, *args: str):
        self.port = free_port()
        command = [sys.executable, "-m", "service", "--port", str(self.port), *args]
        self.process = subprocess.Popen(
            command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, text: str, count: int = 1, timeout_s: float = START_S) -> None:
        """Block until ``count`` more output lines contain ``text``."""
        deadline_s = time.monotonic() + timeout_s
        while count:
            line = self.lines.get(timeout=max(0.0, deadline_s - time.monotonic()))
            if line is None:
                pytest.fail(f"the server exited waiting for {text!r}:\n{''.join(self.log)}")
            self.log.append(line)
            count -= text in line

    def finish(self, timeout_s: float = 60.0) -> int:
        """Wait for the exit; collect the rest of the output; return the exit code."""
        code = self.process.wait(timeout=timeout_s)
        while (line := self.lines.get(timeout=timeout_s)) is not None:
            self.log.append(line)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
