"""The parent's side of a load test: the workers' messages, their reports, the progress bars."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

from clients.load_worker import Done, Failed, Progress, Warm, WorkerReport

#: Seconds the parent waits for any message before it checks that its workers are alive.
POLL_S = 1.0


class LoadTestError(RuntimeError):
    """The load test could not run (server unreachable, a worker died, a client crashed)."""


class LoadInterrupted(LoadTestError):
    """Ctrl-C came before any call was timed: there are no figures to show."""


class LoadRun:
    """The parent's side of one load test: takes the workers' messages, keeps the reports,
    starts the timed phase when every worker is warm, and draws the progress bars."""

    def __init__(
        self,
        workers: int,
        total_number: int,
        warmup: int,
        method: str,
        progress: bool,
        on_timed_start: Callable[[], None] | None,
        go: Any,
    ):
        self.workers = workers
        self.reports: dict[int, WorkerReport] = {}
        self.start_s: float | None = None
        self.cpu_start_s = 0.0
        self.interrupted = False
        self._total_number = total_number
        self._method = method
        self._on_timed_start = on_timed_start
        self._go = go
        self._warm: set[int] = set()
        self._give_up_at_s: float | None = None
        # tqdm's disable=None: no bars where stderr is not a terminal (a log, a pipe, CI), where
        # every redraw would be a line of its own.
        self._bars_off = None if progress else True
        # The timed bar is made when timing starts, so the two never share the terminal.
        self._bars = {
            "warmup": tqdm(total=warmup, desc="warm-up", unit="call", disable=self._bars_off)
        }

    @property
    def finished(self) -> bool:
        """Every worker has reported, or (after an interrupt) the wait for them is over."""
        if len(self.reports) == self.workers:
            return True
        return self._give_up_at_s is not None and time.monotonic() >= self._give_up_at_s

    def take(self, messages: Any, runners: list[Any]) -> None:
        """Handles the next message, or checks the workers are alive when none comes."""
        try:
            message = messages.get(timeout=POLL_S)
        except queue.Empty:
            # Nothing came for POLL_S: a worker that is gone without a report has died.
            for worker_id, runner in enumerate(runners):
                if not runner.is_alive() and worker_id not in self.reports:
                    code = getattr(runner, "exitcode", None)
                    raise LoadTestError(
                        f"load-test worker {worker_id} died without a report (exit {code})"
                    ) from None
            return
        if isinstance(message, Progress):
            self._bars[message.phase].update(message.calls)
        elif isinstance(message, Failed):
            raise LoadTestError(message.reason)
        elif isinstance(message, Warm):
            self._warm.add(message.worker_id)
            if len(self._warm) == self.workers and not self.interrupted:
                self._start_timing()
        elif isinstance(message, Done):
            self.reports[message.worker_id] = message.report

    def interrupt(self, abort: Any, *, give_up_s: float) -> None:
        """Ctrl-C: ask every client to stop after its call, and wait at most ``give_up_s``."""
        self.interrupted = True
        abort.set()
        self._go.set()  # clients still waiting to start the timed phase end at once
        self._give_up_at_s = time.monotonic() + give_up_s

    def close_bars(self) -> None:
        for bar in self._bars.values():
            bar.close()

    def _start_timing(self) -> None:
        self._bars["warmup"].close()
        self._bars["timed"] = tqdm(
            total=self._total_number, desc=self._method, unit="call", disable=self._bars_off
        )
        if self._on_timed_start is not None:
            self._on_timed_start()
        self.cpu_start_s = time.process_time()
        self.start_s = time.perf_counter()
        self._go.set()
