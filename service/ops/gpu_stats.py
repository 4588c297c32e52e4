"""GPU utilisation and memory of this machine through NVML, read when stats are asked for."""

from __future__ import annotations

import logging
import threading
from typing import Any

from service.gen.inference.ttypes import GpuStats

logger = logging.getLogger(__name__)


class GpuReader:
    """NVML handles opened once; ``read()`` returns one ``GpuStats`` per GPU, or ``None``
    where NVML (nvidia-ml-py, the driver) or a GPU is missing: ``reason`` then says which,
    and one log line said it at start-up."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handles: list[Any] = []
        self._lock = threading.Lock()  # NVML calls from concurrent scrapes, one at a time
        self.reason: str | None = None
        try:
            import pynvml
        except ImportError:
            self.reason = "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
        else:
            try:
                pynvml.nvmlInit()
                count = pynvml.nvmlDeviceGetCount()
                self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
                self._nvml = pynvml
            except pynvml.NVMLError as exc:
                self.reason = f"NVML unavailable ({exc})"
            if self._nvml is not None and not self._handles:
                self.reason = "NVML reports no GPU"
        if self.reason is None:
            logger.info("GPU metrics: %d GPU(s) through NVML", len(self._handles))
        else:
            logger.info("GPU metrics not exported: %s", self.reason)

    @property
    def available(self) -> bool:
        """Whether there are GPUs to report."""
        return bool(self._handles)

    def read(self) -> list[GpuStats] | None:
        """Current figures of every GPU; a GPU NVML cannot read right now is left out."""
        if not self._handles:
            return None
        nvml = self._nvml
        gpus = []
        with self._lock:
            for index, handle in enumerate(self._handles):
                try:
                    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                    gpus.append(
                        GpuStats(
                            index=index,
                            uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                            name=_text(nvml.nvmlDeviceGetName(handle)),
                            utilization=nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0,
                            memory_used_bytes=int(memory.used),
                            memory_total_bytes=int(memory.total),
                        )
                    )
                except nvml.NVMLError as exc:
                    logger.warning("GPU %d unreadable through NVML: %s", index, exc)
        return gpus


def _text(value: str | bytes) -> str:
    """NVML strings are bytes in old nvidia-ml-py releases and str in new ones."""
    return value.decode() if isinstance(value, bytes) else str(value)
