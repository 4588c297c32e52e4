"""The service's command line: flags that change how the process runs."""

from __future__ import annotations

import pytest

from service.command_line import parse_args


def test_the_switch_interval_is_python_s_unless_given():
    assert "switch_interval_ms" not in parse_args([])
    assert parse_args(["--switch-interval-ms", "0.5"]).switch_interval_ms == 0.5


@pytest.mark.parametrize("value", ["0", "-1", "nan", "fast"])
def test_a_switch_interval_that_is_not_a_positive_time_is_refused(value, capsys):
    with pytest.raises(SystemExit) as stopped:
        parse_args(["--switch-interval-ms", value])
    assert stopped.value.code == 2
    assert "--switch-interval-ms" in capsys.readouterr().err


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
