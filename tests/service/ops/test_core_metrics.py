"""``/metrics``'s per-core families: each GPU core's figures labelled with its GPU."""

from __future__ import annotations

from service.gen.inference.ttypes import ServerStats, WireNodeStats
from service.ops.prometheus_export import CoreFigures, render_cores


def _core_stats(requests_ok: int, batches: int) -> ServerStats:
    node = WireNodeStats(
        node="resnet50",
        backend="TorchTensor",
        requests_ok=requests_ok,
        requests_failed=1,
        requests_rejected=0,
        requests_timed_out=0,
        inferences=requests_ok + 1,
        executions=batches,
        batch_sizes={},
        queue_time_ms_total=0.0,
        compute_time_ms_total=2.5,
    )
    return ServerStats(
        handler="core-cuda:0",
        device="cuda:0",
        uptime_s=1.0,
        requests_ok=0,
        requests_failed=0,
        failures_by_code={},
        nodes=[node],
    )


def test_each_core_is_labelled_with_its_gpu_and_a_silent_one_is_down():
    text = render_cores(
        [
            CoreFigures("cuda:0", 0, _core_stats(requests_ok=30, batches=4)),
            CoreFigures("cuda:1", 2, None),  # restarting: its ops port does not answer
        ]
    )
    assert 'tp_core_up{gpu="cuda:0"} 1' in text
    assert 'tp_core_up{gpu="cuda:1"} 0' in text
    assert 'tp_core_restarts{gpu="cuda:1"} 2' in text
    assert 'tp_core_request_success{gpu="cuda:0",model="resnet50"} 30' in text
    assert 'tp_core_request_failure{gpu="cuda:0",model="resnet50"} 1' in text
    assert 'tp_core_execution_count{gpu="cuda:0",model="resnet50"} 4' in text
    assert 'tp_core_compute_duration_us{gpu="cuda:0",model="resnet50"} 2500.0' in text
    assert 'gpu="cuda:1",model=' not in text  # no node figures for the silent core
    assert text.count("# TYPE tp_core_up gauge") == 1


def test_no_cores_no_families():
    assert render_cores([]) == ""
