"""EngineTensor: a model stage that runs in a model engine process (``EngineServer``).

The stage writes each request's pixels into a slot of shared memory that it made (a memfd
handed to the engine once, when it connects), sends the slot's number, and waits for the
engine to write the result back into the same slot. The engine batches requests from every
process attached to it, so processes that each see few requests still reach the GPU in large
batches. See ``torchpipe_lite.engine.protocol`` for the exchange.
"""

from __future__ import annotations

import logging
import mmap
import os
import socket
from typing import TYPE_CHECKING, Any

import numpy as np

from ...engine import protocol
from ...engine.protocol import SlotLayout
from ...errors import BackendError, ConfigError, InvalidInputError
from ..base import Backend, param_int
from ..cuda_wait import wait_for_stream
from ..registry import register_backend

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


#: Errors the engine may name in a reply that reach the caller with their own type.
@register_backend("EngineTensor")
class EngineTensor(Backend):
    """Sends each request's 1xCxHxW uint8 pixels (CPU or CUDA) to the engine listening on the
    Unix socket ``engine``; its ``result`` is the engine's result as a 1xN float32 CPU tensor.

    ``max`` (default: the engine's largest batch) is how many slots this instance makes, so
    how many requests one ``forward`` may send. ``reply_timeout`` (ms, default 60000) bounds
    the wait for the engine; past it, or when the engine closes the connection, the instance
    fails every later request with ``BackendError``: the engine is gone.
    """

    PARAMS = frozenset({"engine", "max", "reply_timeout"})

    def init(self, params: dict[str, Any]) -> None:
        import torch

        self._torch = torch
        if not hasattr(os, "memfd_create"):
            raise ConfigError("needs Linux: the slots are a memfd shared with the engine")
        path = params.get("engine")
        if not path:
            raise ConfigError("is required (the model engine's Unix socket)", key="engine")
        self._path = str(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(param_int(params, "reply_timeout", 60_000) / 1000.0)
        try:
            self._connect(param_int(params, "max", 0) if "max" in params else None)
        except BaseException:
            self._sock.close()
            raise
        self._broken: str | None = None
        self._registered_ptr: int | None = None
        self._stream = None
        logger.info(
            "EngineTensor: attached to %s with %d slots (input %dx%dx%d uint8, %d result values)",
            self._path,
            self._max,
            self.layout.height,
            self.layout.width,
            self.layout.channels,
            self.layout.result_values,
        )

    def _connect(self, wanted_max: int | None) -> None:
        """Connect, read the engine's HELLO, make the slots and attach them (the handshake)."""
        try:
            self._sock.connect(self._path)
            hello = protocol.recv_exact(self._sock, protocol.HELLO.size)
        except OSError as error:
            raise ConnectionError(
                f"cannot reach the model engine at {self._path}: {error}"
            ) from error
        magic, version, height, width, channels, values, engine_max = protocol.HELLO.unpack(hello)
        protocol.check_magic(magic, "HELLO")
        if version != protocol.VERSION:
            raise protocol.EngineProtocolError(
                f"the engine speaks protocol {version}; this client speaks {protocol.VERSION}"
            )
        self.layout = SlotLayout(height, width, channels, values)
        if wanted_max is not None and wanted_max < 1:
            raise ConfigError(f"must be at least 1, got {wanted_max}", key="max")
        self._max = engine_max if wanted_max is None else min(wanted_max, engine_max)
        self._attach()

    def _attach(self) -> None:
        layout = self.layout
        size = self._max * layout.slot_bytes
        fd = os.memfd_create("torchpipe-lite-engine-slots")
        try:
            os.ftruncate(fd, size)
            self._memory = mmap.mmap(fd, size)
            socket.send_fds(self._sock, [protocol.ATTACH.pack(protocol.MAGIC, self._max)], [fd])
        finally:
            os.close(fd)  # the mapping and the engine's copy keep the memory alive
        magic, status = protocol.READY.unpack(protocol.recv_exact(self._sock, protocol.READY.size))
        protocol.check_magic(magic, "READY")
        if status != 0:
            raise protocol.EngineProtocolError(f"the engine refused the slots (status {status})")
        raw = np.frombuffer(self._memory, dtype=np.uint8).reshape(self._max, layout.slot_bytes)
        self._raw = raw
        hwc = (layout.height, layout.width, layout.channels)
        self._pixels = raw[:, : layout.input_bytes].reshape(self._max, *hwc)
        end = layout.result_offset + 4 * layout.result_values
        self._results = raw[:, layout.result_offset : end].view(np.float32)

    def forward(self, batch: list[dict[str, Any]]) -> None:
        if self._broken is not None:
            raise BackendError(self._broken)
        if len(batch) > self._max:
            raise ValueError(f"batch of {len(batch)} is over this stage's max of {self._max}")
        for index, item in enumerate(batch):
            self._write(index, self._row(index, item.get("data")))
        try:
            self._sock.sendall(b"".join(protocol.SUBMIT.pack(index) for index in range(len(batch))))
            outcomes = self._receive(len(batch))
        except (OSError, protocol.EngineProtocolError) as error:
            # A half-read reply stream cannot be resynchronised: this instance is done.
            self._broken = f"the model engine at {self._path} is gone: {error}"
            self._sock.close()
            raise BackendError(self._broken) from error
        failure = next(
            (
                (status, message)
                for status, message in outcomes.values()
                if status not in (protocol.Status.OK, protocol.Status.NO_RESULT)
            ),
            None,
        )
        if failure is not None:
            raise protocol.error_for(*failure)
        torch = self._torch
        for index, item in enumerate(batch):
            if outcomes[index][0] is protocol.Status.OK:
                # A copy: the slot is rewritten by the next batch.
                item["result"] = torch.from_numpy(self._results[index].copy())[None]

    def _row(self, index: int, data: Any) -> torch.Tensor:
        torch = self._torch
        row = (
            data[0]
            if isinstance(data, torch.Tensor) and data.dim() == 4 and data.shape[0] == 1
            else data
        )
        layout = self.layout
        expected = (layout.channels, layout.height, layout.width)
        if (
            not isinstance(row, torch.Tensor)
            or tuple(row.shape) != expected
            or row.dtype != torch.uint8
        ):
            shape = "x".join(map(str, getattr(data, "shape", ()))) or type(data).__name__
            raise InvalidInputError(
                f"item {index}: expected a 1x{expected[0]}x{expected[1]}x{expected[2]} uint8 "
                f"tensor, got {shape} ({getattr(data, 'dtype', '?')})"
            )
        return row

    def _write(self, index: int, row: torch.Tensor) -> None:
        torch = self._torch
        hwc = row.detach().permute(1, 2, 0)
        if hwc.device.type == "cpu":
            np.copyto(self._pixels[index], hwc.numpy())
            return
        # GPU pixels: one device-to-host copy into the slot (pinned once registered), on this
        # instance's stream. The stage that made them has waited for its own stream already
        # (every GPU stage does before a request moves on), so they are complete.
        self._ensure_pinned(hwc.device)
        with torch.cuda.stream(self._stream):
            torch.from_numpy(self._pixels[index]).copy_(hwc, non_blocking=True)
        wait_for_stream(self._stream)

    def _ensure_pinned(self, device: torch.device) -> None:
        torch = self._torch
        if self._stream is not None:
            return
        self._stream = torch.cuda.Stream(device)
        pointer = self._raw.ctypes.data
        code = torch.cuda.cudart().cudaHostRegister(pointer, self._raw.nbytes, 0)
        if int(code) == 0:
            self._registered_ptr = pointer
        else:
            logger.warning(
                "EngineTensor: cudaHostRegister of the slots failed (%s); GPU pixels copy "
                "through pageable memory, more slowly",
                code,
            )

    def _receive(self, count: int) -> dict[int, tuple[protocol.Status, str]]:
        outcomes: dict[int, tuple[protocol.Status, str]] = {}
        while len(outcomes) < count:
            slot, status, length = protocol.REPLY.unpack(
                protocol.recv_exact(self._sock, protocol.REPLY.size)
            )
            message = (
                protocol.recv_exact(self._sock, length).decode(errors="replace") if length else ""
            )
            if slot >= count or slot in outcomes:
                raise protocol.EngineProtocolError(f"a reply for slot {slot}, which was not sent")
            try:
                outcomes[slot] = (protocol.Status(status), message)
            except ValueError:
                raise protocol.EngineProtocolError(f"a reply of unknown status {status}") from None
        return outcomes

    def max(self) -> int:
        return self._max

    def placement(self) -> str | None:
        return f"engine:{self._path}"

    def close(self) -> None:
        self._sock.close()
        if self._registered_ptr is not None:
            self._torch.cuda.cudart().cudaHostUnregister(self._registered_ptr)
            self._registered_ptr = None
