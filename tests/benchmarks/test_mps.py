"""benchmarks.mps against a stand-in control program: start, environment, quit, errors."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from benchmarks.mps import CONTROL, MpsError, mps_daemon


def fake_control(folder: Path, exit_code: int = 0) -> Path:
    """A control program that logs its arguments, stdin and pipe folder to folder/calls."""
    log = folder / "calls"
    script = folder / CONTROL
    script.write_text(
        "#!/bin/sh\n"
        f'echo "args=$* pipe=$CUDA_MPS_PIPE_DIRECTORY stdin=$(cat)" >> {log}\n'
        f'[ {exit_code} -eq 0 ] || {{ echo "cannot start: no device" >&2; exit {exit_code}; }}\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return log


def test_starts_a_private_daemon_and_quits_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = fake_control(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_MPS_PIPE_DIRECTORY", raising=False)
    with mps_daemon() as pipe_dir:
        assert os.environ["CUDA_MPS_PIPE_DIRECTORY"] == pipe_dir
        assert Path(pipe_dir).is_dir()
    assert "CUDA_MPS_PIPE_DIRECTORY" not in os.environ
    start, stop = log.read_text().splitlines()
    assert start.startswith(f"args=-d pipe={pipe_dir}")
    assert stop == f"args= pipe={pipe_dir} stdin=quit"


def test_a_failed_start_is_an_error_with_its_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_control(tmp_path, exit_code=3)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", "/elsewhere")
    with pytest.raises(MpsError, match="exited 3: cannot start: no device"), mps_daemon():
        pass
    assert os.environ["CUDA_MPS_PIPE_DIRECTORY"] == "/elsewhere"


def test_a_missing_control_program_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(MpsError, match=CONTROL), mps_daemon():
        pass
