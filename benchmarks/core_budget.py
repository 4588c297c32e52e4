"""The GPU core's interpreter budget: CPU microseconds the core spends per request.

    python -m benchmarks.core_budget                       # 4 fronts x 10 callers, 10 s
    python -m benchmarks.core_budget --fronts 8 --callers 5 --seconds 20
    python -m benchmarks.core_budget --gpu                 # the real stages, on CUDA

One core process serves the GPU-decode pipeline (``tp.serve``). Without ``--gpu`` every
device call is replaced by a wait that releases the interpreter lock (``benchmarks.standins``),
so what the core spends on the CPU is its own Python: taking records in, forming batches, the
stages' per-batch work, ending requests and answering. Front processes call it through
``tp.connect`` in closed loops with the photographs' bytes (no RPC layer). The figures: the
core's CPU time over a timed window per request it answered, and (py-spy) the time its threads
held the interpreter lock per request, part by part. A core that holds the lock ``T``
microseconds per request cannot serve more than ``1e6 / T`` requests a second. The core's
batch sizes and its intake batches and answer frames are printed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psutil

from benchmarks.interpreter_budget import CONFIGS, attribute, stand_in_config
from benchmarks.run_record import git_commit
from clients.images import DEFAULT_IMG_DIR

REPO_ROOT = Path(__file__).resolve().parent.parent


def serve_core(config: Path, address: str) -> None:
    """The core process (``--serve``): the config's core part, served at ``address``."""
    import torch

    import benchmarks.standins  # noqa: F401  (registers the stand-ins)
    import torchpipe_lite as tp
    from service.service_config import load_service_config

    if not torch.cuda.is_available():
        # The stand-ins' small CPU tensors must not wake thread pools the GPU never starts.
        torch.set_num_threads(1)
    core = load_service_config(config).with_core(address).core_pipeline()
    server = tp.serve(core, address)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    print("serving", flush=True)
    stopped.wait()
    figures = server.figures()
    server.close()
    print(json.dumps(figures.__dict__), flush=True)


def run_front(address: str, callers: int, seconds: float) -> None:
    """A front process (``--front``): ``callers`` threads calling the core in closed loops."""
    import torchpipe_lite as tp

    images = [path.read_bytes() for path in sorted(Path(DEFAULT_IMG_DIR).glob("*.jpg"))]
    remote = tp.connect(address)
    deadline = time.monotonic() + seconds
    counts = [0] * callers

    def caller(index: int) -> None:
        while time.monotonic() < deadline:
            remote({"data": images[(index + counts[index]) % len(images)]})
            counts[index] += 1

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    remote.close()
    print(sum(counts), flush=True)


def _answered(stats: dict) -> int:
    """Requests that left the core's last node (with a result or not)."""
    last = list(stats.values())[-1]
    return last.requests_ok + last.requests_failed + last.requests_no_result


