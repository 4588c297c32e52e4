"""The Triton peer's files: its model repository's config, and where a ``tritonserver`` is.

The committed repository (``benchmarks/peers/triton/model_repository``) runs as it is on a
machine with Triton and this project importable from the Python backend's interpreter:

    tritonserver --model-repository=benchmarks/peers/triton/model_repository

The runner writes a copy with its own settings (instances, device kind, absolute paths) into a
temporary folder. ``find_tritonserver`` looks for the binary: ``--tritonserver``, then
``$TRITONSERVER``, then ``tritonserver`` on ``PATH``, then the one inside the
``nvidia-pytriton`` wheel (``pip install --no-deps nvidia-pytriton``), whose Python backend
stubs are per Python version and whose libraries sit beside the package.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import site
import sys
from dataclasses import dataclass, field
from pathlib import Path

from service.server_process import REPO_ROOT

#: The committed model repository and its one model.
MODEL_REPOSITORY = Path(__file__).resolve().parent / "triton" / "model_repository"
MODEL_NAME = "classifier"
#: Where ``make peers`` puts NumPy < 2 for the pytriton wheel's stub (its BYTES tensors are
#: read wrongly with NumPy 2; pytriton itself pins numpy < 2).
STUB_SITE = REPO_ROOT / ".venv" / "triton-stub-site"


@dataclass(frozen=True)
class TritonModelSettings:
    """The model's config: batching, instances, device kind, and what ``model.py`` builds."""

    max_batch_size: int = 8
    max_queue_delay_us: int = 5000
    instances: int = 1
    kind: str = "KIND_GPU"  # or "KIND_CPU"
    repo_root: str = ""  # empty: model.py finds the repository from its own path
    torchpipe_config: str = ""  # empty: the service's resnet50.toml
    model: str = ""  # empty: the config's model file


def render_config(settings: TritonModelSettings) -> str:
    """The ``config.pbtxt`` of the classifier model."""
    parameters = [
        ("repo_root", settings.repo_root),
        ("torchpipe_config", settings.torchpipe_config),
        ("model", settings.model),
    ]
    lines = [
        "# The Triton peer: JPEG bytes in, our decode/resize/RGB/engine (model.py), top-1 out.",
        "# Written by benchmarks/peers/triton_repo.py (render_config); the runner writes its own.",
        f'name: "{MODEL_NAME}"',
        'backend: "python"',
        f"max_batch_size: {settings.max_batch_size}",
        'input [ { name: "IMAGE" data_type: TYPE_STRING dims: [ 1 ] } ]',
        "output [",
        '  { name: "LABEL" data_type: TYPE_INT64 dims: [ 1 ] },',
        '  { name: "PROB" data_type: TYPE_FP32 dims: [ 1 ] }',
        "]",
        f"instance_group [ {{ count: {settings.instances} kind: {settings.kind} }} ]",
        f"dynamic_batching {{ max_queue_delay_microseconds: {settings.max_queue_delay_us} }}",
        *(
            f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}'
            for key, value in parameters
        ),
    ]
    return "\n".join(lines) + "\n"


def write_repository(folder: Path, settings: TritonModelSettings) -> Path:
    """A model repository under ``folder``: ``model.py`` copied, ``config.pbtxt`` rendered."""
    model_dir = folder / MODEL_NAME
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    shutil.copy2(MODEL_REPOSITORY / MODEL_NAME / "1" / "model.py", model_dir / "1" / "model.py")
    (model_dir / "config.pbtxt").write_text(render_config(settings))
    return folder


@dataclass(frozen=True)
class TritonRuntime:
    """A ``tritonserver`` to run: the binary, its version, the environment it needs, and, for
    the pytriton wheel's, a backend folder to assemble with the stub of this Python."""

    binary: Path
    source: str  # where it was found, for the record
    env: dict[str, str] = field(default_factory=dict)
    stub: Path | None = None  # the pytriton wheel's stub for this Python
    python_backend: Path | None = None  # the folder of libtriton_python.so

    def backend_directory(self, folder: Path) -> Path | None:
        """``--backend-directory`` for this runtime (None: the binary's own default): for the
        wheel, ``folder/backends/python`` holding its backend and this Python's stub."""
        if self.stub is None or self.python_backend is None:
            return None
        python = folder / "backends" / "python"
        python.mkdir(parents=True, exist_ok=True)
        for item in self.python_backend.iterdir():
            target = python / item.name
            if not target.exists():
                target.symlink_to(item)
        stub = python / "triton_python_backend_stub"
        if not stub.exists():
            shutil.copy2(self.stub, stub)
        return folder / "backends"


def _from_pytriton() -> TritonRuntime | None:
    try:
        dist = importlib.metadata.distribution("nvidia-pytriton")
    except importlib.metadata.PackageNotFoundError:
        return None
    home = Path(str(dist.locate_file("pytriton/tritonserver")))
    binary = home / "bin" / "tritonserver"
    if not binary.is_file():
        return None
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = home / "python_backend_stubs" / version / "triton_python_backend_stub"
    libs = Path(str(dist.locate_file("nvidia_pytriton.libs")))
    env = {
        "LD_LIBRARY_PATH": os.pathsep.join(
            filter(None, [str(libs), os.environ.get("LD_LIBRARY_PATH", "")])
        )
    }
    return TritonRuntime(
        binary=binary,
        source=f"nvidia-pytriton {dist.version} wheel",
        env=env,
        stub=stub if stub.is_file() else None,
        python_backend=home / "backends" / "python",
    )


def find_tritonserver(explicit: str | None = None) -> TritonRuntime | str:
    """The ``tritonserver`` to run, or a one-line reason why there is none."""
    for source, value in (
        ("--tritonserver", explicit),
        ("$TRITONSERVER", os.environ.get("TRITONSERVER")),
    ):
        if value:
            path = Path(value)
            if path.is_file() and os.access(path, os.X_OK):
                return TritonRuntime(binary=path, source=source)
            return f"{source} names {value}, which is not an executable file"
    on_path = shutil.which("tritonserver")
    if on_path:
        return TritonRuntime(binary=Path(on_path), source="PATH")
    wheel = _from_pytriton()
    if wheel is not None:
        return wheel
    return (
        "tritonserver not found (not given by --tritonserver or $TRITONSERVER, not on PATH, "
        "no nvidia-pytriton wheel installed: `make peers` installs one)"
    )


def stub_sys_path() -> list[str]:
    """What ``model.py`` prepends to the stub's ``sys.path`` (``TORCHPIPE_LITE_SYS_PATH``):
    NumPy < 2 for the wheel's stub where ``make peers`` put it, this interpreter's
    ``PYTHONPATH`` (which the stub does not pass on) and site-packages (torch, OpenCV...),
    and the repository root."""
    paths = [str(STUB_SITE)] if STUB_SITE.is_dir() else []
    paths += [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    paths += [entry for entry in site.getsitepackages() if Path(entry).is_dir()]
    paths.append(str(REPO_ROOT))
    return list(dict.fromkeys(paths))
