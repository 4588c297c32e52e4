"""Which GPU core processes the supervisor starts: one per GPU, or one where none is chosen.

Each core of a multi-GPU plan sees only its own GPU (``CUDA_VISIBLE_DEVICES``), so every stage
in it, the model and any GPU decode alike, lands there whatever device its thread would pick;
inside the core that GPU is ``cuda:0``. Its name in the figures is the GPU's index as the
supervisor sees it (``cuda:1``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from service.command_line import ServerSettings

#: The name of the one core of a plan that pins no GPU (the settings' device decides).
UNPINNED_CORE = "default"


class CorePlanError(ValueError):
    """The settings ask for cores this machine cannot run (the message names the flag)."""


@dataclass(frozen=True)
class CoreSpec:
    """One GPU core process to start."""

    #: Its place in the plan (and in the fronts' list of core sockets).
    index: int
    #: The CUDA index (as the supervisor sees them) it runs on; None: not pinned to one GPU.
    gpu: int | None

    @property
    def name(self) -> str:
        """``cuda:1``, or ``default`` for an unpinned core: its label in the figures."""
        return UNPINNED_CORE if self.gpu is None else f"cuda:{self.gpu}"

    def arguments(self) -> list[str]:
        """What its command line adds to the supervisor's (the last of a flag wins)."""
        if self.gpu is None:
            return []
        # Its only visible GPU (see ``environment``) is cuda:0 inside it.
        return ["--device", "cuda:0", "--core-name", self.name]

    def environment(self, inherited: Mapping[str, str]) -> dict[str, str]:
        """Its environment: ``inherited`` with only its GPU visible. An inherited
        ``CUDA_VISIBLE_DEVICES`` is the list the supervisor's indices count in."""
        environment = dict(inherited)
        if self.gpu is None:
            return environment
        visible = inherited.get("CUDA_VISIBLE_DEVICES")
        ids = [part.strip() for part in visible.split(",")] if visible else None
        environment["CUDA_VISIBLE_DEVICES"] = ids[self.gpu] if ids else str(self.gpu)
        return environment


def core_plan(settings: ServerSettings, gpu_count: int) -> list[CoreSpec]:
    """The cores for these settings on a machine with ``gpu_count`` visible GPUs: one per
    ``--device-ids`` entry; else one per GPU when there are two or more and ``--device`` names
    none; else one core, unpinned (the CPU, one GPU, or the ``--device`` given)."""
    if settings.device_ids is not None:
        missing = [gpu for gpu in settings.device_ids if gpu >= gpu_count]
        if missing:
            raise CorePlanError(
                f"--device-ids {','.join(map(str, settings.device_ids))}: "
                f"{gpu_count} GPU(s) visible, no CUDA index {','.join(map(str, missing))}"
            )
        return [CoreSpec(index, gpu) for index, gpu in enumerate(settings.device_ids)]
    if settings.device is not None or gpu_count < 2:
        return [CoreSpec(0, None)]
    return [CoreSpec(index, index) for index in range(gpu_count)]
