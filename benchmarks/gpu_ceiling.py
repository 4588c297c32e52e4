"""What one process can do on the GPU box without RPC or scheduler: the ceiling to measure against.

``python -m benchmarks.gpu_ceiling [--json FILE] [--quick] [--device cuda|cpu]
[--batches 8,16,32] [--model FILE] [--img-dir DIR] [--burners 2,8] [--burst-us 200]``

The project's own stages, called directly on the benchmark photographs (the load tester's:
640 px, q95): the GPU image stage ``SyncTensor[Sequential[DecodeTensor,ResizeTensor,
CvtColorTensor]]`` to 224x224 RGB, and the model stage ``SyncTensor[TorchTensor]`` set up as
the GPU-decode config's model node (fp16, CUDA graphs; one instance per batch size). Rows:

- ``image stage``, ``model``: each stage alone, per batch size;
- ``image stage parts``: its decode step alone and decode + resize, at the largest batch;
- ``decode: ...``: the decoders side by side, per batch size (torchvision's batched nvJPEG,
  nvImageCodec's hardware-engine and hybrid backends where ``nvidia.nvimgcodec`` imports) and
  OpenCV / torchvision on the CPU at the largest batch;
- ``two threads``: the image stage on one thread, the model on another, a queue between them;
- ``two threads + N burners``: the same while N more Python threads each hold the interpreter
  in bursts of ``--burst-us`` (pure Python, then a sleep(0) that lets go of the lock), as
  per-request RPC and handler work does;
- ``image stage under model``: the image stage while another thread runs the model nonstop;
- ``stage python``: the image stage's own per-batch Python, CUDA calls stood in for
  (benchmarks/stage_python.py).

Each figure is the median of a few repeats of a bounded number of batches after a warm-up:
images/s and ms per batch. ``--device cpu`` (the default without CUDA) is a smoke mode: the CPU
image stages (``Sequential[DecodeMat,ResizeMat,CvtColorMat,Mat2Tensor]``), a ResNet18 on the
CPU, and "no CUDA" for the GPU decoders.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

import torch

import torchpipe_lite as tp
from benchmarks import stage_python
from benchmarks.ceiling_decoders import Step, decoder_steps, nvimgcodec_version
from benchmarks.ceiling_timing import (
    FULL,
    QUICK,
    Burners,
    Plan,
    model_batch,
    pipelined_ms,
    repeat_ms,
    stage_batch,
    under_model_ms,
)
from benchmarks.decode_throughput import GPU_STAGE, STAGE_PARAMS
from benchmarks.run_record import git_commit
from benchmarks.stage_contention import MODEL_CONFIG, STAGES
from benchmarks.synchronised import parse_counts
from clients.images import DEFAULT_IMG_DIR, load_images
from service.server_process import REPO_ROOT

logger = logging.getLogger("benchmarks.gpu_ceiling")

MODEL_STAGE = STAGES["model"]
DEFAULT_MODEL = REPO_ROOT / "models" / "resnet50.onnx"
STAGE_PYTHON_ROW = "stage python (CPU, CUDA stood in for)"
#: The image stage's steps, alone and in part, for the "image stage parts" rows.
GPU_STAGE_PARTS = {
    "decode step": "SyncTensor[DecodeTensor]",
    "decode + resize": "SyncTensor[Sequential[DecodeTensor,ResizeTensor]]",
}


def figure(row: str, batch: int, per_repeat_ms: list[float], **extra: Any) -> dict[str, Any]:
    """One measured row: the median ms per batch of its repeats, and images/s from it."""
    median_ms = statistics.median(per_repeat_ms)
    return {
        "row": row,
        "batch": batch,
        "status": "ok",
        "images_per_s": 1000 * batch / median_ms,
        "ms_per_batch": median_ms,
        "repeats_ms": per_repeat_ms,
        **extra,
    }


def not_measured(row: str, batch: int, status: str) -> dict[str, Any]:
    return {
        "row": row,
        "batch": batch,
        "status": status,
        "images_per_s": None,
        "ms_per_batch": None,
    }


@dataclass
class Setup:
    """What the rows run: the stages, the photographs and how long each figure runs."""

    on_gpu: bool
    images: list[bytes]
    batches: list[int]
    plan: Plan
    image_stage_expr: str
    image_stage: tp.Backend
    models: dict[int, tp.Backend]  # one model-stage instance per batch size
    model_inputs: dict[int, list[dict[str, Any]]]  # image-stage outputs, per batch size
    burners: list[int]
    burst_s: float


def model_params(model: Path, batch: int, on_gpu: bool) -> dict[str, Any]:
    """The GPU-decode config's model-node parameters (``engine_params``), for ``batch``."""
    from service.service_config import load_service_config

    config = load_service_config(
        MODEL_CONFIG, model_override=model, device_override=None if on_gpu else "cpu"
    )
    return config.engine_params(batch)


