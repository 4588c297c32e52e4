"""``python -m benchmarks.tune``: sweep a pipeline's settings and pick the best under a TP99 budget.

A model analyzer in miniature: for every combination of the given settings it starts the
pipelined server with that configuration, drives it at one concurrency with the main job's load
tester, and records QPS and latency. The winner is the highest QPS whose TP99 stays within
``--tp99-ms`` with no failed call.

    python -m benchmarks.tune --config service/configs/resnet50_gpu_decode.toml \\
        --set gpu_decoder.instance_num=1,2 --set resnet50.max=8,32 --workers 4,8 --mps \\
        --concurrency 40 --tp99-ms 15

``--set NODE.KEY=V1,V2`` varies a key of one node (``--set KEY=...`` a top-level key such as
``batching_timeout``); ``--workers`` varies the number of server processes. Without a GPU it is
a quick run (few calls per point). Writes ``<results-dir>/<date>-<device>-<commit>-tune.json``
with every point's configuration text.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import itertools
import json
import logging
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.compare import FULL, QUICK, export_model, run_handler
from benchmarks.gpu_monitor import GpuMonitor
from benchmarks.mps import MpsError, mps_daemon
from benchmarks.report import write_json
from benchmarks.result_files import claim_result_path, git_commit, result_stem
from benchmarks.run_record import device_slug
from clients.client_qps import LoadTestError
from clients.images import DEFAULT_IMG_DIR, load_images
from service.server_process import REPO_ROOT, ServerStartError
from torchpipe_lite.extend import read_toml

logger = logging.getLogger("benchmarks.tune")

Scalar = bool | int | float | str

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Setting:
    """One swept key: ``node`` (None for a top-level key), ``key`` and the values to try."""

    node: str | None
    key: str
    values: tuple[Scalar, ...]

    @property
    def name(self) -> str:
        return self.key if self.node is None else f"{self.node}.{self.key}"


def parse_setting(text: str) -> Setting:
    """``"node.key=1,2"`` or ``"key=1,2"``; values become int, float, bool or string."""
    target, equals, values_text = text.partition("=")
    if not equals or not target.strip() or not values_text.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: expected NODE.KEY=V1,V2 or KEY=V1,V2")
    node, dot, key = target.strip().rpartition(".")
    values = tuple(_scalar(value.strip()) for value in values_text.split(","))
    return Setting(node if dot else None, key, values)


def _scalar(text: str) -> Scalar:
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    if text in ("true", "false"):
        return text == "true"
    return text


def grid(settings: list[Setting], workers: list[int]) -> list[dict[str, Scalar]]:
    """Every combination, as ``{setting name: value, ..., "workers": n}``, in sweep order."""
    names = [setting.name for setting in settings] + ["workers"]
    value_lists = [setting.values for setting in settings] + [tuple(workers)]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*value_lists)]


def apply_point(config: dict[str, Any], settings: list[Setting], point: dict[str, Scalar]) -> dict:
    """A copy of ``config`` with the point's values; ``KeyError`` names an unknown node."""
    result = copy.deepcopy(config)
    for setting in settings:
        if setting.node is None:
            result[setting.key] = point[setting.name]
            continue
        table = result.get(setting.node)
        if not isinstance(table, dict):
            nodes = ", ".join(name for name, value in result.items() if isinstance(value, dict))
            raise KeyError(f"--set {setting.name}: no node [{setting.node}] (nodes: {nodes})")
        table[setting.key] = point[setting.name]
    return result


def render_toml(config: dict[str, Any]) -> str:
    """TOML for a pipeline config: top-level values, then one table per node."""
    lines = [_toml_pair(key, value) for key, value in config.items() if not isinstance(value, dict)]
    for name, table in config.items():
        if isinstance(table, dict):
            lines += ["", f"[{_toml_key(name)}]"]
            lines += [_toml_pair(key, value) for key, value in table.items()]
    return "\n".join(lines) + "\n"


def _toml_pair(key: str, value: Any) -> str:
    return f"{_toml_key(key)} = {_toml_value(value)}"


def _toml_key(key: str) -> str:
    # Bare keys allow letters, digits, "_" and "-"; others (e.g. "model::cache") are quoted.
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a valid TOML basic string (ASCII, escaped)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as a config value")


