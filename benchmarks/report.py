"""The main job's outputs: the reference-style table, the JSON record, bar chart and sweep curve.

python -m benchmarks.report RESULT.json [--sweep]   # (re)draws the PNGs of a record
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import re
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: The reference's published figures (RTX 3080, 36 cores, 20 concurrent clients); the reference
#: did not publish GPU/CPU/memory figures alongside these, so they stay empty here.
REFERENCE_SETUP = "RTX 3080 + 36 CPU cores, 20 concurrent clients (TorchPipe's published table)"
REFERENCE_ROWS: tuple[dict[str, Any], ...] = (
    {
        "handler": "baseline",
        "server_processes": 1,
        "concurrency": 20,
        "qps": 747.92,
        "tp50_ms": 26.74,
        "tp99_ms": 35.24,
    },
    {
        "handler": "torchpipe",
        "server_processes": 1,
        "concurrency": 20,
        "qps": 2172.54,
        "tp50_ms": 8.89,
        "tp99_ms": 14.28,
    },
)

#: One row of results per handler and concurrency: the keys every row of the JSON has.
ROW_KEYS = (
    "handler",
    "concurrency",
    "server_processes",
    "requests",
    "qps",
    "tp50_ms",
    "tp90_ms",
    "tp99_ms",
    "mean_ms",
    "errors",
    "server_cpu_percent",
    "server_rss_mib",
    "gpu_util_percent",
)

SWEEP_COLUMNS = ("handler", "concurrency", "qps", "tp50_ms", "tp90_ms", "tp99_ms", "mean_ms")


def _cell(value: Any, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _line(label: str, row: dict[str, Any]) -> str:
    return (
        f"{label:<24}{_cell(row.get('server_processes'), 'd'):>6}{row['concurrency']:>6}"
        f"{_cell(row.get('qps'), '.2f'):>10}"
        f"{_cell(row.get('tp50_ms'), '.2f'):>9}{_cell(row.get('tp99_ms'), '.2f'):>9}"
        f"{_cell(row.get('gpu_util_percent'), '.0f', '%'):>9}"
        f"{_cell(row.get('server_cpu_percent'), '.0f', '%'):>9}"
        f"{_cell(row.get('server_rss_mib'), '.0f', ' MiB'):>11}"
        f"{_cell(row.get('errors'), 'd'):>8}"
    )


def format_table(
    rows: list[dict[str, Any]], *, setup: str, against: Sequence[str] | None = None
) -> str:
    """This run's rows beside the reference's, one line per handler and concurrency.

    ``against``: the handlers the pipelined rows are divided by (the peers of
    ``benchmarks.peers``); then TorchPipe's reference table, which compares against the
    locked baseline, is left out. Default: the baseline, and the reference shown.
    """
    header = (
        f"{'method':<24}{'procs':>6}{'conc.':>6}{'QPS':>10}{'TP50 ms':>9}{'TP99 ms':>9}"
        f"{'GPU util':>9}{'CPU util':>9}{'memory':>11}{'errors':>8}"
    )
    lines = [f"this run: {setup}", header, "-" * len(header)]
    lines += [_line(row["handler"], row) for row in rows]
    for other, label, ratio in _speedups(rows, with_reference=False, against=against):
        lines.append(f"  pipelined / {other}, {label}: {ratio:.2f}x QPS")
    if against is None:
        lines += ["", f"reference: {REFERENCE_SETUP}", header, "-" * len(header)]
        lines += [_line(row["handler"], row) for row in REFERENCE_ROWS]
        ratio = REFERENCE_ROWS[1]["qps"] / REFERENCE_ROWS[0]["qps"]
        lines.append(f"  torchpipe / baseline at 20: {ratio:.2f}x QPS")
    lines.append(
        "procs: server processes (ratios only between rows with the same count); CPU util: "
        "server process tree, % of one core; memory: its peak RSS."
    )
    return "\n".join(lines)


def name_slug(name: str) -> str:
    """A device name as it appears in result file names: ``NVIDIA H200`` -> ``nvidia-h200``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def write_json(path: Path, record: dict[str, Any]) -> None:
    """Writes the run's record (``date``, ``device``, ... ``results``) as indented JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
    logger.info("wrote %s", path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def _speedups(
    rows: list[dict[str, Any]],
    *,
    with_reference: bool = True,
    against: Sequence[str] | None = None,
) -> list[tuple[str, str, float]]:
    """(other handler, ``<procs>p c=<clients>``, ratio): pipelined QPS / the baseline's (or each
    handler's of ``against``) at each concurrency both ran with the same number of server
    processes (a ratio between different process counts is not a speed-up), then, against the
    baseline, the reference's."""
    by_key = {(r["handler"], r["concurrency"], r.get("server_processes", 1)): r for r in rows}
    triples = []
    for other in ("baseline",) if against is None else tuple(against):
        for (handler, concurrency, processes), row in by_key.items():
            base = by_key.get((other, concurrency, processes))
            if handler == "pipelined" and base and base["qps"] and row["qps"]:
                triples.append((other, f"{processes}p c={concurrency}", row["qps"] / base["qps"]))
    if with_reference and against is None:
        ratio = REFERENCE_ROWS[1]["qps"] / REFERENCE_ROWS[0]["qps"]
        triples.append(("reference", "reference\n1p c=20", ratio))
    return triples


