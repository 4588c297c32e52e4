"""Soak test: steady load on a server subprocess for minutes; does its memory stay flat?

    python -m benchmarks.soak --duration-s 1800 --request-client 20 --processes 4

Starts ``python -m service`` (with its ops port), waits for /health/ready, runs one warm-up
round, then records the server's RSS and the GPU's used memory (the "start"), drives rounds of
load through ``clients.client_qps.run_load`` until the duration is spent, sampling after every
round, and records the "end". Goal: growth under ``--growth-limit-pct`` (5 %) and no errors.
Prints a summary and writes JSON under benchmarks/results/; exits 1 when the goal is missed.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import shlex
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from benchmarks.gpu_monitor import GpuMonitor
from benchmarks.report import write_json
from benchmarks.result_files import claim_result_path, git_commit, result_stem
from benchmarks.run_record import device_slug
from clients.client_qps import LoadTestError, run_load
from clients.images import DEFAULT_IMG_DIR, load_images
from service.server_process import (
    REPO_ROOT,
    ServerProcess,
    ServerStartError,
    free_port,
    service_command,
)
from service.thrift_client import connect

logger = logging.getLogger("benchmarks.soak")

_MIB = 1 << 20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--handler", choices=("pipelined", "baseline"), default="pipelined")
    parser.add_argument(
        "--duration-s", type=float, default=None, help="load after warm-up (default 600; quick 60)"
    )
    parser.add_argument("--round-calls", type=int, default=5000, help="calls per sampled round")
    parser.add_argument("--warmup-calls", type=int, default=2000, help="the untimed first round")
    parser.add_argument("--request-client", type=int, default=20, help="concurrent clients")
    parser.add_argument("--processes", type=int, default=4, help="client processes")
    parser.add_argument("--threads", type=int, default=None, help="server RPC threads")
    parser.add_argument(
        "--model", type=Path, help="model file (default: the config's, exported when missing)"
    )
    parser.add_argument("--config", type=Path, default=None, help="pipeline TOML")
    parser.add_argument("--img-dir", type=Path, default=DEFAULT_IMG_DIR)
    parser.add_argument("--growth-limit-pct", type=float, default=5.0)
    parser.add_argument("--results-dir", type=Path, default=REPO_ROOT / "runs")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a one-minute run with small rounds (CPU machines, a smoke test of this script)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.round_calls, args.warmup_calls = 200, 100
    if args.duration_s is None:
        args.duration_s = 60.0 if args.quick else 600.0
    if args.threads is None:
        args.threads = max(20, args.request_client)
    return args


def _server_memory(pid: int, port: int) -> dict[str, Any]:
    """The server's RSS, and each GPU's used memory as the server's stats() reads it (NVML:
    device-wide, so other processes on the GPU count too)."""
    rss = psutil.Process(pid).memory_info().rss
    with connect("127.0.0.1", port, timeout_s=60) as connection:
        stats = connection.client.stats()
    gpus = {str(g.index): g.memory_used_bytes for g in stats.gpus or []}
    failures = {str(code): count for code, count in (stats.failures_by_code or {}).items()}
    return {
        "time_s": time.monotonic(),
        "rss_bytes": rss,
        "gpu_used_bytes": gpus,
        "requests_ok": stats.requests_ok,
        "server_failures_by_code": failures,
    }


def _scrape(metrics_port: int) -> tuple[float, list[str]]:
    """Fetches /metrics once (the ops port under load is part of the soak): its latency in ms
    and the Triton-named sample lines."""
    started_s = time.perf_counter()
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=30) as reply:
        body = reply.read().decode()
    took_ms = (time.perf_counter() - started_s) * 1000.0
    if "nv_inference_count" not in body:
        raise RuntimeError("/metrics lacks nv_inference_count")
    return took_ms, [line for line in body.splitlines() if line.startswith("nv_")]


def _wait_ready(metrics_port: int, timeout_s: float = 600.0) -> None:
    deadline_s = time.monotonic() + timeout_s
    url = f"http://127.0.0.1:{metrics_port}/health/ready"
    while time.monotonic() < deadline_s:
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                if reply.status == 200:
                    return
        except OSError:  # 503 (HTTPError is an OSError) or not listening yet
            pass
        time.sleep(0.5)
    raise ServerStartError(f"/health/ready did not answer 200 within {timeout_s:.0f} s")


def _growth_pct(start: float, end: float) -> float:
    return (end - start) / start * 100.0 if start else 0.0


def soak(args: argparse.Namespace, images: list[bytes], log_path: Path) -> dict[str, Any]:
    """Runs the whole soak against one server; returns the record (without verdict)."""
    port, metrics_port = free_port(), free_port()
    command = service_command(
        args.handler, port, threads=args.threads, config=args.config, model=args.model
    )
    command += ["--metrics-port", str(metrics_port)]
    rounds: list[dict[str, Any]] = []
    load_args = {
        "port": port,
        "images": images,
        "request_client": args.request_client,
        "processes": args.processes,
        "progress": False,
    }
    with ServerProcess(command, host="127.0.0.1", port=port, log_path=log_path) as server:
        server.start()
        _wait_ready(metrics_port)
        warm = run_load(total_number=args.warmup_calls, warmup=0, **load_args)
        start = _server_memory(server.pid, port)
        logger.info("after warm-up (%d calls): RSS %d MiB", warm.requests, start["rss_bytes"] >> 20)
        deadline_s = start["time_s"] + args.duration_s
        while time.monotonic() < deadline_s:
            load = run_load(total_number=args.round_calls, warmup=0, **load_args)
            sample = _server_memory(server.pid, port)
            previous = rounds[-1] if rounds else start
            sample["requests_ok_delta"] = sample["requests_ok"] - previous["requests_ok"]
            sample["scrape_ms"], metrics = _scrape(metrics_port)
            sample.update(
                qps=load.qps, tp50_ms=load.tp50_ms, tp99_ms=load.tp99_ms, errors=load.errors,
                errors_by_code=load.errors_by_code, elapsed_s=sample["time_s"] - start["time_s"],
            )  # fmt: skip
            rounds.append(sample)
            logger.info(
                "%4.0f s: %.0f QPS, TP99 %.1f ms, errors %d, RSS %d MiB (%+.2f %%)",
                sample["elapsed_s"], load.qps, load.tp99_ms or float("nan"), load.errors,
                sample["rss_bytes"] >> 20, _growth_pct(start["rss_bytes"], sample["rss_bytes"]),
            )  # fmt: skip
        exit_code = server.stop(timeout_s=120)
    return {
        "start": start,
        "rounds": rounds,
        "server_exit_code": exit_code,
        "command": command,
        "last_metrics": metrics if rounds else [],
    }


def verdict(record: dict[str, Any], limit_pct: float) -> list[str]:
    """What missed the goal (empty when the soak passed)."""
    start, rounds = record["start"], record["rounds"]
    if not rounds:
        return ["no round completed within the duration"]
    end = rounds[-1]
    problems = []
    rss_pct = _growth_pct(start["rss_bytes"], end["rss_bytes"])
    if rss_pct >= limit_pct:
        problems.append(f"RSS grew {rss_pct:.1f} % (limit {limit_pct} %)")
    for gpu, used in end["gpu_used_bytes"].items():
        gpu_pct = _growth_pct(start["gpu_used_bytes"].get(gpu, 0), used)
        if gpu_pct >= limit_pct:
            problems.append(f"GPU {gpu} memory grew {gpu_pct:.1f} % (limit {limit_pct} %)")
    errors = sum(r["errors"] for r in rounds)
    if errors:
        problems.append(f"{errors} client-side errors")
    if end["server_failures_by_code"] != start["server_failures_by_code"]:
        problems.append(f"server failures: {end['server_failures_by_code']}")
    if record["server_exit_code"] != 0:
        problems.append(f"server exited with {record['server_exit_code']} after SIGTERM")
    return problems


def summary_lines(record: dict[str, Any]) -> list[str]:
    start, rounds = record["start"], record["rounds"]
    answered = sum(r["requests_ok_delta"] for r in rounds)
    lines = [f"rounds: {len(rounds)}, images answered after warm-up: {answered}"]
    if rounds:
        end = rounds[-1]
        lines.append(
            f"RSS: {start['rss_bytes'] / _MIB:.0f} MiB after warm-up, {end['rss_bytes'] / _MIB:.0f}"
            f" MiB at the end ({_growth_pct(start['rss_bytes'], end['rss_bytes']):+.2f} %), "
            f"peak {max(r['rss_bytes'] for r in rounds) / _MIB:.0f} MiB"
        )
        for gpu, used in end["gpu_used_bytes"].items():
            first = start["gpu_used_bytes"].get(gpu, 0)
            lines.append(
                f"GPU {gpu} used memory: {first / _MIB:.0f} MiB -> {used / _MIB:.0f} MiB "
                f"({_growth_pct(first, used):+.2f} %)"
            )
        qps = [r["qps"] for r in rounds]
        lines.append(f"QPS per round: min {min(qps):.0f}, max {max(qps):.0f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = parse_args(argv)
    images = load_images(args.img_dir)
    gpu = GpuMonitor.open()
    log_path = Path(tempfile.mkdtemp(prefix="soak-")) / "server.log"
    logger.info("server log: %s", log_path)
    try:
        record = soak(args, images, log_path)
    except (ServerStartError, LoadTestError) as exc:
        logger.error("soak could not run: %s", exc)
        return 1
    problems = verdict(record, args.growth_limit_pct)
    today = datetime.date.today().isoformat()
    record.update(
        date=today,
        git_commit=git_commit(),
        device=device_slug(gpu),
        gpu=gpu.names[0] if gpu.available else None,
        gpu_note=gpu.reason,
        handler=args.handler,
        duration_s=args.duration_s,
        request_client=args.request_client,
        growth_limit_pct=args.growth_limit_pct,
        invocation=shlex.join(["python", "-m", "benchmarks.soak", *(argv or sys.argv[1:])]),
        passed=not problems,
        problems=problems,
    )
    for line in summary_lines(record):
        print(line)
    print("PASS" if not problems else "FAIL: " + "; ".join(problems))
    stem = result_stem(device_slug(gpu), f"soak-{args.handler}")
    write_json(claim_result_path(args.results_dir, stem), record)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
