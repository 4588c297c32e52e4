"""GPU check: both handlers on CUDA give the CPU's top-1 for the same model file and images.

    python -m service.tools.gpu_check [--model models/resnet50.onnx] [--out build/gpu_check]

Starts, one after another, real ``python -m service`` processes: a CPU reference (the
baseline with ``--device cpu``, fp32), then the baseline, the pipelined handler and the
pipelined GPU-decode pipeline on CUDA (fp16, CUDA graphs). Each classifies every photograph
with ``infer_topk(k=1000)``. A GPU top-1 passes when it equals the CPU's, or when the CPU's
logits for the two classes are within ``--tie-logit-gap`` (a near tie that fp16 may flip,
reported as such; seeded random weights give flat, tie-prone outputs). Also checked: each
CUDA server's log shows TorchTensor on a CUDA device, ``stats().device`` names the GPU, and
SIGTERM ends every server with exit code 0.
Prints a table, writes ``gpu_check.json`` and the server logs under ``--out``; exits 0 when
everything passed, 1 otherwise, 2 without CUDA.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
from pathlib import Path

from service.gen.inference.ttypes import InferenceParams
from service.model_file import ensure_model
from service.server_process import REPO_ROOT, ServerProcess, free_port, service_command
from service.service_config import DEFAULT_CONFIG
from service.thrift_client import connect

logger = logging.getLogger(__name__)

GPU_DECODE_CONFIG = DEFAULT_CONFIG.with_name("resnet50_gpu_decode.toml")
CUDA_ENGINE_LINE = re.compile(r"TorchTensor .* device cuda")

#: (run name, handler, config, extra flags). The first run is the CPU reference.
RUNS = (
    ("cpu-reference", "baseline", DEFAULT_CONFIG, ("--device", "cpu")),
    ("baseline-cuda", "baseline", DEFAULT_CONFIG, ()),
    ("pipelined-cuda", "pipelined", DEFAULT_CONFIG, ()),
    ("pipelined-gpu-decode", "pipelined", GPU_DECODE_CONFIG, ()),
)


def classify_all(port: int, images: dict[str, bytes]) -> dict[str, list[float]]:
    """Each image's 1000 class probabilities, by class index."""
    scores = {}
    with connect("127.0.0.1", port, timeout_s=120) as connection:
        for name, data in images.items():
            predictions = connection.client.infer_topk(InferenceParams(name, data), 1000)
            by_index = [0.0] * len(predictions)
            for prediction in predictions:
                by_index[prediction.index] = prediction.score
            scores[name] = by_index
    return scores


def run_server(name: str, handler: str, config: Path, flags, model: Path, images, out: Path):
    """One server's probabilities, device, CUDA-engine log evidence and exit code."""
    port = free_port()
    command = service_command(handler, port, config=config, model=model) + list(flags)
    server = ServerProcess(command, host="127.0.0.1", port=port, log_path=out / f"{name}.log")
    with server:
        server.start(ready_timeout_s=600)
        scores = classify_all(server.port, images)
        with connect("127.0.0.1", server.port) as connection:
            device = connection.client.stats().device
        exit_code = server.stop(timeout_s=60)
    log = server.log_path.read_text(errors="replace")
    return {
        "scores": scores,
        "device": device,
        "cuda_engine_logged": bool(CUDA_ENGINE_LINE.search(log)),
        "exit_code": exit_code,
    }


def argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def compare(reference: dict[str, list[float]], run: dict, tie_logit_gap: float) -> dict[str, str]:
    """Per image: "same", "near tie (...)" or "DIFFERENT (...)"."""
    verdicts = {}
    for image, cpu in reference.items():
        cpu_top, gpu_top = argmax(cpu), argmax(run["scores"][image])
        # The logit gap is the log of the probability ratio (softmax shares the denominator).
        gap = math.log(cpu[cpu_top] / cpu[gpu_top]) if cpu[gpu_top] > 0 else math.inf
        if gpu_top == cpu_top:
            verdicts[image] = "same"
        elif gap <= tie_logit_gap:
            verdicts[image] = f"near tie ({cpu_top} vs {gpu_top}, CPU logit gap {gap:.3f})"
        else:
            verdicts[image] = f"DIFFERENT ({cpu_top} vs {gpu_top}, CPU logit gap {gap:.3f})"
    return verdicts


#: The photographs compared by default: the repository's sample images.
DEFAULT_IMAGES = REPO_ROOT / "tests" / "data" / "images"


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m service.tools.gpu_check",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    default_model = REPO_ROOT / "models" / "resnet50.onnx"
    parser.add_argument("--model", type=Path, default=default_model)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "gpu_check")
    parser.add_argument(
        "--tie-logit-gap",
        type=float,
        default=0.05,
        help="largest CPU logit gap between two classes accepted as a near tie",
    )
    parser.add_argument(
        "--skip-gpu-decode",
        action="store_true",
        help="leave out the nvJPEG pipeline (resnet50_gpu_decode.toml)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    import torch

    if not torch.cuda.is_available():
        print("gpu_check needs a CUDA device; none is visible here", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    model = args.model.absolute()
    ensure_model(
        model, user_given=args.model != default_model
    )  # once, before the servers start, so that they all load this file
    images = {p.stem: p.read_bytes() for p in sorted(args.images.glob("*.jpg"))}
    if not images:
        print(f"gpu_check: no .jpg images in {args.images}", file=sys.stderr)
        return 2
    runs = [r for r in RUNS if not (args.skip_gpu_decode and r[2] == GPU_DECODE_CONFIG)]
    results = {}
    for name, handler, config, flags in runs:
        logger.info("=== %s: %s handler, %s %s", name, handler, config.name, " ".join(flags))
        results[name] = run_server(name, handler, config, flags, model, images, args.out)

    reference = results["cpu-reference"]["scores"]
    failures = []
    if results["cpu-reference"]["exit_code"] != 0:
        failures.append(f"cpu-reference exited with {results['cpu-reference']['exit_code']}")
    report = {"model": str(model), "gpu": torch.cuda.get_device_name(0), "runs": {}}
    print(f"\nmodel {model}, GPU {report['gpu']}, {len(images)} images")
    for name, run in results.items():
        if name == "cpu-reference":
            continue
        verdicts = compare(reference, run, args.tie_logit_gap)
        max_diff = max(
            abs(a - b)
            for image in images
            for a, b in zip(reference[image], run["scores"][image], strict=True)
        )
        report["runs"][name] = {
            "device": run["device"],
            "cuda_engine_logged": run["cuda_engine_logged"],
            "exit_code": run["exit_code"],
            "max_probability_diff_vs_cpu": max_diff,
            "top1": verdicts,
        }
        print(
            f"\n{name}: device {run['device']}; CUDA engine in log: {run['cuda_engine_logged']}; "
            f"exit code {run['exit_code']}; max |p_gpu - p_cpu| {max_diff:.2e}"
        )
        for image, verdict in verdicts.items():
            print(f"  {image:22s} top-1 {argmax(reference[image]):4d}  {verdict}")
        if not run["device"].startswith("cuda") or not run["cuda_engine_logged"]:
            failures.append(f"{name} did not run its engine on CUDA")
        if run["exit_code"] != 0:
            failures.append(f"{name} exited with {run['exit_code']} after SIGTERM")
        failures += [f"{name}/{i}: {v}" for i, v in verdicts.items() if v.startswith("DIFF")]
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out / 'gpu_check.json'} and the server logs in {args.out}")
    print("FAILED:\n  " + "\n  ".join(failures) if failures else "PASSED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
