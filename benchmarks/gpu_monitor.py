"""What the GPUs are and how busy they are, through NVML (nvidia-ml-py); absent GPUs say why."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


@dataclass
class GpuMonitor:
    """NVML handles of this machine's GPUs; ``names`` is empty and ``reason`` set without them."""

    names: list[str] = field(default_factory=list)
    reason: str | None = None
    _handles: list[object] = field(default_factory=list, repr=False)

    @classmethod
    def open(cls) -> GpuMonitor:
        """Initialises NVML; never raises: a machine without NVML or GPUs gets ``reason``."""
        try:
            import pynvml
        except ImportError:
            return cls(reason="nvidia-ml-py is not installed (pip install nvidia-ml-py)")
        try:
            pynvml.nvmlInit()
            handles = [
                pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())
            ]
        except pynvml.NVMLError as exc:
            return cls(reason=f"NVML unavailable: {exc}")
        if not handles:
            return cls(reason="NVML reports no GPU")
        names = [str(pynvml.nvmlDeviceGetName(handle)) for handle in handles]
        return cls(names=names, _handles=handles)

    @property
    def available(self) -> bool:
        """Whether at least one GPU can be watched."""
        return bool(self._handles)

    def index_of(self, pid: int) -> int:
        """The GPU ``pid`` computes on when NVML lists it; else the first of
        ``CUDA_VISIBLE_DEVICES`` (or 0), which is where a single-GPU server runs."""
        import pynvml

        for index, handle in enumerate(self._handles):
            try:
                processes = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
            except pynvml.NVMLError:
                continue
            if any(process.pid == pid for process in processes):
                return index
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
        index = int(visible) if visible.isdigit() and int(visible) < len(self._handles) else 0
        logger.info(
            "server pid %d not listed by NVML (container pid namespace?): GPU %d", pid, index
        )
        return index

    def utilization_percent(self, index: int) -> float | None:
        """The share of the last sample period in which a kernel ran on GPU ``index``."""
        import pynvml

        try:
            return float(pynvml.nvmlDeviceGetUtilizationRates(self._handles[index]).gpu)
        except pynvml.NVMLError as exc:
            logger.warning("GPU %d utilisation unreadable: %s", index, exc)
            return None

    def memory_used_mib(self, index: int) -> float | None:
        """Memory in use on GPU ``index``, by every process (MiB)."""
        import pynvml

        try:
            return pynvml.nvmlDeviceGetMemoryInfo(self._handles[index]).used / 2**20
        except pynvml.NVMLError as exc:
            logger.warning("GPU %d memory unreadable: %s", index, exc)
            return None
