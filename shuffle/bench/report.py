"""How a benchmark run is shown: a text table, JSON with a machine header, and an optional plot."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List, Sequence

import psutil

from shuffle.bench.results import Row
from shuffle.bench.runner import BenchOptions

__all__ = ["machine_header", "format_table", "format_markdown", "write_json", "write_plot"]

_PACKAGES = ("shuffle", "numpy", "msgpack", "cloudpickle", "lz4", "zstandard", "psutil",
             "Cython", "pyspark", "dask", "matplotlib")


def machine_header() -> Dict[str, Any]:
    """Cores, memory, Python and package versions: what a reader needs to compare runs."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    from shuffle import kernels
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "cpu": platform.processor() or _cpu_model(),
        "cores_logical": psutil.cpu_count(logical=True),
        "cores_physical": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "kernels": "python twins" if kernels.PURE_PYTHON else "cython",
        "versions": versions,
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


_COLUMNS = [("workload", 8), ("system", 9), ("mode", 17), ("write", 10), ("seconds", 8), ("Mrec/s", 7),
            ("MB shuf", 8), ("MB/s", 7), ("spills", 6), ("RSS MB", 7), ("startup", 7), ("ratios", 0)]


def format_row(row: Row) -> str:
    ratios = "  ".join(f"{value:.2f}x {system}"
                       for system, value in row.ratios.items())
    cells = [row.workload, row.system, row.mode, row.write_mode or "-", f"{row.seconds:.2f}",
             f"{row.records_per_s / 1e6:.2f}", f"{row.mb_shuffled:.1f}" if row.mb_shuffled else "-",
             f"{row.mb_per_s:.1f}" if row.mb_per_s else "-", str(row.spills) if row.system == "shuffle" else "-",
             f"{row.peak_rss_total_mb:.0f}", f"{row.startup_s:.1f}" if row.startup_s else "-", ratios]
    return "  ".join(cell.ljust(width) for cell, (_, width) in zip(cells, _COLUMNS)).rstrip()


def format_header() -> str:
    return "  ".join(name.ljust(width) for name, width in _COLUMNS).rstrip()


def format_table(rows: Sequence[Row]) -> str:
    return "\n".join([format_header()] + [format_row(row) for row in rows])


def format_markdown(rows: Sequence[Row], against: Sequence[str] = ("baseline", "pyspark", "dask")) -> str:
    """A Markdown table: one row per system and workload, with its ratio to each of ``against``."""
    present = [name for name in against if any(name in row.ratios for row in rows)]
    header = ["workload", "system", "seconds", "M records/s", "MB shuffled", "peak RSS MB"] + \
        [f"vs {name}" for name in present]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        system = f"shuffle ({row.mode}, {row.write_mode})" if row.system == "shuffle" else (
            f"{row.system} ({row.mode})" if row.system in ("baseline", "disk") else f"{row.system} {row.mode}")
        cells = [row.workload, system, f"{row.seconds:.2f}", f"{row.records_per_s / 1e6:.2f}",
                 f"{row.mb_shuffled:.1f}" if row.mb_shuffled else "-", f"{row.peak_rss_total_mb:.0f}"]
        cells += [f"{row.ratios[name]:.2f}x" if name in row.ratios else "-" for name in present]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_json(path: Path, options: BenchOptions, rows: Sequence[Row]) -> None:
    """Machine header, the options, and every row; written whole or not at all."""
    document = {
        "machine": machine_header(),
        "options": {k: (list(v) if isinstance(v, tuple) else v)
                    for k, v in vars(options).items() if k != "cache_dir"},
        "rows": [row.as_dict() for row in rows],
    }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(document, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def write_plot(path: Path, rows: Sequence[Row]) -> None:
    """Throughput (million records/s) by workload, one bar per system and mode; needs matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("--plot needs matplotlib: pip install matplotlib") from None
    workloads: List[str] = list(dict.fromkeys(row.workload for row in rows))
    series: List[str] = list(dict.fromkeys(_series(row) for row in rows))
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(workloads)), 4))
    for i, name in enumerate(series):
        heights = [next((r.records_per_s / 1e6 for r in rows if r.workload == w and _series(r) == name), 0.0)
                   for w in workloads]
        ax.bar([x + i * width for x in range(len(workloads))], heights, width, label=name)
    ax.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(workloads))], workloads)
    ax.set_yscale("log")  # the columnar path and the disk are 10-100x the object path
    ax.set_ylabel("million records / s (log scale)")
    ax.set_title("shuffle bench: throughput by workload (higher is better)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _series(row: Row) -> str:
    return f"{row.system} {row.mode}" if row.system == "shuffle" else row.system
