"""The service's command line: flags that change how the process runs."""

from __future__ import annotations

import pytest

from service.command_line import parse_args


def test_gpu_check_compares_the_sample_photographs_by_default():
    from service.tools.gpu_check import DEFAULT_IMAGES

    assert len(list(DEFAULT_IMAGES.glob("*.jpg"))) >= 5


def test_the_buffer_budget_is_sized_from_the_machine_unless_given_and_holds_one_message(capsys):
    assert parse_args([]).max_buffered_mb is None
    assert parse_args(["--max-buffered-mb", "512"]).max_buffered_mb == 512.0
    with pytest.raises(SystemExit) as stopped:
        parse_args(["--max-buffered-mb", "32"])  # less than one 64 MiB message
    assert stopped.value.code == 2
    assert "--max-buffered-mb" in capsys.readouterr().err
