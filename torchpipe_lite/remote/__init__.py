"""A pipeline served to other processes: ``serve`` in the one that owns it, ``connect`` in the
others, with the same calls as a local pipeline and requests crossing in batches; ``connect``
to a list of addresses gives a ``RemotePool`` over several servers of the same pipeline."""

from .backend import Remote
from .client import RemoteHandle, RemotePipeline
from .pool import RemotePool, connect, least_loaded
from .server import PipelineServer, ServeFigures, serve

__all__ = [
    "PipelineServer",
    "Remote",
    "RemoteHandle",
    "RemotePipeline",
    "RemotePool",
    "ServeFigures",
    "connect",
    "least_loaded",
    "serve",
]
