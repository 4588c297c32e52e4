"""LogLimiter: one line per kind per interval, and the next line says how many were held back."""

from __future__ import annotations

import logging

from service.ops.log_limit import LogLimiter


def test_one_line_per_kind_per_interval_and_a_count_of_the_rest(caplog):
    now = [100.0]
    limiter = LogLimiter(logging.getLogger("test.limit"), every_s=1.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="test.limit"):
        for _ in range(5):
            limiter.log("bad", logging.INFO, "bad request %s", "x")
        limiter.log("other", logging.INFO, "another kind")  # its own budget
        now[0] += 1.0
        limiter.log("bad", logging.INFO, "bad request %s", "y")
    assert [r.getMessage() for r in caplog.records] == [
        "bad request x",
        "another kind",
        "bad request y (and 4 more like it in the last 1 s, not logged)",
    ]


def test_a_level_that_is_off_costs_nothing_and_counts_nothing(caplog):
    limiter = LogLimiter(logging.getLogger("test.limit.off"))
    with caplog.at_level(logging.WARNING, logger="test.limit.off"):
        limiter.log("k", logging.INFO, "hidden")
        limiter.log("k", logging.WARNING, "shown")
    assert [r.getMessage() for r in caplog.records] == ["shown"]
