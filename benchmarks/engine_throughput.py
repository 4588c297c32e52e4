"""Engine throughput: TorchTensor images/s at batch 1, 2, 8 and 32 (ResNet50, fp16, CUDA graphs)
beside the raw CUDA-graph ceilings probed on the lent H100 (benchmarks/README.md, "The stages
alone").

Run: ``python -m benchmarks.engine_throughput [--model models/resnet50.onnx] [--seconds 3]
[--no-fuse-conv] [--json-dir DIR]``. Without ``--model`` it exports a
seeded-random ResNet50 to a temporary directory (throughput does not depend on the weights).
``--no-fuse-conv`` measures the model without its fused Conv -> [Add ->] ReLU kernels (the
TorchTensor key ``fuse_conv = false``), for the A/B in benchmarks/README.md.

Three figures per batch size, all on one ``SyncTensor[TorchTensor]`` instance, no scheduler:
- forward: ``backend.forward(batch)`` with CPU uint8 1x3x224x224 rows in (as Mat2Tensor gives
  them) and CPU float32 logits out: batch assembly, one host-to-device copy, graph replay, one
  device-to-host copy;
- replay: the instance's CUDA graph alone, 10 replays back to back then one stream sync (the
  raw ceiling, re-measured here);
- two instances: ``forward`` on two instances from two threads at once (what a node with
  ``instance_num = 2`` can reach).

On a machine without CUDA it runs a tiny version (ResNet18, fp32, batch 1 and 8) and says so.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import torch

import torchpipe_lite as tp
from benchmarks.report import name_slug
from benchmarks.result_files import LOCAL_RESULTS_DIR, claim_result_path, git_commit, result_stem

logger = logging.getLogger("benchmarks.engine_throughput")

#: ResNet50 fp16 channels-last CUDA-graph replay probed on the lent H100 (benchmarks/README.md).
DESIGN_CEILINGS = {1: 1159, 8: 7096, 32: 12415}
MEAN = "123.675, 116.28, 103.53"
STD = "58.395, 57.120, 57.375"


def uint8_rows(count: int, size: int = 224) -> list[dict]:
    """Requests carrying channels-last uint8 rows, like Mat2Tensor's output."""
    generator = torch.Generator().manual_seed(count)
    rows = []
    for _ in range(count):
        hwc = torch.randint(0, 256, (size, size, 3), generator=generator, dtype=torch.uint8)
        rows.append({"data": hwc.permute(2, 0, 1).unsqueeze(0)})
    return rows


def timed_rate(step, images_per_step: int, seconds: float, min_steps: int = 20) -> float:
    """Images/s of ``step()`` run back to back for about ``seconds`` (after a warm-up)."""
    for _ in range(5):
        step()
    steps = 0
    began = time.perf_counter()
    while steps < min_steps or time.perf_counter() - began < seconds:
        step()
        steps += 1
    return steps * images_per_step / (time.perf_counter() - began)


def forward_rate(backend: tp.Backend, batch_size: int, seconds: float) -> float:
    batch = uint8_rows(batch_size)
    return timed_rate(lambda: backend.forward(batch), batch_size, seconds)


def replay_rate(backend: tp.Backend, batch_size: int, seconds: float) -> float:
    engine = backend.children[0]
    graph, _ = engine._graphs[batch_size]
    stream = engine._stream

    def replays() -> None:
        with torch.cuda.stream(stream):
            for _ in range(10):
                graph.replay()
        stream.synchronize()

    return timed_rate(replays, 10 * batch_size, seconds, min_steps=5)


