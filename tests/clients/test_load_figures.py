"""The load tester's arithmetic: nearest-rank percentiles and spreading calls over clients."""

from __future__ import annotations

from clients.calls import valid_top1
from clients.client_qps import _split
from clients.load_result import percentile_ms


def test_nearest_rank_percentiles():
    latencies_s = [i / 1000.0 for i in range(1, 101)]  # 1..100 ms
    assert percentile_ms(latencies_s, 0.50) == 50.0
    assert percentile_ms(latencies_s, 0.90) == 90.0
    assert percentile_ms(latencies_s, 0.99) == 99.0
    assert percentile_ms([0.004], 0.99) == 4.0
    assert percentile_ms([], 0.5) is None


def test_split_spreads_the_remainder_over_the_first_parts():
    assert _split(10, 3) == [4, 3, 3]
    assert _split(2, 4) == [1, 1, 0, 0]
    assert sum(_split(10000, 7)) == 10000


def test_top1_validity():
    assert valid_top1("281 tabby", 0.73)
    assert valid_top1("281 tabby", 1.0)
    assert not valid_top1("", 0.5)
    assert not valid_top1("281 tabby", 0.0)
    assert not valid_top1("281 tabby", 1.5)
    assert not valid_top1("281 tabby", float("nan"))
