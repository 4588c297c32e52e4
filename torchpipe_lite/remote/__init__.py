"""A pipeline served to other processes: ``serve`` in the one that owns it, ``connect`` in the
others, with the same calls as a local pipeline and requests crossing in batches."""

from .backend import Remote
from .client import RemoteHandle, RemotePipeline, connect
from .server import PipelineServer, ServeFigures, serve

__all__ = [
    "PipelineServer",
    "Remote",
    "RemoteHandle",
    "RemotePipeline",
    "ServeFigures",
    "connect",
    "serve",
]
