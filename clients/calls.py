"""One call of each load-test method, with the response checked: returns the error codes seen."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from service.gen.inference import InferenceService, ttypes

#: A call sends ``images`` under ``uuid`` and returns one error code per image that failed.
Call = Callable[[InferenceService.Client, Sequence[bytes], str], list[str]]

#: A response arrived but broke the contract (no label, score outside (0, 1], wrong uuid...).
BAD_RESPONSE = "BAD_RESPONSE"


def error_name(code: int) -> str:
    """The IDL name of an ``ErrorCode`` value (``UNKNOWN_<n>`` for a value the IDL lacks)."""
    return ttypes.ErrorCode._VALUES_TO_NAMES.get(code, f"UNKNOWN_{code}")


def valid_top1(label: object, score: object) -> bool:
    """True for a non-empty label and a finite score in (0, 1]."""
    if not isinstance(label, str) or not label.strip():
        return False
    return isinstance(score, float) and math.isfinite(score) and 0.0 < score <= 1.0


def call_ping(client: InferenceService.Client, images: Sequence[bytes], uuid: str) -> list[str]:
    """``ping()``: measures the RPC path alone (the images are not sent)."""
    client.ping()
    return []


def call_infer_batch(
    client: InferenceService.Client, images: Sequence[bytes], uuid: str
) -> list[str]:
    """``infer_batch`` (the reference call) on ``images[0]``."""
    try:
        result = client.infer_batch(ttypes.InferenceParams(uuid=uuid, data=images[0]))
    except ttypes.InferenceError as exc:
        return [error_name(exc.code)]
    return [] if valid_top1(result.label, result.score) else [BAD_RESPONSE]


def call_infer_many(
    client: InferenceService.Client, images: Sequence[bytes], uuid: str
) -> list[str]:
    """``infer_many`` with top-1 on all ``images``; each image is checked on its own."""
    params = [
        ttypes.InferenceParams(uuid=f"{uuid}.{i}", data=data) for i, data in enumerate(images)
    ]
    try:
        items = client.infer_many(params, 1)
    except ttypes.InferenceError as exc:
        return [error_name(exc.code)] * len(images)
    if not isinstance(items, list) or len(items) != len(images):
        return [BAD_RESPONSE] * len(images)
    errors = []
    for sent, item in zip(params, items, strict=True):
        if item.uuid != sent.uuid:
            errors.append(BAD_RESPONSE)
        elif item.error is not None:
            errors.append(error_name(item.error.code))
        elif not item.predictions or not valid_top1(
            item.predictions[0].label, item.predictions[0].score
        ):
            errors.append(BAD_RESPONSE)
    return errors


METHODS = ("infer_batch", "ping")


def call_for(method: str, request_batch: int) -> Call:
    """The call a load test makes: ``ping``, or ``infer_batch`` (batch 1) / ``infer_many``."""
    if method == "ping":
        return call_ping
    if method != "infer_batch":
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    return call_infer_batch if request_batch == 1 else call_infer_many
