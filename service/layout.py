"""The serving layout: how ``python -m service``'s processes are arranged, chosen in one place."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from service.command_line import ServerSettings


class Layout(enum.Enum):
    """How the server's processes are arranged."""

    #: One process serves the port.
    ONE_PROCESS = "one process"
    #: The baseline's ``--workers N``: N processes, each with its own model copy.
    WORKERS = "workers"
    #: The pipelined handler's ``--workers N``: N fronts beside one GPU core process.
    FRONTS_AND_CORE = "fronts and a core"
    #: This process is a layout's GPU core (``--serve-core``, set by its supervisor).
    CORE = "core"


@dataclass(frozen=True)
class ServingLayout:
    kind: Layout
    #: Server processes on the port (workers or fronts; 1 for one process or a core).
    processes: int


def serving_layout(settings: ServerSettings, *, on_gpu: bool, cpu_count: int) -> ServingLayout:
    """The one place the settings choose a layout. ``--workers`` as given, or what ``auto``
    means for this handler on this machine: one front per two CPU cores, 2 to 8, for the
    pipelined handler on a GPU, else one process (see ``--workers``'s help)."""
    if settings.serve_core is not None:
        return ServingLayout(Layout.CORE, 1)
    processes = settings.workers
    if processes is None:
        on_gpu = on_gpu or settings.device_ids is not None
        pipelined_on_gpu = settings.handler == "pipelined" and on_gpu
        processes = max(2, min(8, cpu_count // 2)) if pipelined_on_gpu else 1
    if processes == 1:
        return ServingLayout(Layout.ONE_PROCESS, 1)
    if settings.handler == "pipelined":
        return ServingLayout(Layout.FRONTS_AND_CORE, processes)
    return ServingLayout(Layout.WORKERS, processes)
