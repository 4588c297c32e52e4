"""The interpreter budget: microseconds of interpreter-held time per request, part by part.

    python -m benchmarks.interpreter_budget                     # every path, 20 clients
    python -m benchmarks.interpreter_budget --path gpu-decode --clients 40 --seconds 10

One server process runs the real RPC layer, handler and pipeline, on the shipped configs with
each device call replaced by a wait that releases the interpreter lock (``benchmarks.standins``:
nvJPEG, OpenCV's decode and the model; GPU stages on PyTorch's ``meta`` device). This process
drives it over loopback with raw pre-encoded calls, and ``py-spy --gil`` samples which thread
holds the lock and where. A process that holds the lock for ``T`` microseconds per request
cannot serve more than ``1e6 / T`` requests a second, whatever its GPU and cores: that is the
ceiling this benchmark measures, on a machine without a GPU. Needs ``py-spy`` (``pip install
py-spy``); ``--no-profile`` gives the throughput and CPU figures without it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil

from benchmarks.budget_load import RawLoad
from benchmarks.standins import SCALE
from clients.images import DEFAULT_IMG_DIR, load_images
from service.server_process import REPO_ROOT, free_port

CONFIGS = {
    "gpu-decode": REPO_ROOT / "service" / "configs" / "resnet50_gpu_decode.toml",
    "cpu-decode": REPO_ROOT / "service" / "configs" / "resnet50.toml",
    "cpu-decode-processes": REPO_ROOT / "service" / "configs" / "resnet50_process_decode.toml",
}
#: The issue's targets, microseconds of interpreter-held time per request.
TARGETS_US = {"gpu-decode": 150.0, "cpu-decode": 250.0, "cpu-decode-processes": 250.0}
_STAND_INS = {
    "DecodeTensor": "StandInDecodeTensor",
    "DecodeMat": "StandInDecodeMat",
    "ResizeTensor": "StandInResizeTensor",
    "TorchTensor": "StandInTorchTensor",
}

#: (part, path fragment, function names or None for any) in the order they are tried on the
#: innermost frame of the project's own code in each sample.
_PARTS = (
    ("rpc write", "service/rpc/connection.py", None),
    (
        "rpc write",
        "service/rpc/codec.py",
        {"reply", "declared_error", "application_error", "_encode"},
    ),
    ("rpc write", "service/rpc/replies.py", None),
    ("rpc write", "service/rpc/wakeup.py", {"post", "wake"}),
    # The same, in versions before replies.py and wakeup.py were split out of server.py.
    ("rpc write", "service/rpc/server.py", {"_finish", "_end_call", "_post", "_wake", "_flush"}),
    ("rpc read", "service/rpc/", None),
    # The GPU core's side of tp.serve: taking records in, and answering.
    ("core intake", "torchpipe_lite/remote/server.py", {"_intake", "_read", "_submit", "_accept"}),
    ("core intake", "torchpipe_lite/remote/arena.py", None),
    ("core answers", "torchpipe_lite/remote/", None),
    ("rpc (thread per connection)", "service/server.py", None),
    ("top-k", "service/handlers/predictions.py", None),
    ("handler", "service/", None),
    ("completion", "torchpipe_lite/schedule/request.py", None),
    ("hand-offs and batch forming", "torchpipe_lite/schedule/", None),
    ("stage", "torchpipe_lite/backends/", None),
    ("stage", "benchmarks/standins.py", None),
)
_FRAME = re.compile(r"^(?P<function>.*) \((?P<path>.*):\d+\)$")


def stand_in_config(path: Path, folder: Path) -> Path:
    """``path`` with every device backend replaced by its stand-in, written into ``folder``."""
    text = path.read_text()
    for real, stand_in in _STAND_INS.items():
        text = re.sub(rf"\b{real}\b", stand_in, text)
    # The stand-ins' images are SCALE times smaller on each side, so is their resize.
    text = re.sub(
        r"^(resize_[hw]) = (\d+)",
        lambda match: f"{match[1]} = {int(match[2]) // SCALE}",
        text,
        flags=re.MULTILINE,
    )
    target = folder / path.name
    target.write_text(text)
    return target


def serve(config: Path, port: int, threads: int) -> None:
    """The server process: the pipelined handler on the stand-in config (``--serve``)."""
    import logging

    import benchmarks.standins  # noqa: F401  (registers the stand-ins)
    from service.handlers.main_torchpipe import PipelinedHandler
    from service.rpc.server import ThriftServer
    from service.service_config import load_service_config

    logging.basicConfig(level=logging.WARNING)
    # The stand-ins' small CPU tensors must not wake thread pools that the GPU path never
    # starts (and whose idle spinning would compete with the thread being measured).
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    handler = PipelinedHandler(load_service_config(config), device="meta", threads=threads)
    server = ThriftServer(handler, host="127.0.0.1", port=port)
    server.listen()
    print("listening", flush=True)
    import signal

    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    server.serve(drain_timeout_s=5)
    handler.close()


def part_of(thread: str, frames: list[str]) -> str:
    """Which part of the request path a py-spy sample belongs to."""
    for frame in reversed(frames):
        match = _FRAME.match(frame)
        if match is None:
            continue
        path, function = match["path"], match["function"].rsplit(".", 1)[-1]
        for part, fragment, functions in _PARTS:
            if fragment in path and (functions is None or function in functions):
                if part == "stage":
                    node = thread.split("-")[1] if thread.startswith("tp-") else "inline"
                    return f"stage {node}"
                return part
    return "other (interpreter, threads, logging)"


def attribute(raw: str) -> Counter[str]:
    """GIL-holding samples per part, from py-spy's raw output."""
    samples: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        thread_and_frames = stack.split(";")
        thread = thread_and_frames[0].split(": ", 1)[-1]
        samples[part_of(thread, thread_and_frames[1:])] += int(count)
    return samples