def build(args: argparse.Namespace, model: Path) -> Setup:
    on_gpu = args.device == "cuda"
    images = load_images(args.img_dir)
    expr = GPU_STAGE if on_gpu else STAGES["cpu"]
    image_stage = tp.create_backend(expr, {**STAGE_PARAMS, "max": max(args.batches)})
    models, inputs = {}, {}
    for batch in args.batches:
        logger.info("model stage for batch %d (%s)", batch, model)
        models[batch] = tp.create_backend(MODEL_STAGE, model_params(model, batch, on_gpu))
        outputs = stage_batch(image_stage, images, batch, 0)
        inputs[batch] = [{"data": item["result"]} for item in outputs]
    return Setup(
        on_gpu=on_gpu,
        images=images,
        batches=args.batches,
        plan=QUICK if args.quick else FULL,
        image_stage_expr=expr,
        image_stage=image_stage,
        models=models,
        model_inputs=inputs,
        burners=args.burners,
        burst_s=args.burst_us / 1e6,
    )


def measure_rows(setup: Setup) -> list[dict[str, Any]]:
    """Every row, in the order of the module's docstring."""
    plan, images, stage = setup.plan, setup.images, setup.image_stage
    largest = max(setup.batches)
    rows = []

    def stage_step(backend: tp.Backend, batch: int) -> Step:
        return lambda k: stage_batch(backend, images, batch, k)

    for batch in setup.batches:
        logger.info("image stage and model alone, batch %d", batch)
        rows.append(figure("image stage", batch, repeat_ms(stage_step(stage, batch), plan)))
        model_step = model_batch(setup.models[batch], setup.model_inputs[batch])
        rows.append(figure("model", batch, repeat_ms(model_step, plan)))
    for name, expr in GPU_STAGE_PARTS.items():
        row = f"image stage parts: {name}"
        if not setup.on_gpu:
            rows.append(not_measured(row, largest, "no CUDA"))
            continue
        part = tp.create_backend(expr, {**STAGE_PARAMS, "max": largest})
        rows.append(figure(row, largest, repeat_ms(stage_step(part, largest), plan), stage=expr))
        part.close()
    for batch in setup.batches:
        logger.info("decoders, batch %d", batch)
        steps = decoder_steps(images, batch, setup.on_gpu, cpu_decoders=batch == largest)
        for name, step in steps.items():
            row = f"decode: {name}"
            if isinstance(step, str):
                rows.append(not_measured(row, batch, step))
            else:
                rows.append(figure(row, batch, repeat_ms(step, plan)))
    for batch in setup.batches:
        model = setup.models[batch]
        logger.info("two threads, batch %d", batch)
        rows.append(figure("two threads", batch, pipelined_ms(stage, model, images, batch, plan)))
        for count in setup.burners:
            with Burners(count, setup.burst_s):
                per_repeat = pipelined_ms(stage, model, images, batch, plan)
            rows.append(figure(f"two threads + {count} burners", batch, per_repeat))
        per_repeat = under_model_ms(stage, model, setup.model_inputs[batch], images, batch, plan)
        rows.append(figure("image stage under model", batch, per_repeat))
    for found in stage_python.measure(images, setup.batches, plan.repeats + 2):
        per_repeat = [us / 1000 for us in found["repeats_us"]]
        row = figure(STAGE_PYTHON_ROW, found["batch"], per_repeat)
        rows.append({**row, "cpu_us_per_batch": found["cpu_us_per_batch"]})
    return rows


