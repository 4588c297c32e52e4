"""The ops port over HTTP for the tests: a GET, and the Prometheus text's families and values."""

from __future__ import annotations

import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.support.live_service import WAIT_S


def get(port: int, path: str) -> tuple[int, str, str]:
    """(status, content type, body) of an HTTP GET on the loopback ops port."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=WAIT_S) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def samples(text: str) -> dict[str, list]:
    """Family name -> its samples, through prometheus-client's parser (so the text is valid)."""
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(found: dict[str, list], family: str, **labels: str) -> float:
    matching = [s.value for s in found[family] if labels.items() <= s.labels.items()]
    assert len(matching) == 1, f"{family} {labels}: {matching}"
    return matching[0]
