"""Samples a server's CPU use, resident memory and GPU utilisation while a load test runs."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import psutil

from benchmarks.gpu_monitor import GpuMonitor

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResourceUse:
    """What the server used between ``start`` and ``stop``."""

    cpu_percent: float  # of one core (400 = four busy cores), from CPU times over the window
    rss_mib_max: float  # largest resident memory seen, the server and its children together
    gpu_util_percent: float | None  # mean of the samples; None without a GPU
    samples: int
    #: Largest GPU memory in use seen on the server's GPU, by every process on it (the
    #: servers of a comparison run one at a time); None without a GPU.
    gpu_memory_mib_max: float | None = None


class ResourceSampler:
    """Watches the process ``pid`` and its children from ``start()`` to ``stop()``."""

    def __init__(self, pid: int, *, gpu: GpuMonitor | None = None, interval_s: float = 0.5):
        self.process = psutil.Process(pid)
        self.gpu = gpu if gpu is not None and gpu.available else None
        self.gpu_index = self.gpu.index_of(pid) if self.gpu is not None else None
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rss_mib_max = 0.0
        self._gpu_samples: list[float] = []
        self._gpu_memory_mib_max: float | None = None
        self._samples = 0
        self._cpu_start_s = 0.0
        self._wall_start_s = 0.0
        #: What ``stop()`` returned; None before.
        self.result: ResourceUse | None = None

    def _tree(self) -> list[psutil.Process]:
        try:
            return [self.process, *self.process.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def _cpu_s(self) -> float:
        total_s = 0.0
        for process in self._tree():
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue  # a child that ended between listing and reading
            total_s += times.user + times.system
        return total_s

    def _sample(self) -> None:
        rss_bytes = 0
        for process in self._tree():
            try:
                rss_bytes += process.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        self._rss_mib_max = max(self._rss_mib_max, rss_bytes / 2**20)
        if self.gpu is not None and self.gpu_index is not None:
            util = self.gpu.utilization_percent(self.gpu_index)
            if util is not None:
                self._gpu_samples.append(util)
            memory = self.gpu.memory_used_mib(self.gpu_index)
            if memory is not None:
                self._gpu_memory_mib_max = max(self._gpu_memory_mib_max or 0.0, memory)
        self._samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def start(self) -> None:
        """Starts the window: CPU time is counted from here, samples are taken in a thread."""
        self._cpu_start_s = self._cpu_s()
        self._wall_start_s = time.perf_counter()
        self._sample()
        self._thread = threading.Thread(target=self._run, name="resource-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> ResourceUse:
        """Ends the window and returns what was used in it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        wall_s = time.perf_counter() - self._wall_start_s
        cpu_s = self._cpu_s() - self._cpu_start_s
        gpu = sum(self._gpu_samples) / len(self._gpu_samples) if self._gpu_samples else None
        self.result = ResourceUse(
            cpu_percent=100.0 * cpu_s / wall_s if wall_s > 0 else 0.0,
            rss_mib_max=self._rss_mib_max,
            gpu_util_percent=gpu,
            samples=self._samples,
            gpu_memory_mib_max=self._gpu_memory_mib_max,
        )
        return self.result