def record(args: argparse.Namespace, setup: Setup, model: Path, rows: list[dict]) -> dict:
    import torchvision

    on_gpu = setup.on_gpu
    images = setup.images
    return {
        "benchmark": "gpu_ceiling",
        "date": date.today().isoformat(),
        "git_commit": git_commit(),
        "device": torch.cuda.get_device_name(0) if on_gpu else "cpu",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda,
        "nvimgcodec": nvimgcodec_version(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "quick": args.quick,
        "plan": asdict(setup.plan),
        "images": len(images),
        "image_mean_kib": sum(map(len, images)) / len(images) / 1024,
        "img_dir": str(args.img_dir),
        "image_stage": setup.image_stage_expr,
        "model_stage": MODEL_STAGE,
        "model": str(model),
        "model_config": str(MODEL_CONFIG.relative_to(REPO_ROOT)),
        "burst_us": args.burst_us,
        "gpu_memory_mib_max": torch.cuda.max_memory_allocated() / 2**20 if on_gpu else None,
        "rows": rows,
        "command": " ".join(["python -m benchmarks.gpu_ceiling", *sys.argv[1:]]),
    }


def print_rows(device: str, rows: list[dict]) -> None:
    print(f"\nOne process's ceiling, {device}")
    print(f"{'row':<48} {'batch':>5} {'images/s':>9} {'ms/batch':>9}")
    for row in rows:
        if row["status"] == "ok":
            figures = f"{row['images_per_s']:>9,.0f} {row['ms_per_batch']:>9.2f}"
        else:
            figures = f"  {row['status']}"
        print(f"{row['row']:<48} {row['batch']:>5} {figures}")


def plot(record: dict[str, Any], path: Path) -> None:
    """A bar per measured row (images/s, its batch in the label) to ``path``; the stage-python
    rows, which count interpreter time only, are left to the JSON."""
    from benchmarks.report import _pyplot

    rows = [r for r in record["rows"] if r["status"] == "ok" and r["row"] != STAGE_PYTHON_ROW]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(rows) + 1.5))
    positions = range(len(rows))
    ax.barh(positions, [r["images_per_s"] for r in rows], color="tab:blue")
    ax.set_yticks(positions, [f"{r['row']} (batch {r['batch']})" for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("images/s (median of repeats)")
    for position, row in zip(positions, rows, strict=True):
        label = f" {row['images_per_s']:,.0f}"
        ax.annotate(label, (row["images_per_s"], position), va="center", fontsize=6)
    title = f"One process's ceiling: {record['device']}, torch {record['torch']}, {record['date']}"
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(record: dict[str, Any], json_path: Path) -> None:
    """The record's JSON and, where matplotlib imports, its chart beside it (``.png``)."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {json_path}")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        logger.error(
            "matplotlib is not installed here: no PNG. Draw it where it is with: "
            "python -m benchmarks.gpu_ceiling --plot %s",
            json_path,
        )
        return
    plot(record, json_path.with_suffix(".png"))
    print(f"wrote {json_path.with_suffix('.png')}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_ceiling")
    parser.add_argument("--json", type=Path, help="write the record here (and a .png beside)")
    parser.add_argument("--plot", type=Path, help="only draw the .png of this record")
    parser.add_argument("--quick", action="store_true", help="fewer batches per figure")
    parser.add_argument(
        "--device", choices=("cuda", "cpu"), help="default: cuda where there is one"
    )
    parser.add_argument("--batches", type=parse_counts, help="default 8,16,32 (CPU: 2, or 2,8)")
    parser.add_argument("--model", type=Path, help="ONNX model (default: see the module doc)")
    parser.add_argument("--img-dir", type=Path, default=DEFAULT_IMG_DIR)
    parser.add_argument("--burners", type=parse_counts, default=[2, 8], help="e.g. 2,8")
    parser.add_argument("--burst-us", type=float, default=200.0, help="each burner's burst")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    if args.device is None:
        args.device = "cuda" if cuda else "cpu"
    if args.device == "cuda" and not cuda:
        parser.error("--device cuda: no CUDA device here (--device cpu is the smoke mode)")
    if args.batches is None:
        args.batches = [8, 16, 32] if args.device == "cuda" else [2] if args.quick else [2, 8]
    if args.model is not None and not args.model.is_file():
        parser.error(f"--model {args.model}: no such file")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = parse_args(argv)
    if args.plot:
        plot(json.loads(args.plot.read_text()), args.plot.with_suffix(".png"))
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model
        if model is None and args.device == "cuda":
            from service.model_file import ensure_model

            model = DEFAULT_MODEL
            ensure_model(model)  # exports the shipped model (random weights) when missing
        elif model is None:  # the CPU smoke mode: a smaller network, exported here
            from service.tools.export_model import export_classifier

            model = export_classifier("resnet18", Path(scratch) / "resnet18.onnx")
        setup = build(args, model)
        rows = measure_rows(setup)
        result = record(args, setup, model, rows)
        for backend in [setup.image_stage, *setup.models.values()]:
            backend.close()
    print_rows(result["device"], rows)
    if args.json:
        write_outputs(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
