"""``RemotePool``: requests spread over a pipeline's servers; a server's loss fails its own."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

import torchpipe_lite as tp
from tests.pipeline_fakes import WAIT_S
from torchpipe_lite.errors import PipelineUnavailableError
from torchpipe_lite.remote.pool import least_loaded

# -- the choice, without threads -----------------------------------------------------------


def test_least_loaded_takes_the_member_with_the_fewest_outstanding():
    assert least_loaded([3, 1, 2]) == 1
    assert least_loaded([0, 5]) == 0


def test_least_loaded_skips_members_that_are_down():
    assert least_loaded([None, 7, None, 9]) == 1
    assert least_loaded([None, None]) is None
    assert least_loaded([]) is None


def test_least_loaded_breaks_ties_from_the_start_index_round_the_end():
    assert least_loaded([2, 2, 2], start=0) == 0
    assert least_loaded([2, 2, 2], start=1) == 1
    assert least_loaded([2, 2, 2], start=2) == 2
    assert least_loaded([2, 9, 2], start=1) == 2
    assert least_loaded([2, 9, 5], start=1) == 0  # wraps round to the least
    assert least_loaded([None, 4, 4], start=0) == 1


# -- two servers in this process -----------------------------------------------------------


class Holds:
    """One gate per server, opened by the test; each backend instance says when it holds."""

    gates: ClassVar[dict[str, threading.Event]] = {}
    holding: ClassVar[dict[str, threading.Semaphore]] = {}

    @classmethod
    def make(cls, name: str) -> None:
        cls.gates[name] = threading.Event()
        cls.holding[name] = threading.Semaphore(0)


@tp.register_backend("TestPoolHold")
class Hold(tp.Backend):
    """result = data * 2, once the gate named by ``gate`` is open."""

    def init(self, params):
        self.gate = params["gate"]

    def forward(self, batch):
        Holds.holding[self.gate].release()
        assert Holds.gates[self.gate].wait(WAIT_S), "test gate never opened"
        for item in batch:
            item["result"] = item["data"] * 2

    def max(self):
        return 4


def _config(gate: str) -> dict:
    Holds.make(gate)
    return {"batching_timeout": 0, "hold": {"backend": "TestPoolHold", "gate": gate}}


class Server:
    """A ``tp.serve`` of a pipeline the test owns: closing the server drops its clients (their
    requests fail) while the pipeline lives on until the test opens its gate."""

    def __init__(self, address: Path, gate: str):
        self.gate = gate
        self.pipeline = tp.pipe(_config(gate))
        self.server = tp.serve(self.pipeline, address)

    def received(self) -> int:
        return self.server.figures().requests_received

    def stop(self) -> None:
        self.server.close()

    def close(self) -> None:
        Holds.gates[self.gate].set()
        self.server.close()
        self.pipeline.close()


@pytest.fixture
def addresses(tmp_path) -> list[Path]:
    return [tmp_path / "a.sock", tmp_path / "b.sock"]


@pytest.fixture
def servers(addresses) -> Iterator[list[Server]]:
    started = [Server(address, f"{address.name}-{time.monotonic_ns()}") for address in addresses]
    try:
        yield started
    finally:
        for server in started:
            server.close()


class Clock:
    """Monotonic seconds the test steps by hand, for the pool's retry times."""

    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def _wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        threading.Event().wait(0.01)


def test_connect_to_one_address_is_a_pipeline_and_to_a_list_a_pool(servers, addresses):
    with tp.connect(addresses[0]) as one:
        assert isinstance(one, tp.RemotePipeline)
    with tp.connect(addresses) as pool:
        assert isinstance(pool, tp.RemotePool)
        assert pool.node_names == ["hold"] and pool.batch_range("hold") == (1, 4)


def test_requests_spread_over_both_servers_least_outstanding_first(servers, addresses):
    for server in servers:
        Holds.gates[server.gate].set()
    with tp.connect(addresses) as pool:
        for value in range(10):  # one at a time: each finds both idle, ties take turns
            request = {"data": value}
            pool(request, timeout_s=WAIT_S)
            assert request["result"] == 2 * value
        batch = [{"data": value} for value in range(8)]
        pool(batch, timeout_s=WAIT_S)
        assert [item["result"] for item in batch] == [2 * v for v in range(8)]
        stats = pool.stats(WAIT_S)
    assert [server.received() for server in servers] == [5 + 8, 5]  # the list went whole
    assert set(stats) == {str(address) for address in addresses}
    assert [stats[str(a)]["hold"].requests_ok for a in addresses] == [13, 5]


