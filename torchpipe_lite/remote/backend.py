"""Remote: a stage whose work is done by a pipeline served in another process.

A front process's pipeline ends in a ``Remote`` node: its batches go to the served pipeline
(``tp.serve``) in one frame each, and each request's ``result`` comes back. So CPU stages can
run in many front processes while one process owns the GPU and sees every front's requests.
"""

from __future__ import annotations

import threading
from typing import Any

from ..backends.base import Backend, param_int
from ..backends.registry import register_backend
from ..errors import BackendError, ConfigError
from .client import RemotePipeline
from .pool import RemotePool


@register_backend("Remote")
class Remote(Backend):
    """Runs each batch on the pipeline served at ``address``: a Unix socket path, or several
    (``"a,b"`` or a list: servers of the same pipeline, one per GPU), each batch then going to
    the one with the least outstanding work (``RemotePool``).

    ``reply_timeout`` (ms, default 60000) bounds one batch's wait. A request that fails at the
    server fails the batch, and the scheduler runs its batch-mates again alone, as for any
    backend, so each request gets its own outcome. The instances of a process share one
    connection (pool): the server then answers each batch of ends in one frame per process.
    """

    PARAMS = frozenset({"address", "reply_timeout"})

    def init(self, params: dict[str, Any]) -> None:
        address = _addresses(params.get("address"))
        if not address:
            raise ConfigError("is required (the served pipeline's Unix socket)", key="address")
        self._reply_timeout_s = param_int(params, "reply_timeout", 60_000) / 1000.0
        self._remote = _shared_connection(address)
        entries = self._remote.shape.entries
        self._max = self._remote.batch_range(entries[0])[1] if len(entries) == 1 else 1

    def forward(self, batch: list[dict[str, Any]]) -> None:
        requests = [{"data": item["data"]} for item in batch]
        errors = self._remote.run_all(requests, timeout_s=self._reply_timeout_s)
        failed = [error for error in errors if error is not None]
        if failed:
            if len(batch) == 1:
                raise failed[0]
            raise BackendError(f"{len(failed)} of {len(batch)} requests failed at the server")
        for item, request in zip(batch, requests, strict=True):
            if "result" in request:
                item["result"] = request["result"]
            else:
                item.pop("result", None)

    def max(self) -> int:
        return self._max

    def close(self) -> None:
        _release_connection(self._remote)


def _addresses(value: Any) -> str:
    """``address`` as one string, several addresses comma-separated ("" when none)."""
    parts = value if isinstance(value, list | tuple) else str(value or "").split(",")
    return ",".join(str(part).strip() for part in parts if str(part).strip())


_connections: dict[str, tuple[RemotePipeline | RemotePool, int]] = {}
_connections_lock = threading.Lock()


def _shared_connection(address: str) -> RemotePipeline | RemotePool:
    with _connections_lock:
        remote, users = _connections.get(address, (None, 0))
        if remote is None:
            several = address.split(",")
            remote = RemotePipeline(address) if len(several) == 1 else RemotePool(several)
        _connections[address] = (remote, users + 1)
        return remote


def _release_connection(remote: RemotePipeline | RemotePool) -> None:
    with _connections_lock:
        shared, users = _connections[remote.address]
        if users > 1:
            _connections[remote.address] = (shared, users - 1)
            return
        del _connections[remote.address]
    remote.close()
