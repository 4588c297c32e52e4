"""Process[X]: each instance's backend runs in a child process, with the in-process contract."""

from __future__ import annotations

import json
import os
import pickle
import threading

import pytest
import torch

import tests.process_fakes  # noqa: F401  (registers the fakes, here and in each child)
import torchpipe_lite as tp
from torchpipe_lite import Backend, register_backend
from torchpipe_lite.backends.process import _Tensor

pytestmark = pytest.mark.slow  # each child starts an interpreter and imports torch

WAIT_S = 60.0


def test_each_instance_runs_in_a_child_process_and_results_come_back():
    with tp.pipe({"where": {"backend": "Process[TestWhere]", "instance_num": 2}}) as model:
        items = [{"data": index, "drop_me": True, "keep_me": "yes"} for index in range(40)]
        threads = [threading.Thread(target=model, args=(item,)) for item in items]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT_S)
        assert not any(thread.is_alive() for thread in threads)
    pids = {item["result"][1] for item in items}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    assert [item["result"][0] for item in items] == list(range(40))
    assert all("drop_me" not in item and item["keep_me"] == "yes" for item in items)
    # ``data`` stays what the request sent, whatever the child did with its copy
    assert [item["data"] for item in items] == list(range(40))


def test_failures_come_back_typed_and_fail_only_their_own_request():
    config = {"refuse": {"backend": "Process[TestRefuse]", "max": 4, "batching_timeout": 50}}
    with tp.pipe(config) as model:
        bad, boom, good = (model.submit({"data": data}) for data in ("bad", "boom", "good"))
        assert good.result(timeout=WAIT_S)["result"] == "good"
        with pytest.raises(tp.InvalidInputError, match="not a good one"):
            bad.result(timeout=WAIT_S)
        with pytest.raises(tp.BackendError, match="RuntimeError: exploded") as raised:
            boom.result(timeout=WAIT_S)
    assert type(raised.value) is tp.BackendError


def test_a_child_that_dies_fails_its_request_and_the_next_batch_gets_a_new_child():
    with tp.pipe({"refuse": {"backend": "Process[TestRefuse]"}}) as model:
        with pytest.raises(tp.BackendError, match="died"):
            model({"data": "die"})
        after = {"data": "fine"}
        model(after)
    assert after["result"] == "fine"


def test_a_backend_that_cannot_start_in_its_child_names_the_node():
    with pytest.raises(tp.errors.BackendInitError, match="no model here") as raised:
        tp.pipe({"model": {"backend": "Process[TestInitFails]"}})
    assert "model" in str(raised.value)


def test_a_backend_a_child_cannot_import_is_refused_at_start():
    @register_backend("TestLocalOnly")
    class LocalOnly(Backend):
        def forward(self, batch):
            pass

    with pytest.raises(tp.errors.BackendInitError, match="importable module"):
        tp.pipe({"local": {"backend": "Process[TestLocalOnly]"}})


def test_the_image_stages_give_the_same_tensor_in_a_child_process(photos):
    stages = "Sequential[DecodeMat,ResizeMat,CvtColorMat,Mat2Tensor]"
    params = {"resize_h": 224, "resize_w": 224, "color": "rgb"}
    jpeg = photos["chelsea"]
    results = {}
    for backend in (stages, f"Process[{stages}]"):
        with tp.pipe({"decode": {"backend": backend, **params}}) as model:
            item = {"data": jpeg}
            model(item, strict=True)
            results[backend] = item["result"]
    in_process, in_child = results.values()
    assert in_child.dtype == torch.uint8 and in_child.shape == in_process.shape
    assert torch.equal(in_child, in_process)
    assert _layout(in_child) == _layout(in_process)


@pytest.mark.parametrize(
    "tensor",
    [
        torch.arange(24, dtype=torch.uint8).reshape(1, 2, 3, 4),
        torch.arange(24.0).reshape(1, 2, 3, 4).contiguous(memory_format=torch.channels_last),
        torch.arange(6).reshape(2, 3).t(),
        torch.tensor(3.5),
    ],
    ids=["contiguous", "channels-last", "transposed", "scalar"],
)
def test_a_tensor_crosses_the_pipe_with_its_values_and_layout(tensor):
    arrived = pickle.loads(pickle.dumps(_Tensor.of(tensor))).tensor()
    assert torch.equal(arrived, tensor) and arrived.dtype == tensor.dtype
    assert _layout(arrived) == _layout(tensor)


def _layout(tensor: torch.Tensor) -> list[int]:
    """The strides that matter: those of dimensions longer than one."""
    return [stride for stride, size in zip(tensor.stride(), tensor.shape, strict=True) if size > 1]


def test_process_threads_must_be_positive():
    with pytest.raises(tp.errors.BackendInitError, match="process_threads"):
        tp.pipe({"where": {"backend": "Process[TestWhere]", "process_threads": 0}})


def test_the_process_stages_benchmark_measures_both_layouts(tmp_path):
    from benchmarks.process_stages import main

    out = tmp_path / "points.json"
    argv = ["--instances", "1", "--callers", "2", "--seconds", "0.3", "--repeats", "1"]
    assert main([*argv, "--json", str(out)]) == 0
    points = json.loads(out.read_text())["points"]
    assert [point["layout"] for point in points] == ["threads", "processes"]
    assert all(point["images"] > 0 and point["parent_cpu_us_per_image"] > 0 for point in points)


def test_a_child_of_the_cpu_image_stages_never_imports_torch(photos):
    """What keeps each child of resnet50_process_decode.toml a few tens of MiB."""
    stages = "Process[Sequential[DecodeMat,ResizeMat,CvtColorMat,TestTorchLoaded]]"
    params = {"resize_h": 224, "resize_w": 224, "color": "rgb"}
    with tp.pipe({"decode": {"backend": stages, **params}}) as model:
        item = {"data": photos["chelsea"]}
        model(item, strict=True)
    assert item["result"] is False
