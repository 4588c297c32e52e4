"""Start-up warm-up: one real inference through the Thrift port before the server says ready."""

from __future__ import annotations

import logging
import time

import cv2
import numpy as np

from service.gen.inference.ttypes import InferenceParams
from service.thrift_client import connect

logger = logging.getLogger(__name__)

#: The uuid the warm-up request carries (visible in the debug log and in the counters).
WARMUP_UUID = "warmup"


def warmup_jpeg(width: int = 320, height: int = 240) -> bytes:
    """A synthetic colour JPEG (gradients), so the warm-up needs no file on disk."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    image = np.stack(
        [np.broadcast_to(x, (height, width)), np.broadcast_to(y, (height, width)), (x + y) / 2],
        axis=-1,
    ).astype(np.uint8)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise RuntimeError("OpenCV could not encode the warm-up JPEG")
    return encoded.tobytes()


def connect_host(bind_host: str) -> str:
    """Where a client on this machine reaches a server bound to ``bind_host``."""
    if bind_host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if bind_host == "::":
        return "::1"
    return bind_host


def warm_up(host: str, port: int, *, timeout_s: float = 300.0) -> float:
    """Classify the warm-up image through ``host:port``; returns the seconds it took.

    Exercises the whole path a client's request takes (accept, decode, every pipeline stage,
    the engine, the reply), so the first real client does not pay for lazy initialisation.
    Raises whatever the call raises (the server is then not fit to be ready).
    """
    started_s = time.monotonic()
    with connect(host, port, timeout_s=timeout_s) as connection:
        result = connection.client.infer_batch(
            InferenceParams(uuid=WARMUP_UUID, data=warmup_jpeg())
        )
    if not result.label or not 0.0 < result.score <= 1.0:
        raise RuntimeError(f"warm-up got an implausible answer: {result!r}")
    took_s = time.monotonic() - started_s
    logger.info("warm-up inference: %s (%.3f) in %.2f s", result.label, result.score, took_s)
    return took_s