#: Bar colours: ours blue, the locked baseline grey, each peer its own.
_COLORS = {"pipelined": "tab:blue", "baseline": "tab:gray"}
_PEER_COLORS = ("tab:gray", "tab:green", "tab:purple", "tab:brown")


def _color(handler: str, handlers: list[str]) -> str:
    if handler in _COLORS:
        return _COLORS[handler]
    others = [h for h in handlers if h not in _COLORS]
    return _PEER_COLORS[others.index(handler) % len(_PEER_COLORS)]


def plot_bars(
    path: Path, rows: list[dict[str, Any]], *, title: str, against: Sequence[str] | None = None
) -> None:
    """Bar charts of this run: QPS, TP50/TP99 per handler and concurrency, and the speed-up of
    pipelined over baseline beside the reference's (the figure comparable across machines), or
    over each handler of ``against`` (the peers; no reference)."""
    plt = _pyplot()
    names = [f"{r['handler']}\n{r.get('server_processes', 1)}p c={r['concurrency']}" for r in rows]
    handlers = list(dict.fromkeys(r["handler"] for r in rows))
    colors = [_color(r["handler"], handlers) for r in rows]
    positions = list(range(len(rows)))
    fig, (ax_qps, ax_lat, ax_gain) = plt.subplots(
        1, 3, figsize=(max(12, 2.2 * len(rows) + 5), 4.8), width_ratios=(2, 2, 1)
    )
    ax_qps.bar(positions, [r["qps"] or 0 for r in rows], color=colors)
    ax_qps.set_title("throughput (QPS, higher is better)", fontsize=10)
    width = 0.4
    for offset, key, alpha in ((-width / 2, "tp50_ms", 1.0), (width / 2, "tp99_ms", 0.45)):
        values = [r.get(key) or 0 for r in rows]
        ax_lat.bar([p + offset for p in positions], values, width, color=colors, alpha=alpha)
    ax_lat.set_title("latency ms (TP50 solid, TP99 pale)", fontsize=10)
    for ax in (ax_qps, ax_lat):
        ax.set_xticks(positions, names, fontsize=8)
    gains = _speedups(rows, against=against)
    labels = [label if against is None else f"/ {other}\n{label}" for other, label, _ in gains]
    ax_gain.bar(
        range(len(gains)),
        [g for _, _, g in gains],
        color=["tab:orange" if other == "reference" else "tab:blue" for other, _, _ in gains],
    )
    ax_gain.axhline(1.0, color="black", linewidth=0.8)
    ax_gain.set_xticks(range(len(gains)), labels, fontsize=8)
    ax_gain.set_title(f"pipelined / {'baseline' if against is None else 'peer'} QPS", fontsize=10)
    for index, (_, _, gain) in enumerate(gains):
        ax_gain.annotate(f"{gain:.2f}x", (index, gain), ha="center", va="bottom", fontsize=8)
    fig.suptitle(textwrap.fill(title, 140), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    logger.info("wrote %s", path)


def write_sweep_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """The concurrency sweep as CSV, one line per handler and concurrency."""
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=SWEEP_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    logger.info("wrote %s", path)


def plot_sweep(png_path: Path, rows: list[dict[str, Any]], *, title: str) -> None:
    """The concurrency sweep as throughput and latency curves per handler."""
    plt = _pyplot()
    fig, (ax_qps, ax_lat) = plt.subplots(1, 2, figsize=(10, 4.5))
    handlers = list(dict.fromkeys(row["handler"] for row in rows))
    for handler in handlers:
        color = _color(handler, handlers)
        mine = sorted((r for r in rows if r["handler"] == handler), key=lambda r: r["concurrency"])
        levels = [r["concurrency"] for r in mine]
        ax_qps.plot(levels, [r["qps"] for r in mine], marker="o", color=color, label=handler)
        for key, style in (("tp50_ms", "-"), ("tp99_ms", "--")):
            values = [float("nan") if r[key] is None else r[key] for r in mine]
            label = f"{handler} {key[:4].upper()}"
            ax_lat.plot(levels, values, style, marker="o", color=color, label=label)
    ax_qps.set(title="throughput", xlabel="concurrent clients", ylabel="QPS")
    ax_lat.set(title="latency", xlabel="concurrent clients", ylabel="ms")
    all_levels = sorted({row["concurrency"] for row in rows})
    for ax in (ax_qps, ax_lat):
        ax.set_xscale("log", base=2)
        ax.set_xticks(all_levels, [str(level) for level in all_levels])
        ax.minorticks_off()
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(textwrap.fill(title, 120), fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    logger.info("wrote %s", png_path)


def write_outputs(record: dict[str, Any], json_path: Path, *, sweep: bool) -> None:
    """Writes the record's JSON, its bar chart beside it (``.png``) and, for a sweep, the
    ``-sweep.csv`` and ``-sweep.png``. Without matplotlib the PNGs are skipped, loudly. A
    record with ``ratios_against`` (``benchmarks.peers``) is charted against those handlers."""
    write_json(json_path, record)
    stem = json_path.with_suffix("")
    if sweep:
        write_sweep_csv(Path(f"{stem}-sweep.csv"), record["results"])
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        logger.error(
            "matplotlib is not installed here: no PNG written. Draw them where it is with: "
            "python -m benchmarks.report %s%s",
            json_path,
            " --sweep" if sweep else "",
        )
        return
    title = record.get("setup", "")
    against = record.get("ratios_against")
    plot_bars(json_path.with_suffix(".png"), record["results"], title=title, against=against)
    if sweep:
        plot_sweep(Path(f"{stem}-sweep.png"), record["results"], title=title)


def main(argv: list[str] | None = None) -> int:
    """(Re)draws the charts of a record written by ``benchmarks.compare``."""
    parser = argparse.ArgumentParser(description="Draw the PNGs of a benchmarks.compare JSON.")
    parser.add_argument("record", type=Path, help="results/<date>-<device>.json")
    parser.add_argument("--sweep", action="store_true", help="also the sweep CSV and curve")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    record = json.loads(args.record.read_text())
    against = record.get("ratios_against")
    print(format_table(record["results"], setup=record.get("setup", ""), against=against))
    write_outputs(record, args.record, sweep=args.sweep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
