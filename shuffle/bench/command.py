"""``shuffle bench``: the command-line face of the harness (options, progress lines, files written)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any, List

from shuffle.errors import ConfigError

__all__ = ["add_bench_parser"]

MODES = ("auto", "bypass", "serialized", "sort")
PEERS = ("pyspark", "dask", "duckdb", "polars")


def add_bench_parser(commands: Any, positive_int: Any) -> None:
    """Register ``bench`` on the ``shuffle`` command's subparsers."""
    bench = commands.add_parser(
        "bench", help="run workloads W1-W5 against their single-process baselines (and peers)",
        description="W1 reduce_by_key, W2 group_by_key, W3 partition_by, W4 sort_by_key, W5 word count; "
                    "every run is checked against the single-process baseline measured in the same invocation.")
    bench.add_argument("--workload", action="append", metavar="W", type=_workloads,
                       help="W1..W5, repeatable or comma-separated (default: all)")
    bench.add_argument("--records", type=positive_int, help="rows of W1-W4 (default 10,000,000; W5 words are half)")
    bench.add_argument("--quick", action="store_true", help="1,000,000 rows and 500,000 words, one repeat")
    bench.add_argument("--mode", action="append", type=_modes, metavar="MODE",
                       help="auto|bypass|serialized|sort, repeatable or comma-separated (default auto)")
    bench.add_argument("--parallelism", type=positive_int, default=2, help="worker processes (default 2)")
    bench.add_argument("--memory", help="memory per worker, e.g. 512m (spark.executor.memory)")
    bench.add_argument("--repeat", type=positive_int, help="runs per system; the median counts (default 3)")
    bench.add_argument("--peers", type=_peers, default=[], metavar="LIST",
                       help="pyspark,dask (object workloads), duckdb,polars (W1/W3/W4 on the same arrays), "
                            "when installed")
    bench.add_argument("--peer-repeat", type=positive_int, metavar="N", help="runs per peer (default: --repeat)")
    bench.add_argument("--columnar", action="store_true",
                       help="also run W1 (sum), W3 and W4 on the numpy columnar path")
    bench.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="any configuration key")
    bench.add_argument("--cache-dir", type=Path, help="where generated inputs are kept (default ~/.cache/shuffle-bench)")
    bench.add_argument("--profile", type=Path, metavar="DIR",
                       help="profile every engine task (cProfile stats per task in DIR, summed in DIR/summary.txt)")
    bench.add_argument("--json", type=Path, metavar="FILE", help="write the results with a machine header")
    bench.add_argument("--markdown", type=Path, metavar="FILE.md", help="write the results as a Markdown table")
    bench.add_argument("--plot", type=Path, metavar="FILE.png", help="draw throughput by workload (needs matplotlib)")
    bench.set_defaults(run=run_bench_command)


def _split(text: str, allowed: tuple, what: str) -> List[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    for item in items:
        if item not in allowed:
            raise argparse.ArgumentTypeError(f"unknown {what} {item!r}; choose from {', '.join(allowed)}")
    return items


def _workloads(text: str) -> List[str]:
    return _split(text.upper(), ("W1", "W2", "W3", "W4", "W5"), "workload")


def _modes(text: str) -> List[str]:
    return _split(text, MODES, "mode")


def _peers(text: str) -> List[str]:
    return _split(text, PEERS, "peer")


def run_bench_command(args: argparse.Namespace) -> int:
    from shuffle.bench.report import format_header, format_row, machine_header, write_json, write_plot
    from shuffle.bench.runner import BenchOptions, run_bench

    conf = {}
    for item in args.conf:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError("--conf", item, "KEY=VALUE")
        conf[key.strip()] = value.strip()
    if args.profile is not None:
        conf["shuffle.task.profileDir"] = str(args.profile.resolve())
    workloads = [w for group in (args.workload or [["W1", "W2", "W3", "W4", "W5"]]) for w in group]
    modes = [m for group in (args.mode or [["auto"]]) for m in group]
    options = BenchOptions(
        workloads=tuple(dict.fromkeys(workloads)), records=args.records, quick=args.quick,
        modes=tuple(dict.fromkeys(modes)), parallelism=args.parallelism, memory=args.memory,
        repeat=args.repeat or (1 if args.quick else 3), peers=tuple(args.peers), peer_repeat=args.peer_repeat,
        columnar=args.columnar, conf=conf, cache_dir=args.cache_dir)
    if options.peers:
        from shuffle.bench.peers import require
        for peer in options.peers:
            require(peer)
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        raise ConfigError("--plot", str(args.plot), "a path, with matplotlib installed (pip install matplotlib)")
    machine = machine_header()
    print(f"shuffle bench on {machine['cores_logical']} cores, {machine['memory_gb']} GB, Python {machine['python']}, "
          f"kernels {machine['kernels']}; parallelism {options.parallelism}, repeat {options.repeat}, "
          f"{options.table_records():,} rows, {options.corpus_words():,} words")
    print(format_header())

    def show(row: Any) -> None:
        print(format_row(row), flush=True)

    rows = run_bench(options, on_row=show)
    if args.profile is not None:
        summary = _summarise_profiles(args.profile)
        print(f"task profiles summed in {summary}")
    if args.json is not None:
        write_json(args.json, options, rows)
        print(f"results written to {args.json}")
    if args.markdown is not None:
        from shuffle.bench.report import format_markdown
        args.markdown.write_text(format_markdown(rows) + "\n")
        print(f"table written to {args.markdown}")
    if args.plot is not None:
        write_plot(args.plot, rows)
        print(f"plot written to {args.plot}")
    return 0


def _summarise_profiles(directory: Path, top: int = 40) -> Path:
    """Sum every task profile in ``directory`` into ``summary.txt`` (by cumulative, then own time)."""
    import io
    import pstats

    files = sorted(str(p) for p in directory.glob("*.prof"))
    out = io.StringIO()
    if files:
        stats = pstats.Stats(*files, stream=out)
        stats.sort_stats("cumulative").print_stats(top)
        stats.sort_stats("tottime").print_stats(top)
    else:
        out.write("no task profiles were written\n")
    path = directory / "summary.txt"
    path.write_text(out.getvalue())
    return path


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run as: shuffle bench")