def parallel_rate(backends: list[tp.Backend], batch_size: int, seconds: float) -> float:
    """Total images/s of ``forward`` on each backend from its own thread at once."""
    batches = [uint8_rows(batch_size) for _ in backends]
    for backend, batch in zip(backends, batches, strict=True):
        for _ in range(5):
            backend.forward(batch)
    counts = [0] * len(backends)
    start = threading.Barrier(len(backends) + 1)
    stop = threading.Event()

    def run(index: int) -> None:
        start.wait()
        while not stop.is_set():
            backends[index].forward(batches[index])
            counts[index] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(backends))]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    stop.wait(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return sum(counts) * batch_size / (time.perf_counter() - began)


def device_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def main(argv: list[str] | None = None) -> int:
    """Measure, print the table, write the JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.engine_throughput")
    parser.add_argument("--model", help="ONNX model (default: export a random ResNet50)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per figure")
    parser.add_argument(
        "--fuse-conv",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fuse each Conv -> [Add ->] ReLU into one cuDNN kernel (default: yes)",
    )
    parser.add_argument(
        "--json-dir",
        default=str(LOCAL_RESULTS_DIR),
        help="where the JSON goes (the default is ignored by git)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    on_gpu = torch.cuda.is_available()
    arch, batches, precision = (
        ("resnet50", [1, 2, 8, 32], "fp16") if on_gpu else ("resnet18", [1, 8], "fp32")
    )
    if not on_gpu:
        logger.warning("no CUDA here: running a TINY CPU version (ResNet18, fp32, batch 1 and 8)")
        args.seconds = min(args.seconds, 2.0)
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model
        if model is None:
            from service.tools.export_model import export_classifier

            model = str(export_classifier(arch, Path(scratch) / f"{arch}.onnx"))
        params = {"model": model, "precision": precision, "min": 1, "max": max(batches)}
        params |= {"mean": MEAN, "std": STD, "fuse_conv": args.fuse_conv}
        logger.info("initialising two SyncTensor[TorchTensor] instances (captures CUDA graphs)")
        backends = [tp.create_backend("SyncTensor[TorchTensor]", params) for _ in range(2)]
        figures = []
        for batch_size in batches:
            logger.info("batch %d: measuring", batch_size)
            row = {
                "batch": batch_size,
                "forward_images_per_s": forward_rate(backends[0], batch_size, args.seconds),
            }
            if on_gpu:
                row["replay_images_per_s"] = replay_rate(backends[0], batch_size, args.seconds)
                row["two_instances_images_per_s"] = parallel_rate(
                    backends, batch_size, args.seconds
                )
                row["design_ceiling_images_per_s"] = DESIGN_CEILINGS.get(batch_size)
            figures.append(row)
        for backend in backends:
            backend.close()

    print(f"\nTorchTensor engine throughput, {arch} {precision}, {device_name()}")
    print(
        f"torch {torch.__version__}, one SyncTensor[TorchTensor] instance unless said, "
        f"fused convolutions: {'yes' if args.fuse_conv else 'no'}"
    )
    if not on_gpu:
        print("(tiny CPU version: no CUDA on this machine; not comparable with the GPU ceilings)")
    header = f"{'batch':>5}  {'forward img/s':>14}"
    if on_gpu:
        header += f"  {'graph replay':>12}  {'2 instances':>11}  {'DESIGN ceiling (H100)':>21}"
    print(header)
    for row in figures:
        line = f"{row['batch']:>5}  {row['forward_images_per_s']:>14,.0f}"
        if on_gpu:
            line += f"  {row['replay_images_per_s']:>12,.0f}"
            line += f"  {row['two_instances_images_per_s']:>11,.0f}"
            ceiling = row["design_ceiling_images_per_s"]
            line += f"  {ceiling:>21,}" if ceiling else f"  {'-':>21}"
        print(line)

    slug = name_slug(device_name())
    what = "engine" if args.fuse_conv else "engine-no-fuse-conv"
    output = claim_result_path(Path(args.json_dir), result_stem(slug, what))
    record = {
        "date": date.today().isoformat(),
        "git_commit": git_commit(),
        "device": device_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "arch": arch,
        "precision": precision,
        "seconds_per_figure": args.seconds,
        "fuse_conv": args.fuse_conv,
        "tiny_cpu_version": not on_gpu,
        "figures": figures,
        "command": "python -m benchmarks.engine_throughput"
        + (f" --model {args.model}" if args.model else "")
        + ("" if args.fuse_conv else " --no-fuse-conv"),
    }
    output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
