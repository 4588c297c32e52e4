"""Every attack of ``benchmarks.attacks`` against ``python -m service``: what a good client sees
meanwhile, what the attacker sees, and how soon the server recovers.

    python -m benchmarks.hostile_clients [--handler pipelined] [--results-dir runs]

Starts the server on a free loopback port with short connection deadlines (so the run takes a
minute, not the default 30 s per slow message) and a small admission budget (so a laptop's
worth of clients can overload it), runs the attacks one after the other, prints one line per
attack and writes the figures as JSON. The server's own CPU time during the connection flood is
recorded too: a server spinning on a full descriptor table would show it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import logging
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from thrift.Thrift import TType

from benchmarks import attacks, call_attacks, protocol_attacks, resource_attack_run
from benchmarks.report import write_json
from benchmarks.result_files import claim_result_path, git_commit, result_stem
from clients.images import DEFAULT_IMG_DIR
from service.server_process import REPO_ROOT, ServerProcess, free_port, service_command
from service.thrift_client import connect

logger = logging.getLogger("benchmarks.hostile_clients")

#: The server's settings for the run (flags of ``python -m service``).
DEADLINE_S = 2.0
MAX_CONNECTIONS = 256
MAX_IN_FLIGHT = 64
#: Nesting depths of the deep-nesting attacks (the issue's 600 and 200,000).
DEEP_NESTING = (600, 200_000)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.hostile_clients",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--handler", choices=("pipelined", "baseline"), default="pipelined")
    parser.add_argument("--config", type=Path, default=None, help="pipeline TOML")
    parser.add_argument("--model", type=Path, default=None, help="model file (the config's)")
    parser.add_argument(
        "--results-dir", type=Path, default=REPO_ROOT / "runs", help="where the JSON goes"
    )
    parser.add_argument(
        "--only-resources",
        action="store_true",
        help="run only the attacks on shared resources (benchmarks.resource_attacks: memory "
        "in unfinished messages, the file limit, the ops port), on a server at every default",
    )
    return parser.parse_args(argv)


def server_flags() -> list[str]:
    return [
        *("--message-timeout-s", str(DEADLINE_S), "--idle-timeout-s", str(DEADLINE_S)),
        *("--max-connections", str(MAX_CONNECTIONS), "--max-in-flight", str(MAX_IN_FLIGHT)),
        *("--max-images", str(MAX_IN_FLIGHT // 2)),
    ]


def run_attacks(
    host: str, port: int, photo: bytes, server_pid: int, log_path: Path
) -> dict[str, Any]:
    """Each attack's figures, by name (``log_path``: the server's log, whose growth the
    header-bomb flood measures)."""
    process = psutil.Process(server_pid)
    figures: dict[str, Any] = {}

    def record(name: str, run) -> None:
        attacks.settle(host, port)
        cpu_before = sum(process.cpu_times()[:2])
        started_s = time.monotonic()
        result = run()
        figures[name] = {
            **dataclasses.asdict(result),
            "wall_s": time.monotonic() - started_s,
            "server_cpu_s": sum(process.cpu_times()[:2]) - cpu_before,
        }
        logger.info("%s: %s", name, figures[name])

    record("idle connections", lambda: attacks.idle_connections(host, port, photo, 200))
    record("half messages", lambda: attacks.half_messages(host, port, photo, 200))
    record("drip feed", lambda: attacks.drip_feed(host, port, photo, interval_s=0.5))
    record(
        "connection flood",
        lambda: attacks.connection_flood(host, port, photo, cap=MAX_CONNECTIONS, extra=100),
    )
    record("overload", lambda: call_attacks.overload(host, port, photo, clients=200, calls_each=10))
    record(
        "abandoned calls",
        lambda: call_attacks.abandoned_calls(host, port, photo, calls=MAX_IN_FLIGHT),
    )
    record(
        "big call",
        lambda: call_attacks.big_call(host, port, photo, images=MAX_IN_FLIGHT // 2, singles=5),
    )
    record(
        "header bomb flood",
        lambda: call_attacks.header_bomb_flood(
            host, port, photo, connections=50, duration_s=10.0, log_path=str(log_path)
        ),
    )
    run_protocol_attacks(host, port, photo, record)
    record(
        "two big calls",
        lambda: call_attacks.big_calls_beside_singles(host, port, photo, images=MAX_IN_FLIGHT // 2),
    )
    return figures


def run_protocol_attacks(host: str, port: int, photo: bytes, record) -> None:
    """The attacks of ``benchmarks.protocol_attacks``: nesting deeper than a recursive parser
    follows, and calls written back to back on one connection."""
    for kind, name in ((TType.LIST, "list"), (TType.MAP, "map")):
        for depth in DEEP_NESTING:
            record(
                f"nested {name} {depth}",
                lambda kind=kind, depth=depth: protocol_attacks.deep_nesting(
                    host, port, depth, kind
                ),
            )
    record("two infer_batch", lambda: protocol_attacks.two_infer_batches(host, port, photo))
    record("nosuch then ping", lambda: protocol_attacks.unknown_then_ping(host, port))
    record("1000 pings", lambda: protocol_attacks.many_pings(host, port, 1000))


def summary_lines(figures: dict[str, Any]) -> list[str]:
    """One line per attack, the figures benchmarks/README.md ("Hostile clients") quotes."""

    def s(value: float | None) -> str:
        return "never" if value is None else f"{value:.2f} s"

    lines = []
    for name in ("idle connections", "half messages", "drip feed"):
        held = figures[name]
        lines.append(
            f"{name}: {held['connections']} held; a good client served in "
            f"{s(held['good_call_s'])}; all cut after {s(held['all_closed_after_s'])}"
        )
    flood = figures["connection flood"]
    lines.append(
        f"connection flood: {flood['opened']} opened, {flood['refused_at_once']} closed at "
        f"accept; served again {s(flood['good_call_after_s'])} after; server CPU "
        f"{flood['server_cpu_s']:.2f} s in {flood['wall_s']:.1f} s"
    )
    over = figures["overload"]
    lines.append(
        f"overload: {over['calls']} calls from {over['clients']} clients: {over['codes']}; "
        f"slowest refusal {s(over['slowest_refusal_s'])}, slowest success "
        f"{s(over['slowest_success_s'])}; served again {s(over['recovery_s'])} after; "
        f"seconds by outcome {over['seconds_by_code']}"
    )
    gone = figures["abandoned calls"]
    lines.append(
        f"abandoned calls: {gone['calls']} sent then reset; a good client served "
        f"{s(gone['good_call_after_s'])} after"
    )
    big = figures["big call"]
    lines.append(
        f"big call: {big['images']} images in {s(big['big_call_s'])} "
        f"(failures {big['big_call_failures'] or 'none'}); single calls beside it "
        + ", ".join(s(x) for x in big["single_calls_s"])
    )
    bombs = figures["header bomb flood"]
    lines.append(
        f"header bomb flood: {bombs['calls']} calls of a 119-byte PPM declaring 60000x60000 "
        f"from {bombs['connections']} connections in {bombs['duration_s']:g} s: "
        f"{bombs['codes']}; the server logged {bombs['log_bytes']:,} bytes "
        f"({bombs['log_lines']} lines); a good client served in {s(bombs['good_call_s'])}"
    )
    two = figures["two big calls"]
    lines.append(
        f"two big calls: {two['big_calls']} x {two['images_each']} images in "
        + ", ".join(s(x) for x in two["big_calls_s"])
        + f" ({two['big_call_codes']}); a single-image client beside them got "
        f"{two['single_codes']}, seconds {two['single_seconds']}"
    )
    return lines + protocol_lines(figures)


def protocol_lines(figures: dict[str, Any]) -> list[str]:
    """One line per attack of ``run_protocol_attacks``."""

    def s(value: float | None) -> str:
        return "never" if value is None else f"{value * 1000:.2f} ms"

    lines = []
    for name, deep in figures.items():
        if name.startswith("nested "):
            lines.append(
                f"{name} ({deep['message_bytes']} bytes): answered {deep['answered']}, "
                f"closed after {s(deep['closed_after_s'])}; a new client's ping "
                f"{s(deep['ping_after_s'])}"
            )
    for name in ("two infer_batch", "nosuch then ping", "1000 pings"):
        sent = figures[name]
        seqids = [seqid for _name, _kind, seqid in sent["answers"]]
        in_order = seqids == list(range(1, sent["calls"] + 1))
        lines.append(
            f"{name} in one write: {len(seqids)} of {sent['calls']} answered "
            f"(all, in order: {in_order}) in {s(sent['took_s'])}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = parse_args(argv)
    photo = (DEFAULT_IMG_DIR / "chelsea.jpg").read_bytes()
    host, port = "127.0.0.1", free_port()
    command = service_command(args.handler, port, config=args.config, model=args.model)
    command += server_flags()
    log_path = Path(tempfile.mkdtemp(prefix="hostile-")) / "server.log"
    today = datetime.date.today().isoformat()
    defaults = service_command(args.handler, port, config=args.config, model=args.model)
    resources = resource_attack_run.run_resource_attacks(
        defaults, host, port, photo, log_path.with_name("resources-server.log")
    )
    for line in resource_attack_run.resource_summary_lines(resources):
        print(line)
    if args.only_resources:
        stem = result_stem("cpu", f"resource-attacks-{args.handler}")
        record = {"date": today, "git_commit": git_commit(), "attacks": resources}
        write_json(claim_result_path(args.results_dir, stem), record)
        return 0
    with ServerProcess(command, host=host, port=port, log_path=log_path) as server:
        server.start()
        figures = run_attacks(host, port, photo, server.pid, log_path)
        with connect(host, port) as connection:
            stats = connection.client.stats()
    figures.update(resources)
    for line in summary_lines(figures):
        print(line)
    record = {
        "date": today,
        "git_commit": git_commit(),
        "device": "cpu",
        "cores": psutil.cpu_count(),
        "handler": args.handler,
        "server_command": shlex.join(command),
        "invocation": shlex.join(["python", "-m", "benchmarks.hostile_clients", *sys.argv[1:]]),
        "attacks": figures,
        "connections": vars(stats.connections) if stats.connections else None,
        "admission": vars(stats.admission) if stats.admission else None,
    }
    stem = result_stem("cpu", f"hostile-clients-{args.handler}")
    write_json(claim_result_path(args.results_dir, stem), record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
