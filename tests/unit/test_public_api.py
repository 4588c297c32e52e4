"""The library's public names: a curated ``__all__``, each of them importable and documented."""

from __future__ import annotations

import torchpipe_lite as tp

PUBLIC = {
    "UNBOUNDED_BATCH",
    "Backend",
    "BackendError",
    "Color",
    "ConfigError",
    "DeviceSpec",
    "FilterError",
    "InvalidInputError",
    "NoResultError",
    "NodeStats",
    "OverloadedError",
    "Pipeline",
    "PipelineClosedError",
    "Precision",
    "RequestCancelledError",
    "RequestError",
    "RequestTimeoutError",
    "Status",
    "TorchpipeError",
    "create_backend",
    "errors",
    "load_config",
    "parse_backend_expression",
    "pipe",
    "register_backend",
    "register_filter",
    "registered_backends",
}


def test_all_is_the_curated_list_and_every_name_exists():
    assert set(tp.__all__) == PUBLIC  # a new public name is a decision: add it here too
    for name in tp.__all__:
        assert getattr(tp, name) is not None


def test_every_public_class_and_function_says_what_it_is():
    for name in tp.__all__:
        value = getattr(tp, name)
        if callable(value):
            assert (value.__doc__ or "").strip(), f"{name} has no docstring"


def test_every_error_is_a_torchpipe_error():
    for name in tp.errors.__all__:
        error = getattr(tp.errors, name)
        assert issubclass(error, tp.TorchpipeError), name


def test_the_test_fakes_register_only_when_asked_for():
    import subprocess
    import sys

    code = (
        "import torchpipe_lite as tp; before = 'Sleep' in tp.registered_backends(); "
        "import torchpipe_lite.testing; print(before, 'Sleep' in tp.registered_backends())"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.stdout.split() == ["False", "True"], run.stderr