def test_a_busy_server_gets_no_more_until_the_other_has_as_many(servers, addresses):
    with tp.connect(addresses) as pool:
        held = [pool.submit({"data": value}) for value in range(3)]
        assert pool.outstanding() == {str(addresses[0]): 2, str(addresses[1]): 1}
        for server in servers:
            Holds.gates[server.gate].set()
        assert [future.result(WAIT_S)["result"] for future in held] == [0, 2, 4]
        assert pool.outstanding() == {str(address): 0 for address in addresses}


def test_a_server_that_goes_away_fails_only_its_own_requests(servers, addresses):
    clock = Clock()
    with tp.RemotePool(addresses, retry_s=0.5, clock=clock) as pool:
        first, second = servers
        held = [pool.submit({"data": value}) for value in range(4)]  # two at each
        for server in servers:
            assert Holds.holding[server.gate].acquire(timeout=WAIT_S)
        _wait_until(lambda: [s.received() for s in servers] == [2, 2], "two requests at each")
        first.stop()  # while its two requests are in flight there
        lost = [held[0], held[2]]
        for future in lost:
            with pytest.raises(PipelineUnavailableError, match="went away"):
                future.result(WAIT_S)
        assert pool.outstanding()[str(addresses[0])] is None
        assert not held[1].done() and not held[3].done()
        Holds.gates[second.gate].set()
        assert [held[i].result(WAIT_S)["result"] for i in (1, 3)] == [2, 6]
        later = [{"data": value} for value in range(5)]
        for request in later:
            pool(request, timeout_s=WAIT_S)  # all to the one left
        assert [request["result"] for request in later] == [0, 2, 4, 6, 8]
        assert second.received() == 2 + 5


def test_a_server_back_on_the_same_address_is_used_again_after_retry_s(servers, addresses):
    clock = Clock()
    with tp.RemotePool(addresses, retry_s=0.5, clock=clock) as pool:
        first, second = servers
        Holds.gates[second.gate].set()
        first.stop()
        _wait_until(lambda: pool.outstanding()[str(addresses[0])] is None, "the loss noticed")
        pool({"data": 1}, timeout_s=WAIT_S)  # to the other; the lost one is retried from now
        assert second.received() == 1
        replacement = Server(addresses[0], f"again-{time.monotonic_ns()}")
        try:
            Holds.gates[replacement.gate].set()
            clock.now_s += 0.4  # not yet due: the new server stays unused
            for value in range(3):
                pool({"data": value}, timeout_s=WAIT_S)
            assert replacement.received() == 0
            clock.now_s += 0.2  # due: the next call reconnects it
            for value in range(4):
                pool({"data": value}, timeout_s=WAIT_S)
            assert replacement.received() == 2  # ties take turns again
            assert pool.outstanding() == {str(address): 0 for address in addresses}
        finally:
            replacement.close()


def test_with_every_server_down_a_call_fails_at_once_naming_them(servers, addresses):
    clock = Clock()
    with tp.RemotePool(addresses, retry_s=0.5, clock=clock) as pool:
        for server in servers:
            server.stop()
        _wait_until(lambda: set(pool.outstanding().values()) == {None}, "both losses noticed")
        with pytest.raises(PipelineUnavailableError, match="every server") as raised:
            pool({"data": 1}, timeout_s=WAIT_S)
        assert str(addresses[0]) in str(raised.value) and str(addresses[1]) in str(raised.value)
        clock.now_s += 1.0  # retried, still nothing there
        with pytest.raises(PipelineUnavailableError, match="every server"):
            pool({"data": 1}, timeout_s=WAIT_S)


def test_a_pool_needs_one_server_to_start(addresses):
    with pytest.raises(PipelineUnavailableError, match="cannot attach to any"):
        tp.RemotePool(addresses)


def test_a_remote_node_with_several_addresses_spreads_its_batches(servers, addresses):
    for server in servers:
        Holds.gates[server.gate].set()
    front = tp.pipe(
        {
            "pre": {"backend": "Identity", "next": "to_core"},
            "to_core": {
                "backend": "Remote",
                "address": ",".join(str(a) for a in addresses),
                "instance_num": 2,
            },
        }
    )
    with front:
        requests = [{"data": value} for value in range(30)]
        front(requests)
        assert [request["result"] for request in requests] == [2 * v for v in range(30)]
    assert all(server.server.figures().clients_total == 1 for server in servers)  # one pool
    assert sum(server.received() for server in servers) == 30
    assert all(server.received() > 0 for server in servers)
