"""The library's public names: a curated ``__all__``, each of them importable and documented."""

from __future__ import annotations

import torchpipe_lite as tp

PUBLIC = {
    "TASK_BOX_KEY",
    "TASK_CONTEXT_KEY",
    "TASK_DATA_KEY",
    "TASK_EVENT_KEY",
    "TASK_INFO_KEY",
    "TASK_NODE_NAME_KEY",
    "TASK_RESULT_KEY",
    "UNBOUNDED_BATCH",
    "Backend",
    "BackendError",
    "Color",
    "ConfigError",
    "DeviceSpec",
    "Event",
    "FilterError",
    "InvalidInputError",
    "NoResultError",
    "NodeStats",
    "OverloadedError",
    "Pipeline",
    "PipelineClosedError",
    "PipelineServer",
    "PipelineUnavailableError",
    "Precision",
    "RemotePipeline",
    "RemotePool",
    "RequestCancelledError",
    "RequestError",
    "RequestTimeoutError",
    "Status",
    "TorchpipeError",
    "connect",
    "create_backend",
    "errors",
    "load_config",
    "parse_backend_expression",
    "parse_toml",
    "pipe",
    "register_backend",
    "register_filter",
    "registered_backends",
    "serve",
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
    """Fail and NoResult are this project's fakes; TorchPipe's diagnostic backends (Sleep,
    RuntimeError, C10Exception) come with the library, as they do with TorchPipe."""
    import subprocess
    import sys

    code = (
        "import torchpipe_lite as tp; names = tp.registered_backends(); "
        "assert {'Sleep', 'RuntimeError', 'C10Exception'} <= set(names); "
        "before = 'Fail' in names; "
        "import torchpipe_lite.testing; print(before, 'Fail' in tp.registered_backends())"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.stdout.split() == ["False", "True"], run.stderr
