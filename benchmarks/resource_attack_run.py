"""The resource attacks of ``benchmarks.resource_attacks`` at full size, one after the other,
against one ``python -m service`` at every default, and their figures as summary lines."""

from __future__ import annotations

import dataclasses
import logging
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from benchmarks.attacks import settle
from benchmarks.resource_attacks import (
    PROBE_TIMEOUT_S,
    beyond_fd_limit,
    ops_flood,
    stalled_big_senders,
)
from service.server_process import ServerProcess, free_port

logger = logging.getLogger(__name__)


#: The sizes ``python -m benchmarks.hostile_clients`` runs them at.
STALLED_CONNECTIONS = 100
STALLED_BYTES = 40 << 20
FD_LIMIT = 1024
BEYOND_FD_CONNECTIONS = 1100
OPS_FLOOD_CONNECTIONS = 1800
OPS_FLOOD_S = 15.0
OPS_FLOOD_HOLD_S = 4.0


def under_fd_limit(command: list[str], limit: int) -> list[str]:
    """``command`` run as after ``ulimit -n limit`` (soft and hard), in the same process."""
    return ["bash", "-c", f'ulimit -n {limit} && exec "$@"', "bash", *command]


def run_resource_attacks(
    command: list[str], host: str, port: int, photo: bytes, log_path: Path
) -> dict[str, Any]:
    """Start ``command`` (a ``python -m service`` on ``port``, at every default) under
    ``ulimit -n FD_LIMIT`` with an ops port, run the three attacks on it one after the other,
    and return their figures by name."""
    ops_port = free_port()
    command = under_fd_limit([*command, "--metrics-port", str(ops_port)], FD_LIMIT)
    figures: dict[str, Any] = {"server_command": shlex.join(command)}
    with ServerProcess(command, host=host, port=port, log_path=log_path) as server:
        server.start()
        process = psutil.Process(server.pid)

        def record(name: str, run: Callable[[], object]) -> None:
            settle(host, port)
            cpu_before_s = sum(process.cpu_times()[:2])
            log_before_bytes = log_path.stat().st_size
            started_s = time.monotonic()
            result = run()
            figures[name] = {
                **dataclasses.asdict(result),
                "wall_s": time.monotonic() - started_s,
                "server_cpu_s": sum(process.cpu_times()[:2]) - cpu_before_s,
                "log_bytes": log_path.stat().st_size - log_before_bytes,
            }
            logger.info("%s: %s", name, figures[name])

        record(
            "stalled big senders",
            lambda: stalled_big_senders(
                host, port, photo, server.pid, STALLED_CONNECTIONS, STALLED_BYTES
            ),
        )
        record(
            "beyond the file limit",
            lambda: beyond_fd_limit(host, port, ops_port, server.pid, BEYOND_FD_CONNECTIONS),
        )
        record(
            "ops port flood",
            lambda: ops_flood(
                host,
                ops_port,
                server.pid,
                connections=OPS_FLOOD_CONNECTIONS,
                duration_s=OPS_FLOOD_S,
                hold_s=OPS_FLOOD_HOLD_S,
            ),
        )
        figures["server_rss_end_bytes"] = process.memory_info().rss
    return figures


def resource_summary_lines(figures: dict[str, Any]) -> list[str]:
    """One line per attack of ``run_resource_attacks``."""

    def s(value: float | None) -> str:
        return "never" if value is None else f"{value * 1000:.0f} ms"

    def probes(p: dict[str, Any]) -> str:
        return (
            f"/health/live {p['probes'] - p['failed']}/{p['probes']} answered within "
            f"{PROBE_TIMEOUT_S:g} s (median {s(p['median_s'])}, slowest {s(p['slowest_s'])})"
        )

    def cost(f: dict[str, Any]) -> str:
        return (
            f"; server CPU {f['server_cpu_s']:.2f} s in {f['wall_s']:.1f} s, log {f['log_bytes']} B"
        )

    gib = 1 << 30
    big = figures["stalled big senders"]
    fd = figures["beyond the file limit"]
    ops = figures["ops port flood"]
    return [
        f"stalled big senders: {big['connections']} x {big['sent_bytes_each'] / (1 << 20):.0f} "
        f"MiB, {big['cut']} cut; server RSS {big['rss_before_bytes'] / gib:.2f} -> "
        f"{big['rss_peak_bytes'] / gib:.2f} GiB at most; a good call {s(big['good_call_s'])}"
        + cost(big),
        f"beyond the file limit: {fd['connections']} opened ({fd['not_connected']} could not "
        f"connect), {fd['refused_at_once']} closed at once; a new client's ping: {fd['ping']} "
        f"after {s(fd['ping_s'])}; " + probes(fd["probes"]) + cost(fd),
        f"ops port flood: {ops['opened']} connections in {ops['duration_s']:g} s, each held "
        f"{ops['hold_s']:g} s; threads {ops['threads_before']} -> {ops['threads_peak']} at "
        "most; " + probes(ops["probes"]) + cost(ops),
    ]
