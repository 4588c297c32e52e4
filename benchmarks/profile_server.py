"""Profile a live server under load with py-spy: where the GIL goes, per function and per file.

Run: ``python -m benchmarks.profile_server [--handler pipelined] [--config FILE]
[--concurrency 20] [--seconds 10] [--mps] [--out DIR] [--extra --workers 8]``. Starts the
server, drives it with client_qps from separate processes, records py-spy samples of the thread
holding the GIL (``--gil``) in the server and its worker processes (``--subprocesses``), and
prints the functions and source files that hold it longest. Needs ``py-spy`` on the PATH.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from benchmarks.interpreter_budget import attribute
from benchmarks.mps import MpsError, mps_daemon
from clients.client_qps import run_load
from service.server_process import ServerProcess, free_port, service_command


def summarise(raw_path: Path, top: int = 25) -> tuple[int, str]:
    """The number of samples, and the top self-time frames and files, from py-spy's raw
    (collapsed) output."""
    by_frame: collections.Counter[str] = collections.Counter()
    by_file: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        leaf = stack.split(";")[-1]
        by_frame[leaf] += count
        file_name = leaf.rpartition("(")[2].split(":")[0].rstrip(")")
        by_file[file_name] += count
    lines = [f"{total} samples holding the GIL", "", "self time by function:"]
    for frame, count in by_frame.most_common(top):
        lines.append(f"{100 * count / max(total, 1):6.2f}%  {frame}")
    lines += ["", "self time by file:"]
    for file_name, count in by_file.most_common(top):
        lines.append(f"{100 * count / max(total, 1):6.2f}%  {file_name}")
    return total, "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handler", default="pipelined", choices=["baseline", "pipelined"])
    parser.add_argument("--config", help="pipeline TOML (default: the service's)")
    parser.add_argument("--model", help="model file (default: the config's)")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=10, help="how long py-spy samples")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--out", default="build/profile", help="folder for the raw samples")
    parser.add_argument("--total-number", type=int, help="calls to send (default: 2000/s)")
    parser.add_argument("--mps", action="store_true", help="under a private CUDA MPS daemon")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="server flags")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if py_spy is None:
        print("py-spy is not installed (pip install py-spy)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = service_command(
        args.handler, port, threads=max(20, args.concurrency), config=args.config, model=args.model
    )
    command += args.extra
    with contextlib.ExitStack() as stack:
        if args.mps:
            try:
                stack.enter_context(mps_daemon())
            except (MpsError, OSError, subprocess.SubprocessError) as error:
                print(f"--mps: {error}", file=sys.stderr)
                return 2
        return profile(args, py_spy, command, port, out)


def profile(args: argparse.Namespace, py_spy: str, command: list[str], port: int, out: Path) -> int:
    """Start the server, record py-spy while the load runs, print the summary."""
    with ServerProcess(command, host="127.0.0.1", port=port, log_path=out / "server.log") as server:
        server.start()
        recording = threading.Event()
        raw_path = out / f"{args.handler}-gil.txt"

        def record() -> None:
            recording.wait()
            subprocess.run(
                [
                    py_spy,
                    "record",
                    "--gil",
                    "--threads",
                    "--nonblocking",
                    "--subprocesses",  # the workers of --workers N
                    "--format",
                    "raw",
                    "-r",
                    str(args.rate),
                    "-d",
                    str(args.seconds),
                    "-o",
                    str(raw_path),
                    "--pid",
                    str(server.pid),
                ],
                check=False,
            )

        recorder = threading.Thread(target=record)
        recorder.start()
        # By default enough calls to outlast the recording at ~5,000 QPS.
        result = run_load(
            port=port,
            request_client=args.concurrency,
            total_number=args.total_number or 5000 * args.seconds,
            warmup=200,
            processes=args.processes,
            progress=False,
            on_timed_start=recording.set,
        )
        recorder.join()
    print(f"load: {result.qps:.1f} QPS, TP50 {result.tp50_ms:.2f} ms, errors {result.errors}")
    if raw_path.exists():
        samples, summary = summarise(raw_path)
        held_ms = 1e3 * samples / args.rate / max(result.qps * args.seconds, 1)
        print(f"interpreter lock held {held_ms:.3f} ms per request (all processes)")
        per_request_us = 1e6 / args.rate / max(result.qps * args.seconds, 1)
        for part, count in attribute(raw_path.read_text()).most_common():
            print(f"  {part:<40} {count * per_request_us:7.1f} us per request")
        print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
