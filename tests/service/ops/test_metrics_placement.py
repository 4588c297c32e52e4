"""Which device each instance computes on reaches the wire stats and /metrics."""

import torchpipe_lite as tp
from service.gen.inference.ttypes import ServerStats
from service.ops.prometheus_export import render_triton
from service.ops.wire_stats import wire_node_stats


def library_stats(placements):
    return tp.NodeStats(
        node="resnet50",
        backend="SyncTensor[TorchTensor]",
        instances=len(placements),
        instance_placements=placements,
    )


def test_wire_stats_carry_each_instance_placement():
    wire = wire_node_stats(library_stats(["cuda:0", "cuda:1", None]))
    assert wire.instance_placements == ["cuda:0", "cuda:1", ""]


def test_metrics_name_the_device_of_every_instance():
    node = wire_node_stats(library_stats(["cuda:0", "cuda:1"]))
    stats = ServerStats(
        handler="pipelined",
        device="cuda",
        uptime_s=1.0,
        requests_ok=0,
        requests_failed=0,
        failures_by_code={},
        nodes=[node],
    )
    text = render_triton(stats)
    assert 'tp_instance_placement{model="resnet50",instance="0",device="cuda:0"} 1' in text
    assert 'tp_instance_placement{model="resnet50",instance="1",device="cuda:1"} 1' in text
