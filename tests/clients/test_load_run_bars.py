"""The load tester draws progress bars on a terminal only: into a log or a pipe, none."""

from __future__ import annotations

import io
import sys
import threading

from clients.client_qps import _parse_args
from clients.load_run import LoadRun


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _drawn(stream: io.StringIO, monkeypatch, *, progress: bool) -> str:
    monkeypatch.setattr(sys, "stderr", stream)
    run = LoadRun(1, 10, 4, "infer_batch", progress, None, threading.Event())
    run.close_bars()
    return stream.getvalue()


def test_a_terminal_gets_the_bars(monkeypatch):
    assert "warm-up" in _drawn(_Terminal(), monkeypatch, progress=True)


def test_a_log_or_pipe_gets_no_bars(monkeypatch):
    assert _drawn(io.StringIO(), monkeypatch, progress=True) == ""


def test_no_progress_turns_them_off_on_a_terminal_too(monkeypatch):
    assert _drawn(_Terminal(), monkeypatch, progress=False) == ""
    assert _parse_args(["--no-progress"]).no_progress is True
    assert _parse_args([]).no_progress is False
