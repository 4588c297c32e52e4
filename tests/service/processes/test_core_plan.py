"""The supervisor's plan of GPU cores: one per GPU (or per ``--device-ids`` entry), else one."""

from __future__ import annotations

import pytest

from service.command_line import parse_args
from service.processes.core_plan import CorePlanError, CoreSpec, core_plan


def _plan(argv: list[str], gpu_count: int) -> list[tuple[int, int | None]]:
    return [(spec.index, spec.gpu) for spec in core_plan(parse_args(argv), gpu_count)]


def test_one_core_per_visible_gpu_when_there_are_several():
    assert _plan(["--workers", "4"], gpu_count=2) == [(0, 0), (1, 1)]
    assert _plan(["--workers", "4"], gpu_count=4) == [(0, 0), (1, 1), (2, 2), (3, 3)]


def test_one_unpinned_core_on_the_cpu_on_one_gpu_or_for_a_device_named():
    assert _plan(["--workers", "2"], gpu_count=0) == [(0, None)]
    assert _plan(["--workers", "2"], gpu_count=1) == [(0, None)]
    assert _plan(["--workers", "2", "--device", "cuda:1"], gpu_count=4) == [(0, None)]
    assert _plan(["--workers", "2", "--device", "cpu"], gpu_count=4) == [(0, None)]


def test_device_ids_choose_the_gpus_in_their_order():
    assert _plan(["--workers", "2", "--device-ids", "3,1"], gpu_count=4) == [(0, 3), (1, 1)]
    assert _plan(["--workers", "2", "--device-ids", "0"], gpu_count=1) == [(0, 0)]


def test_device_ids_past_the_visible_gpus_are_refused_naming_them():
    refusal = r"--device-ids 0,2: 2 GPU\(s\) visible, no CUDA index 2"
    with pytest.raises(CorePlanError, match=refusal):
        _plan(["--workers", "2", "--device-ids", "0,2"], gpu_count=2)
    with pytest.raises(CorePlanError, match="0 GPU"):
        _plan(["--device-ids", "0"], gpu_count=0)


def test_a_pinned_core_sees_only_its_gpu_as_cuda_0_and_is_named_after_it():
    spec = CoreSpec(1, 1)
    assert spec.name == "cuda:1"
    assert spec.arguments() == ["--device", "cuda:0", "--core-name", "cuda:1"]
    assert spec.environment({"PATH": "/bin"}) == {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "1"}
    # The supervisor's indices count in the list it was given.
    inherited = {"CUDA_VISIBLE_DEVICES": "2, 3"}
    assert spec.environment(inherited)["CUDA_VISIBLE_DEVICES"] == "3"
    assert inherited == {"CUDA_VISIBLE_DEVICES": "2, 3"}  # not changed in place


def test_an_unpinned_core_keeps_the_command_line_and_environment():
    spec = CoreSpec(0, None)
    assert spec.name == "default"
    assert spec.arguments() == []
    assert spec.environment({"CUDA_VISIBLE_DEVICES": "1"}) == {"CUDA_VISIBLE_DEVICES": "1"}