def measure(args: argparse.Namespace, path_name: str, images: list[bytes], folder: Path) -> dict:
    """Serve one path, load it, sample it; its figures."""
    config = stand_in_config(CONFIGS[path_name], folder)
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "benchmarks.interpreter_budget",
        "--serve",
        str(config),
        "--port",
        str(port),
        "--threads",
        str(args.threads),
    ]
    server = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    _separate_cores(server.pid)
    try:
        if server.stdout.readline().strip() != "listening":
            raise SystemExit(f"the {path_name} server did not start")
        # The load runs at a lower priority than the server, so that on a small machine it
        # does not preempt the thread holding the interpreter lock (which would count as held).
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0) + 10)
        load = RawLoad("127.0.0.1", port, images, clients=args.clients)
        load.run_for(args.warmup_s)
        process = psutil.Process(server.pid)
        cpu_before = process.cpu_times()
        raw_file = folder / f"{path_name}.raw"
        spy = None
        if not args.no_profile:
            spy = subprocess.Popen(
                [
                    args.py_spy,
                    "record",
                    "--gil",
                    "--threads",
                    "--nonblocking",
                    "--rate",
                    str(args.rate),
                    "--duration",
                    str(args.seconds),
                    "--format",
                    "raw",
                    "--output",
                    str(raw_file),
                    "--pid",
                    str(server.pid),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=_normal_priority,
            )
        window = load.run_for(args.seconds)
        cpu_after = process.cpu_times()
        if spy is not None:
            spy.wait(timeout=60)
        stats = load.server_stats()
        load.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    qps = window.replies / window.seconds
    cpu_s = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    result = {
        "path": path_name,
        "clients": args.clients,
        "seconds": round(window.seconds, 2),
        "qps": round(qps, 1),
        "errors": window.errors,
        "cpu_us_per_request": round(cpu_s / max(window.replies, 1) * 1e6, 1),
        "mean_batch": stats,
        "target_us": TARGETS_US[path_name],
    }
    if spy is not None and raw_file.exists():
        samples = attribute(raw_file.read_text())
        per_request_us = 1e6 / args.rate / max(qps * args.seconds, 1)
        result["gil_us_per_request"] = round(sum(samples.values()) * per_request_us, 1)
        result["parts_us"] = {
            part: round(count * per_request_us, 1) for part, count in samples.most_common()
        }
    return result


def _separate_cores(server_pid: int) -> None:
    """On a machine of few cores, keep the load (and py-spy, started from here) off the
    server's first core, so that they do not preempt the thread holding the lock."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cores) < 2:
        return
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, cores[1:])


def _normal_priority() -> None:
    with contextlib.suppress(OSError):  # raising a priority back needs privileges
        os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0) - 10)


def print_result(result: dict) -> None:
    print(
        f"\n{result['path']}: {result['clients']} clients, {result['qps']:.0f} QPS over "
        f"{result['seconds']:.1f} s, {result['errors']} errors; server CPU "
        f"{result['cpu_us_per_request']:.0f} us/request; mean batch "
        + ", ".join(f"{node} {size:.1f}" for node, size in result["mean_batch"].items())
    )
    if "gil_us_per_request" not in result:
        return
    total = result["gil_us_per_request"]
    verdict = "within" if total <= result["target_us"] else "OVER"
    print(
        f"interpreter-held: {total:.0f} us/request ({verdict} the {result['target_us']:.0f} "
        f"us target; ceiling {1e6 / max(total, 1):.0f} QPS)"
    )
    for part, value in result["parts_us"].items():
        print(f"  {part:<40} {value:7.1f} us  {value / max(total, 1e-9):6.1%}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--path", choices=("all", *CONFIGS), default="all")
    parser.add_argument("--clients", type=int, default=20, help="concurrent connections")
    parser.add_argument("--seconds", type=int, default=8, help="measured window")
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--rate", type=int, default=499, help="py-spy samples per second")
    parser.add_argument(
        "--threads", type=int, default=4, help="the server's pool threads (stats calls only)"
    )
    parser.add_argument("--img-dir", type=Path, default=DEFAULT_IMG_DIR)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--no-profile", action="store_true", help="skip py-spy")
    parser.add_argument(
        "--keep", type=Path, help="keep the stand-in configs and py-spy's raw samples here"
    )
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve is not None:
        serve(args.serve, args.port, args.threads)
        return 0
    args.py_spy = shutil.which("py-spy") or shutil.which(
        "py-spy", path=str(Path(sys.executable).parent)
    )
    if args.py_spy is None and not args.no_profile:
        print("py-spy is not installed (pip install py-spy), or pass --no-profile", file=sys.stderr)
        return 2
    images = load_images(args.img_dir)
    paths = list(CONFIGS) if args.path == "all" else [args.path]
    print(f"stand-in device times: {_describe_times()}; {os.cpu_count()} CPUs")
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        for path_name in paths:
            result = measure(args, path_name, images, folder)
            print_result(result)
            results.append(result)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "date": time.strftime("%Y-%m-%d"),
                    "stand_in_times": _describe_times(),
                    "results": results,
                },
                indent=2,
            )
        )
    return 0


def _describe_times() -> str:
    from benchmarks.standins import TIMES

    return (
        f"nvJPEG {TIMES.nvjpeg_fixed_ms} + {TIMES.nvjpeg_per_image_ms} ms/image, "
        f"model {TIMES.model_fixed_ms} + {TIMES.model_per_image_ms} ms/image, "
        f"CPU decode {TIMES.cpu_decode_per_image_ms} ms/image"
    )


if __name__ == "__main__":
    sys.exit(main())