def best(points: list[dict[str, Any]], tp99_budget_ms: float) -> dict[str, Any] | None:
    """The point with the highest QPS among those with no errors and TP99 within budget."""
    eligible = [
        p
        for p in points
        if p["errors"] == 0 and p["tp99_ms"] is not None and p["tp99_ms"] <= tp99_budget_ms
    ]
    return max(eligible, key=lambda p: p["qps"], default=None)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.tune",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    from service.service_config import DEFAULT_CONFIG

    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the base TOML")
    parser.add_argument(
        "--set",
        dest="settings",
        type=parse_setting,
        action="append",
        default=[],
        metavar="NODE.KEY=V1,V2",
        help="a key to sweep (repeatable)",
    )
    parser.add_argument("--workers", default="1", help="server processes to try, e.g. 4,8")
    parser.add_argument("--concurrency", type=int, default=20, help="concurrent clients")
    parser.add_argument("--tp99-ms", type=float, default=10.0, help="the latency budget")
    parser.add_argument("--total-number", type=int, help="timed calls per point")
    parser.add_argument("--warmup", type=int, help="untimed calls per point")
    parser.add_argument("--processes", type=int, help="client processes")
    parser.add_argument("--mps", action="store_true", help="under a private CUDA MPS daemon")
    parser.add_argument("--model", type=Path, help="model file (default: models/<arch>.onnx)")
    parser.add_argument("--arch", choices=("resnet50", "resnet18"), default="resnet50")
    parser.add_argument("--img-dir", type=Path, default=DEFAULT_IMG_DIR)
    parser.add_argument("--results-dir", type=Path, default=REPO_ROOT / "runs")
    parser.add_argument("--timeout-s", type=float, default=30.0, help="per-call client timeout")
    parser.add_argument("--quick", action="store_true", help="few calls (default without GPU)")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    args = parser.parse_args(argv)
    try:
        args.workers = [int(value) for value in args.workers.split(",")]
    except ValueError:
        parser.error(f"--workers {args.workers!r}: expected integers such as 4,8")
    if min(args.workers) < 1 or args.concurrency < 1:
        parser.error("--workers and --concurrency must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Runs the sweep; exit 0 when some point met the budget, 1 when none did (a point whose
    run broke counts as missing it), 2 for a bad command line."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    gpu = GpuMonitor.open()
    preset = QUICK if (args.quick or not gpu.available) else FULL
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.model = args.model or REPO_ROOT / "models" / f"{args.arch}.onnx"
    base = read_toml(args.config)
    points = grid(args.settings, args.workers)
    try:
        configs = [apply_point(base, args.settings, point) for point in points]
    except KeyError as exc:
        logger.error("%s", exc.args[0])
        return 2
    export_model(args.model, args.arch)
    images = load_images(args.img_dir)
    log_dir = Path(tempfile.mkdtemp(prefix="tune-"))
    logger.info("%d points; configs and server logs in %s", len(points), log_dir)
    results: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        if args.mps:
            try:
                stack.enter_context(mps_daemon())
            except (MpsError, OSError) as exc:
                logger.error("--mps: %s", exc)
                return 2
        for index, (point, config) in enumerate(zip(points, configs, strict=True)):
            results.append(_run_point(args, index, point, config, images, gpu, log_dir))
    winner = best(results, args.tp99_ms)
    print(_table(results, winner, args))
    stem = result_stem(device_slug(gpu), "tune")
    write_json(
        claim_result_path(args.results_dir, stem),
        {
            "date": datetime.date.today().isoformat(),
            "git_commit": git_commit(),
            "device": device_slug(gpu),
            "command": " ".join(["python -m benchmarks.tune", *(argv or sys.argv[1:])]),
            "base_config": str(args.config),
            "concurrency": args.concurrency,
            "tp99_budget_ms": args.tp99_ms,
            "total_number": args.total_number,
            "cuda_mps": args.mps,
            "points": results,
            "best": winner,
        },
    )
    return 0 if winner is not None else 1


def _run_point(
    args: argparse.Namespace,
    index: int,
    point: dict[str, Scalar],
    config: dict[str, Any],
    images: list[bytes],
    gpu: GpuMonitor,
    log_dir: Path,
) -> dict[str, Any]:
    """Serves one configuration and measures it; a broken run is recorded, not fatal."""
    config_path = log_dir / f"point-{index}.toml"
    config_text = render_toml(config)
    config_path.write_text(config_text)
    run_args = argparse.Namespace(
        config=config_path,
        model=args.model,
        workers=int(point["workers"]),
        threads=max(20, args.concurrency),
        concurrency=[args.concurrency],
        total_number=args.total_number,
        warmup=args.warmup,
        processes=args.processes,
        timeout_s=args.timeout_s,
        no_progress=args.no_progress,
    )
    logger.info("point %d: %s", index, point)
    record: dict[str, Any] = {"settings": point, "config_text": config_text}
    point_logs = log_dir / f"point-{index}"
    point_logs.mkdir()
    try:
        rows, _, _ = run_handler("pipelined", run_args, images, gpu, point_logs, ping_check=False)
    except (ServerStartError, LoadTestError) as exc:
        logger.error("point %d failed: %s", index, exc)
        return record | {"qps": 0.0, "tp50_ms": None, "tp99_ms": None, "errors": -1}
    (row,) = rows
    keys = ("qps", "tp50_ms", "tp99_ms", "errors", "server_cpu_percent", "gpu_util_percent")
    return record | {key: row[key] for key in keys}


def _table(results: list[dict[str, Any]], winner: dict | None, args: argparse.Namespace) -> str:
    names = list(results[0]["settings"]) if results else []
    header = "  ".join(f"{name:>22}" for name in names) + f"{'QPS':>10}{'TP99 ms':>9}{'errors':>7}"
    lines = [header, "-" * len(header)]
    for result in results:
        tp99 = result["tp99_ms"]
        lines.append(
            "  ".join(f"{result['settings'][name]!s:>22}" for name in names)
            + f"{result['qps']:>10.1f}{(f'{tp99:.2f}' if tp99 is not None else '-'):>9}"
            + f"{result['errors']:>7}"
            + ("  <- best" if result is winner else "")
        )
    if winner is None:
        lines.append(f"no point kept TP99 within {args.tp99_ms} ms without errors")
    else:
        lines.append(
            f"best within TP99 {args.tp99_ms} ms at {args.concurrency} clients: "
            f"{winner['settings']} ({winner['qps']:.1f} QPS)"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
