"""Two servers behind HAProxy (deploy/haproxy.cfg): the load goes on when one dies or drains.

The servers run as ``python -m service`` subprocesses with a small CPU model, HAProxy runs the
committed configuration rendered for their loopback ports, and the load tester (client_qps's
``run_load``) goes through HAProxy. Mid-run one server is killed (SIGKILL) or stopped (SIGTERM);
only calls HAProxy routed to it may fail (one per connection; under SIGKILL a reconnection that
races the process's death can reach it and fail once more), and the other server carries the
rest. Between the two cases the stopped server is started again on the same ports and HAProxy
must take it back in.

Under SIGTERM a call is also held in flight on the victim through HAProxy (all of its request
but the last byte sent before the stop, the last byte only once HAProxy has seen the drain): the
draining server answers /health/ready with 404, which ``http-check disable-on-404`` turns into
NOLB (no new connections, sessions kept) rather than DOWN, so ``on-marked-down
shutdown-sessions`` does not cut the call and the server answers it before it exits.
"""

from __future__ import annotations

import logging
import re
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.client_qps import LoadResult, run_load
from clients.images import DEFAULT_IMG_DIR, load_images
from clients.load_worker import CONNECTION
from deploy.render_haproxy import Layout, Upstream, parse_layout
from service.gen.inference.ttypes import InferenceResult
from service.server_process import free_port, service_command
from tests.support.haproxy_cluster import (
    CALLS,
    CALLS_BEFORE_STOP,
    CLIENTS,
    SERVER_THREADS,
    WAIT_S,
    Cluster,
    Haproxy,
    requests_ok,
    wait_until,
)
from tests.support.pipeline_configs import cheap_config

logger = logging.getLogger(__name__)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("haproxy") is None,
        reason="haproxy is not installed (apt-get install haproxy; `make test` does it as root)",
    ),
]


