"""One engine client's connection: the handshake, its slots (mapped from its memfd), replies."""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import socket
import threading
from typing import Any

import numpy as np

from . import protocol
from .protocol import EngineProtocolError, SlotLayout

logger = logging.getLogger(__name__)


class EngineConnection:
    """One client: its socket and its slots, mapped from the memfd it sent."""

    def __init__(self, sock: socket.socket, layout: SlotLayout, slot_count: int, fd: int):
        import torch

        self.sock = sock
        self.slot_count = slot_count
        size = slot_count * layout.slot_bytes
        if os.fstat(fd).st_size != size:
            raise EngineProtocolError(
                f"the slot memory is {os.fstat(fd).st_size} bytes; {slot_count} slots need {size}"
            )
        # The mapping outlives the socket until the last job that reads it has replied.
        self._memory = mmap.mmap(fd, size)
        raw = np.frombuffer(self._memory, dtype=np.uint8).reshape(slot_count, layout.slot_bytes)
        hwc = (layout.height, layout.width, layout.channels)
        pixels = raw[:, : layout.input_bytes].reshape(slot_count, *hwc)
        # One 1xCxHxW view per slot, made once: the model stage reads it like Mat2Tensor's rows.
        self.rows = [
            torch.from_numpy(pixels[slot]).permute(2, 0, 1)[None] for slot in range(slot_count)
        ]
        results_end = layout.result_offset + 4 * layout.result_values
        self.results = raw[:, layout.result_offset : results_end].view(np.float32)
        self.in_flight = bytearray(slot_count)
        self.pending_bytes = b""
        self.send_lock = threading.Lock()
        self.open = True

    def reply(self, payload: bytes) -> None:
        """Send replies; a client that is gone or stuck is closed (its requests are lost)."""
        if not self.open:
            return
        with self.send_lock:
            try:
                self.sock.sendall(payload)
            except OSError as error:
                logger.warning("engine: a client stopped reading (%s); closing it", error)
                self.close()

    def store(self, slot: int, result: Any) -> tuple[protocol.Status, str]:
        """Write a request's result into its slot; the reply status and message."""
        if result is None:
            return protocol.Status.NO_RESULT, ""
        try:
            if hasattr(result, "detach"):  # a tensor, possibly on a GPU
                result = result.detach().float().cpu()
            np.copyto(self.results[slot], np.asarray(result).reshape(-1), casting="same_kind")
        except (TypeError, ValueError) as error:
            return protocol.Status.BACKEND_ERROR, f"the result does not fit its slot: {error}"
        return protocol.Status.OK, ""

    def close(self) -> None:
        """Mark closed and shut the socket down (the intake closes it)."""
        self.open = False
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


def accept_client(sock: socket.socket, layout: SlotLayout, max_batch: int) -> EngineConnection:
    """The engine's side of the handshake on a new connection: HELLO, ATTACH, READY."""
    sock.sendall(
        protocol.HELLO.pack(
            protocol.MAGIC,
            protocol.VERSION,
            layout.height,
            layout.width,
            layout.channels,
            layout.result_values,
            max_batch,
        )
    )
    message, fds, _, _ = socket.recv_fds(sock, protocol.ATTACH.size, 1)
    try:
        if len(message) != protocol.ATTACH.size or len(fds) != 1:
            raise EngineProtocolError("expected ATTACH with one file descriptor")
        magic, slot_count = protocol.ATTACH.unpack(message)
        protocol.check_magic(magic, "ATTACH")
        if not 1 <= slot_count <= protocol.MAX_SLOTS_PER_CONNECTION:
            raise EngineProtocolError(
                f"{slot_count} slots asked; 1..{protocol.MAX_SLOTS_PER_CONNECTION} allowed"
            )
        connection = EngineConnection(sock, layout, slot_count, fds[0])
    finally:
        for fd in fds:
            os.close(fd)
    sock.sendall(protocol.READY.pack(protocol.MAGIC, 0))
    return connection
