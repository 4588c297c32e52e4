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


def test_the_settings_are_one_frozen_record_built_once():
    import dataclasses

    from service.command_line import ServerSettings

    settings = parse_args(["--port", "9000", "--workers", "3"])
    assert isinstance(settings, ServerSettings)
    assert (settings.port, settings.workers, settings.model) == (9000, 3, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.port = 1  # type: ignore[misc]


def test_settings_built_in_code_are_checked_as_the_command_line_is():
    import dataclasses

    from service.command_line import SettingsError

    defaults = parse_args([])
    with pytest.raises(SettingsError, match="--max-images cannot exceed --max-in-flight"):
        dataclasses.replace(defaults, max_images=600, max_in_flight=512)
    with pytest.raises(SettingsError, match="--workers must be at least 1"):
        dataclasses.replace(defaults, workers=0)


def test_handler_and_port_say_what_they_are(capsys):
    from service.command_line import _parser

    text = " ".join(_parser().format_help().split())
    assert "--handler {baseline,pipelined} baseline: the reference's design" in text
    assert "--port PORT TCP port the Thrift service listens on" in text


@pytest.mark.parametrize(
    ("argv", "on_gpu", "cpu_count", "layout", "processes"),
    [
        ([], True, 16, "FRONTS_AND_CORE", 8),  # auto on a GPU: one front per two cores, <= 8
        ([], True, 2, "FRONTS_AND_CORE", 2),  # ... at least 2
        ([], False, 16, "ONE_PROCESS", 1),  # auto without a GPU: one process
        (["--handler", "baseline"], True, 16, "ONE_PROCESS", 1),  # auto for the baseline: 1
        (["--handler", "baseline", "--workers", "4"], False, 16, "WORKERS", 4),
        (["--workers", "3"], False, 2, "FRONTS_AND_CORE", 3),
        (["--workers", "1"], True, 16, "ONE_PROCESS", 1),
        (["--serve-core", "/run/core.sock"], True, 16, "CORE", 1),
    ],
)
def test_one_function_maps_the_settings_to_a_serving_layout(
    argv, on_gpu, cpu_count, layout, processes
):
    from service.layout import Layout, serving_layout

    chosen = serving_layout(parse_args(argv), on_gpu=on_gpu, cpu_count=cpu_count)
    assert (chosen.kind, chosen.processes) == (Layout[layout], processes)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--device-ids", "0,x"], "expected CUDA indices"),
        (["--device-ids", "0,0"], "distinct"),
        (["--device-ids", "-1"], "non-negative"),
        (["--device-ids", "0", "--handler", "baseline"], "needs the pipelined handler"),
        (["--device-ids", "0,1", "--workers", "1"], "needs fronts and cores"),
        (["--device-ids", "0,1", "--device", "cuda:1"], "exclude each other"),
    ],
)
def test_device_ids_are_checked(argv, message, capsys):
    with pytest.raises(SystemExit) as raised:
        parse_args(argv)
    assert raised.value.code == 2
    assert message in capsys.readouterr().err


def test_device_ids_make_auto_fronts_and_cores_even_where_no_gpu_is_seen():
    from service.layout import Layout, serving_layout

    settings = parse_args(["--device-ids", "0,1"])
    assert settings.device_ids == (0, 1)
    chosen = serving_layout(settings, on_gpu=False, cpu_count=4)
    assert (chosen.kind, chosen.processes) == (Layout.FRONTS_AND_CORE, 2)
