"""A private CUDA MPS daemon for the length of a benchmark run (``compare --mps``).

Without MPS the GPU time-slices between the processes of ``--workers N``: each process's
kernels wait for its turn. Under MPS their kernels share the GPU at once. The daemon started
here uses its own pipe and log folders, so it neither needs nor touches a system-wide one, and
it is stopped (``quit``) when the run ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

logger = logging.getLogger(__name__)

CONTROL = "nvidia-cuda-mps-control"
_ENV_KEYS = ("CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY")


class MpsError(RuntimeError):
    """The MPS control daemon is missing or would not start."""


@contextlib.contextmanager
def mps_daemon() -> Iterator[str]:
    """Start an MPS control daemon; processes started inside the block use it.

    Sets ``CUDA_MPS_PIPE_DIRECTORY``/``CUDA_MPS_LOG_DIRECTORY`` in this process's environment
    (children inherit them) and restores them afterwards. Yields the pipe folder.
    """
    control = shutil.which(CONTROL)
    if control is None:
        raise MpsError(f"{CONTROL} is not on PATH (it ships with the NVIDIA driver utilities)")
    saved = {key: os.environ.get(key) for key in _ENV_KEYS}
    with tempfile.TemporaryDirectory(prefix="tp-mps-") as root:
        pipe_dir, log_dir = os.path.join(root, "pipe"), os.path.join(root, "log")
        os.mkdir(pipe_dir)
        os.mkdir(log_dir)
        os.environ.update(CUDA_MPS_PIPE_DIRECTORY=pipe_dir, CUDA_MPS_LOG_DIRECTORY=log_dir)
        try:
            started = subprocess.run(
                [control, "-d"], capture_output=True, text=True, timeout=30, check=False
            )
            if started.returncode != 0:
                raise MpsError(
                    f"{CONTROL} -d exited {started.returncode}: "
                    f"{(started.stderr or started.stdout).strip() or 'no message'}"
                )
            logger.info("CUDA MPS daemon started (pipe %s)", pipe_dir)
            try:
                yield pipe_dir
            finally:
                stopped = subprocess.run(
                    [control], input="quit\n", capture_output=True, text=True, timeout=30
                )
                logger.info("CUDA MPS daemon stopped (exit %d)", stopped.returncode)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