def measure(args: argparse.Namespace) -> dict:
    import torchpipe_lite as tp

    folder = Path(tempfile.mkdtemp(prefix="core-budget-"))
    config = CONFIGS["gpu-decode"]
    if not args.gpu:
        config = stand_in_config(config, folder)
    address = str(folder / "core.sock")
    module = [sys.executable, "-m", "benchmarks.core_budget"]
    core = subprocess.Popen(
        [*module, "--serve", str(config), address], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        if core.stdout.readline().strip() != "serving":
            raise SystemExit("the core did not start")
        total_s = args.warmup_s + args.seconds + 1.0
        fronts = [
            subprocess.Popen(
                [*module, "--front", address, str(args.callers), str(total_s)],
                cwd=REPO_ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(args.fronts)
        ]
        observer = tp.connect(address, arena_bytes=1 << 20)
        process = psutil.Process(core.pid)
        time.sleep(args.warmup_s)  # a timed window, not synchronisation
        spy = _profile(process.pid, args, folder / "gil.raw") if args.py_spy else None
        cpu_before, stats_before = process.cpu_times(), observer.stats()
        started = time.perf_counter()
        time.sleep(args.seconds)
        cpu_after, stats_after = process.cpu_times(), observer.stats()
        window_s = time.perf_counter() - started
        if spy is not None:
            spy.wait(timeout=60)
        observer.close()
        for front in fronts:
            front.wait()
        core.send_signal(signal.SIGTERM)
        figures = json.loads(core.stdout.readlines()[-1])
    finally:
        core.kill() if core.poll() is None else None
    answered = _answered(stats_after) - _answered(stats_before)
    cpu_s = sum(cpu_after[:2]) - sum(cpu_before[:2])
    nodes = {}
    for name, after in stats_after.items():
        before = stats_before[name]
        executions = after.executions - before.executions
        inferences = after.inferences - before.inferences
        nodes[name] = {"mean_batch": round(inferences / executions, 2) if executions else 0.0}
    result = {
        "requests_per_s": round(answered / window_s, 1),
        "core_cpu_us_per_request": round(cpu_s / answered * 1e6, 1) if answered else None,
        "core_cpu_share": round(cpu_s / window_s, 3),
        "requests_per_intake_batch": round(
            figures["requests_received"] / max(1, figures["intake_batches"]), 2
        ),
        "requests_per_result_frame": round(
            figures["requests_answered"] / max(1, figures["result_frames"]), 2
        ),
        "nodes": nodes,
    }
    raw = folder / "gil.raw"
    if args.py_spy and raw.exists():
        us_per_sample = 1e6 / args.rate / max(answered * args.seconds / window_s, 1)
        samples = attribute(raw.read_text())
        result["gil_us_per_request"] = round(sum(samples.values()) * us_per_sample, 1)
        result["gil_parts_us"] = {
            part: round(count * us_per_sample, 1) for part, count in samples.most_common()
        }
        result["gil_lines_us"] = {
            line: round(count * us_per_sample, 1)
            for line, count in _innermost_lines(raw.read_text()).most_common(30)
        }
    return result


def _innermost_lines(raw: str) -> Counter[str]:
    """Lock-holding samples per innermost frame (function, file and line), across threads."""
    samples: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            samples[stack.rsplit(";", 1)[-1]] += int(count)
    return samples


def _profile(pid: int, args: argparse.Namespace, raw: Path) -> subprocess.Popen:
    """py-spy sampling which of the core's threads holds the interpreter lock, and where."""
    command = [args.py_spy, "record", "--gil", "--threads", "--nonblocking", "--format", "raw"]
    command += ["--rate", str(args.rate), "--duration", str(int(args.seconds))]
    command += ["--output", str(raw), "--pid", str(pid)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fronts", type=int, default=4, help="front processes")
    parser.add_argument("--callers", type=int, default=10, help="closed-loop callers per front")
    parser.add_argument("--seconds", type=float, default=10.0, help="timed window (s)")
    parser.add_argument("--warmup-s", type=float, default=3.0, help="load before the window (s)")
    parser.add_argument(
        "--gpu", action="store_true", help="serve the real GPU stages and model (needs CUDA)"
    )
    parser.add_argument("--rate", type=int, default=499, help="py-spy samples per second")
    parser.add_argument("--no-profile", action="store_true", help="skip py-spy")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--serve", nargs=2, metavar=("CONFIG", "ADDRESS"), help=argparse.SUPPRESS)
    parser.add_argument("--front", nargs=3, metavar=("ADDRESS", "N", "S"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_core(Path(args.serve[0]), args.serve[1])
        return
    if args.front:
        run_front(args.front[0], int(args.front[1]), float(args.front[2]))
        return
    args.py_spy = None if args.no_profile else shutil.which("py-spy", path=_bin_path())
    if args.py_spy is None and not args.no_profile:
        print("py-spy is not installed (pip install py-spy), or pass --no-profile", file=sys.stderr)
        sys.exit(2)
    result = {
        "benchmark": "core_budget",
        "git_commit": git_commit(),
        "cpus": os.cpu_count(),
        "fronts": args.fronts,
        "callers_per_front": args.callers,
        "window_s": args.seconds,
        "stages": "real, on the GPU" if args.gpu else "stand-ins (device work is a wait)",
        **measure(args),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


def _bin_path() -> str:
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


if __name__ == "__main__":
    main()
