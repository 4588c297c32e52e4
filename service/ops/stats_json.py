"""``/stats.json``: the ``ServerStats`` of ``/stats`` as JSON, for people and scripts (curl)."""

from __future__ import annotations

import json
import math
from typing import Any

from service.gen.inference.ttypes import ErrorCode, ServerStats

#: The content type of ``/stats.json``.
STATS_JSON_CONTENT_TYPE = "application/json"


def _plain(value: Any) -> Any:
    """A Thrift struct (or what it holds) as JSON values: structs as objects of their set
    fields, map keys as strings, floats that JSON cannot spell as null."""
    if hasattr(value, "thrift_spec"):
        return {name: _plain(field) for name, field in vars(value).items() if field is not None}
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(item) for item in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def stats_json(stats: ServerStats) -> str:
    """The struct as indented JSON; ``failures_by_code`` keyed by the codes' names
    (``INVALID_IMAGE``), as a reader of the JSON would look them up."""
    record = _plain(stats)
    if stats.failures_by_code:
        names = ErrorCode._VALUES_TO_NAMES
        record["failures_by_code"] = {
            names.get(code, str(code)): count for code, count in stats.failures_by_code.items()
        }
    return json.dumps(record, indent=2, sort_keys=True) + "\n"
