"""service/, benchmarks/ and clients/ reach the library through its public surface only.

That surface is ``torchpipe_lite`` (with ``torchpipe_lite.errors``) and ``torchpipe_lite.extend``
(the documented extension API). A new import of an internal module fails here: export the
name from one of those instead, or, if it must stay deep, add it below with the reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

import torchpipe_lite.extend as extend

REPO = Path(__file__).resolve().parents[2]
CALLERS = ("service", "benchmarks", "clients")

PUBLIC = {"torchpipe_lite", "torchpipe_lite.errors", "torchpipe_lite.extend"}

#: (file, internal module) pairs allowed to stay, each with why.
DEEPER = {
    # Stand-ins that subclass built-in backends and replace their GPU calls with waits, to
    # measure the stages' own Python on a CPU: white-box by design.
    ("benchmarks/standins.py", "torchpipe_lite.backends.image.image_cpu"),
    ("benchmarks/standins.py", "torchpipe_lite.backends.image.image_gpu"),
    ("benchmarks/standins.py", "torchpipe_lite.backends.image.image_header"),
    ("benchmarks/standins.py", "torchpipe_lite.backends.model.torch_models"),
    ("benchmarks/standins.py", "torchpipe_lite.backends.model.torch_tensor"),
    ("benchmarks/standins.py", "torchpipe_lite.backends.registry"),
    ("benchmarks/stage_python.py", "torchpipe_lite.backends.builtin"),
    ("benchmarks/stage_python.py", "torchpipe_lite.backends.image.image_gpu"),
    ("benchmarks/stage_python.py", "torchpipe_lite.backends.image.image_header"),
    # Records the CUDA wait mode in result files (a mode being deleted with its option).
    ("benchmarks/run_record.py", "torchpipe_lite.backends.cuda_wait"),
}


def library_imports(path: Path) -> set[str]:
    """The torchpipe_lite modules ``path`` imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return {name for name in found if name.split(".")[0] == "torchpipe_lite"}


def deep_imports() -> set[tuple[str, str]]:
    """Every (file, module) where a caller imports a library module outside ``PUBLIC``."""
    deep = set()
    for caller in CALLERS:
        for path in sorted((REPO / caller).rglob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            if relative.startswith("service/gen/"):
                continue
            deep.update((relative, m) for m in library_imports(path) if m not in PUBLIC)
    return deep


def test_callers_import_only_the_public_surface_and_the_listed_exceptions():
    assert deep_imports() - DEEPER == set()


def test_the_extension_api_is_a_curated_documented_list():
    assert extend.__doc__ and len(extend.__all__) == len(set(extend.__all__))
    for name in extend.__all__:
        value = getattr(extend, name)
        assert name in extend.__doc__, f"{name} is not described in extend's docstring"
        if callable(value):
            assert (value.__doc__ or "").strip(), f"{name} has no docstring"
