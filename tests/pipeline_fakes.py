"""Fake backends for scheduler tests: tagging, a gate the test opens, a barrier of instances."""

from __future__ import annotations

import threading

from torchpipe_lite import Backend, register_backend

WAIT_S = 5.0  # upper bound for anything that should happen "soon"; never reached when green


@register_backend("TestAddNode")
class AddNode(Backend):
    """result = (data, node_name) chain: proves which request went where."""

    def init(self, params):
        self.tag = params["tag"]

    def forward(self, batch):
        for item in batch:
            item["result"] = (
                (*item["data"], self.tag)
                if isinstance(item["data"], tuple)
                else (
                    item["data"],
                    self.tag,
                )
            )


@register_backend("TestGate")
class Gate(Backend):
    """Blocks every batch until the test opens the shared gate; records batch sizes."""

    gate = threading.Event()
    entered = threading.Semaphore(0)

    def forward(self, batch):
        Gate.entered.release()
        assert Gate.gate.wait(WAIT_S), "test gate never opened"
        for item in batch:
            item["result"] = item["data"]


@register_backend("TestBarrier")
class BarrierBackend(Backend):
    """Passes only if `parties` instances are inside forward at the same time."""

    barrier: threading.Barrier | None = None

    def forward(self, batch):
        BarrierBackend.barrier.wait(timeout=WAIT_S)
        for item in batch:
            item["result"] = threading.current_thread().name


def run_threads(count, target):
    """Runs ``target(index)`` on ``count`` threads at once; fails with the first errors."""
    errors = []

    def guarded(index):
        try:
            target(index)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors[:3]