@pytest.fixture(scope="module")
def cluster(resnet18_small_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    workdir = tmp_path_factory.mktemp("haproxy")
    config = cheap_config(workdir, resnet18_small_onnx)  # ResNet18 at 64x64: quick on a CPU
    upstreams = tuple(Upstream("127.0.0.1", free_port(), free_port()) for _ in range(2))

    def command(upstream: Upstream) -> list[str]:
        command = service_command("pipelined", upstream.port, threads=SERVER_THREADS, config=config)
        # The held call (SIGTERM case) stalls inside one message until HAProxy has seen the
        # drain: allow it longer than the default 30 s on a slow machine.
        command += ["--message-timeout-s", str(WAIT_S)]
        return [*command, "--metrics-port", str(upstream.metrics_port)]

    frontend_port = free_port()
    layout = Layout(
        bind=f"127.0.0.1:{frontend_port}",
        servers=upstreams,
        stats_bind=f"127.0.0.1:{free_port()}",
        stats_socket=str(workdir / "admin.sock"),
    )
    haproxy = Haproxy(layout, workdir)
    built = Cluster(command, upstreams, haproxy, frontend_port, workdir)
    try:
        for index in range(len(upstreams)):
            built.start(index)
        built.wait_all_up()
        yield built
    finally:
        haproxy.stop()
        for server in built.servers:
            server.stop()


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    return load_images(DEFAULT_IMG_DIR)


def test_haproxy_checks_each_server_readiness_over_http(cluster):
    """The running configuration is the committed one for these ports; its checks are HTTP."""
    assert parse_layout(cluster.haproxy.config_path.read_text()).servers == cluster.upstreams
    rows = cluster.haproxy.servers()
    assert sorted(rows) == ["tp1", "tp2"]
    for row in rows.values():
        assert row["check_status"] == "L7OK", row  # layer 7: /health/ready answered 200


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_load_survives_losing_a_server(cluster, images, signum, request):
    victim, survivor = cluster.upstreams
    if cluster.server(0).process.poll() is not None:  # stopped by the previous case
        cluster.start(0)
    cluster.wait_all_up()  # after a restart: HAProxy took the server back in
    held = None
    if signum == signal.SIGTERM:  # a call in flight on the victim through the whole drain
        held = cluster.hold_call_on("tp1", images[0])
        request.addfinalizer(held.connection.close)

    timed = threading.Event()
    outcome: dict[str, object] = {}

    def load() -> None:
        try:
            outcome["result"] = run_load(
                host="127.0.0.1",
                port=cluster.frontend_port,
                images=images,
                request_client=CLIENTS,
                total_number=CALLS,
                warmup=CLIENTS,
                timeout_s=20.0,
                progress=False,
                on_timed_start=timed.set,
            )
        except Exception as exc:
            outcome["error"] = exc

    loader = threading.Thread(target=load, name="load", daemon=True)
    loader.start()
    assert timed.wait(WAIT_S), f"the load never started: {outcome}"
    victim_start, survivor_start = requests_ok(victim.port), requests_ok(survivor.port)
    wait_until(
        lambda: requests_ok(victim.port) >= victim_start + CALLS_BEFORE_STOP,
        f"the victim to answer {CALLS_BEFORE_STOP} timed calls",
    )
    at_stop = cluster.haproxy.servers()
    survivor_at_stop = requests_ok(survivor.port)
    done_before_stop = requests_ok(victim.port) - victim_start + survivor_at_stop - survivor_start
    log_at_stop = len(cluster.haproxy.log())
    cluster.server(0).process.send_signal(signum)
    if held is not None:
        # The drain waits for the held call, so the victim stays up, its readiness answering
        # 404, until the call is done. HAProxy must take it out of the pool without marking it
        # DOWN (which would shut its sessions, the held call's included) and leave the call be.
        seen: dict[str, str] = {}

        def out_of_pool() -> bool:
            seen.update(cluster.haproxy.servers()["tp1"])
            return not seen["status"].startswith("UP")  # "UP 1/2": one check failed

        wait_until(out_of_pool, "HAProxy to take the draining tp1 out of the pool")
        assert seen["status"].startswith("NOLB"), (seen, cluster.logs())  # not DOWN
        assert int(seen["scur"]) >= 1, seen  # the held call's session is still open
        answer = held.finish()  # the draining server answers the held call through HAProxy
        assert isinstance(answer, InferenceResult) and answer.label, answer
        held.connection.close()
    code = cluster.server(0).process.wait(timeout=WAIT_S)
    loader.join(WAIT_S * 2)
    assert not loader.is_alive(), "the load test did not finish"
    assert "error" not in outcome, f"{outcome['error']!r}\n{cluster.logs()}"
    result = outcome["result"]
    assert isinstance(result, LoadResult)
    at_end = cluster.haproxy.servers()
    # The load's connections on the victim (the held call's session is not one of them).
    victim_connections = int(at_stop["tp1"]["scur"]) - (held is not None)
    logger.info(
        "%s: victim had %d load connections at the stop, %d sessions later (%d connect errors, "
        "%d redispatched); %d of %d calls failed %s; %d calls done before the stop; "
        "tp2 srv_abrt %s -> %s",
        signal.Signals(signum).name,
        victim_connections,
        *(int(at_end["tp1"][key]) - int(at_stop["tp1"][key]) for key in ("stot", "econ", "wredis")),
        result.errors,
        result.requests,
        result.errors_by_code,
        done_before_stop,
        at_stop["tp2"]["srv_abrt"],
        at_end["tp2"]["srv_abrt"],
    )

    # Only calls HAProxy had routed to the victim failed, at most one per connection (a
    # connection is one client's, one call at a time), and only because it broke. Under
    # SIGTERM those are the connections open at the stop: the server answers the calls it has
    # and closes each connection, so a client's next call there fails once; new connections
    # are refused at once and HAProxy redispatches them. Under SIGKILL the calls in flight fail,
    # and a reconnection may still reach the dying process (its listening socket completes
    # handshakes for a moment) and fail once more.
    later_sessions = int(at_end["tp1"]["stot"]) - int(at_stop["tp1"]["stot"])
    assert 0 < victim_connections <= CLIENTS
    assert result.requests == CALLS
    assert set(result.errors_by_code) <= {CONNECTION}, result.errors_by_code
    allowed = victim_connections + (later_sessions if signum == signal.SIGKILL else 0)
    assert result.errors <= allowed, (result, cluster.logs())
    assert result.ok_requests == CALLS - result.errors
    # No connection to the survivor broke.
    assert at_end["tp2"]["srv_abrt"] == at_stop["tp2"]["srv_abrt"], cluster.logs()
    # The survivor carried the rest of the run (give or take the calls in flight at the stop).
    after_stop = requests_ok(survivor.port) - survivor_at_stop
    assert after_stop >= CALLS - done_before_stop - 2 * CLIENTS - result.errors, (
        after_stop,
        done_before_stop,
        result,
    )
    wait_until(lambda: cluster.haproxy.status("tp1").startswith("DOWN"), "tp1 to be marked DOWN")
    assert cluster.haproxy.status("tp2") == "UP"
    if signum == signal.SIGTERM:
        # HAProxy cut none of the victim's sessions: it marked tp1 DOWN only once the drained
        # server had exited and closed them all, and of the sessions that ended after the stop
        # (the load's and the held call's, at least) none was killed for the server being down
        # (termination state "D.", tcplog's %ts).
        after = cluster.haproxy.log()[log_at_stop:]
        down = [line for line in after.splitlines() if "thrift_servers/tp1 is DOWN" in line]
        assert down and all(" 0 sessions active," in line for line in down), cluster.logs()
        ended = re.findall(r" thrift_servers/tp1 \S+ \S+ (\S\S) ", after)
        assert len(ended) >= victim_connections + 1, (ended, cluster.logs())
        assert not [state for state in ended if state.startswith("D")], (ended, cluster.logs())
    # SIGTERM drains: the server finished what it had received and exited 0.
    assert code == (0 if signum == signal.SIGTERM else -signal.SIGKILL), cluster.logs()
