"""TorchPipe's names for the keys of a request dict, and what a config's ``map`` may call them."""

from __future__ import annotations

TASK_DATA_KEY = "data"
TASK_RESULT_KEY = "result"
TASK_CONTEXT_KEY = "context"
TASK_BOX_KEY = "_box"
TASK_INFO_KEY = "_info"
TASK_STACK_KEY = "_stack"
TASK_NODE_NAME_KEY = "node_name"
TASK_DEFAULT_NAME_KEY = "_default_node_name"
TASK_REQUEST_KEY = "request"
TASK_REQUEST_SIZE_KEY = "request_size"
TASK_RESTART_KEY = "restart"
TASK_CPU_RESULT_KEY = "cpu_result"
TASK_EVENT_KEY = "event"

#: A ``map`` may write a key by its constant's name (``a[TASK_RESULT_KEY:TASK_DATA_KEY]``).
TASK_KEY_MAP = {
    name: value
    for name, value in globals().items()
    if name.startswith("TASK_") and name.endswith("_KEY") and isinstance(value, str)
}


def key_named(text: str) -> str:
    """``text`` as a request key: a ``TASK_..._KEY`` name becomes its value."""
    return TASK_KEY_MAP.get(text, text)
