"""The ``shuffle`` command: ``demo``, ``wordcount``, ``explain``, ``inspect`` and ``--version``.

A user error (a missing file, a bad option, a bad configuration value) is one
line on stderr and exit code 2; a failed job is one line and exit code 1.
Tracebacks are for bugs, not for users: ``--debug`` shows them anyway.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, NoReturn, Optional, Sequence

from shuffle import __version__
from shuffle.checksum import checksum_of
from shuffle.errors import ConfigError, InputNotFoundError, OutputExistsError, ShuffleError

__all__ = ["main"]

logger = logging.getLogger(__name__)

USER_ERRORS = (ConfigError, InputNotFoundError, OutputExistsError)
# Sized so the map-side combine of the default demo spills: many distinct words
# (a long Zipf tail) against a small per-worker budget.
DEMO_WORDS = 3_000_000
DEMO_VOCABULARY = 300_000
DEMO_MEMORY = "16m"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("shuffle: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        if args.debug:
            raise
        print(f"shuffle: error: {e}", file=sys.stderr)
        return 2
    except ShuffleError as e:
        if args.debug:
            raise
        first_line = str(e).splitlines()[0]
        print(f"shuffle: job failed: {first_line}", file=sys.stderr)
        return 1


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the full usage stays behind --help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="shuffle", description="Spark's sort-based shuffle in Python.")
    parser.add_argument("--version", action="version", version=f"shuffle {__version__}")
    parser.add_argument("--debug", action="store_true", help="log at debug level and show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    demo = commands.add_parser("demo", help="word count over a generated corpus, with the stage metrics")
    demo.add_argument("--words", type=_positive_int, default=DEMO_WORDS, help=f"corpus size (default {DEMO_WORDS:,})")
    demo.add_argument("--vocabulary", type=_positive_int, default=DEMO_VOCABULARY,
                      help=f"distinct words to draw from (default {DEMO_VOCABULARY:,})")
    demo.add_argument("--top", type=_positive_int, default=10, help="how many top words to print")
    _add_job_options(demo, default_memory=DEMO_MEMORY)
    demo.set_defaults(run=_run_demo)

    wordcount = commands.add_parser("wordcount", help="count the words of text files")
    wordcount.add_argument("files", nargs="+", help="files, directories or globs")
    wordcount.add_argument("--top", type=_positive_int, default=20, help="how many top words to print")
    _add_job_options(wordcount, default_memory=None)
    wordcount.set_defaults(run=_run_wordcount)

    explain = commands.add_parser("explain", help="trace a tiny job's bytes through the real writers and readers")
    explain.add_argument("--mode", choices=["bypass", "serialized", "sort"], default="sort",
                         help="the writer to trace (default sort)")
    explain.add_argument("--records", type=_bounded_int(1, 1000), default=12, help="input records (default 12)")
    explain.add_argument("--partitions", type=_bounded_int(1, 64), default=3, help="reduce partitions (default 3)")
    explain.add_argument("--maps", type=_bounded_int(1, 8), default=2, help="map tasks (default 2)")
    explain.add_argument("--seed", type=_bounded_int(0, 2**31 - 1), default=0, help="input seed (default 0)")
    explain.add_argument("--codec", choices=["none", "lz4", "zstd", "zlib"], default="none",
                         help="block compression (default none, so the bytes stay readable)")
    explain.add_argument("--spill-after", type=_bounded_int(1, 2**31 - 1), default=None, metavar="N",
                         help="force a spill every N records (default: half a map's records)")
    explain.add_argument("--html", metavar="FILE", help="also write the explanation as one HTML page")
    explain.set_defaults(run=_run_explain)

    inspect = commands.add_parser("inspect", help="list shuffle files under a directory and verify their checksums")
    inspect.add_argument("directory")
    inspect.set_defaults(run=_run_inspect)

    from shuffle.bench.command import add_bench_parser
    add_bench_parser(commands, _positive_int)
    return parser


def _add_job_options(parser: argparse.ArgumentParser, default_memory: Optional[str]) -> None:
    parser.add_argument("--partitions", type=_positive_int, default=8, help="reduce partitions (default 8)")
    parser.add_argument("--parallelism", type=_positive_int, default=2, help="worker processes (default 2)")
    parser.add_argument("--mode", choices=["auto", "bypass", "serialized", "sort"], default="auto",
                        help="force a shuffle writer (default: chosen as Spark chooses)")
    parser.add_argument("--memory", default=default_memory,
                        help="memory budget per worker, e.g. 512m (spark.executor.memory)")
    parser.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="any configuration key")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def _bounded_int(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be from {lo} to {hi}: {text}")
        return value
    return parse


def _job_conf(args: argparse.Namespace) -> Dict[str, str]:
    conf: Dict[str, str] = {}
    for item in args.conf:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError("--conf", item, "KEY=VALUE")
        conf[key.strip()] = value.strip()
    if args.memory is not None:
        conf["spark.executor.memory"] = args.memory
    if args.mode != "auto":
        conf["shuffle.writer.force"] = args.mode
    return conf


def _count_words(args: argparse.Namespace, paths: List[str], title: str) -> int:
    from shuffle.engine.context import Context
    from shuffle.wordcount import top_words, word_count

    progress = None if not args.quiet else False
    started = time.perf_counter()
    with Context(parallelism=args.parallelism, conf=_job_conf(args), progress=progress) as ctx:
        counts = word_count(ctx, paths, args.partitions)
        distinct = counts.count()
        count_metrics = ctx.last_job_metrics
        top = top_words(counts, args.top)
        top_metrics = ctx.last_job_metrics
    elapsed = time.perf_counter() - started
    print(title)
    print(f"{distinct:,} distinct words; top {len(top)}:")
    width = max((len(word) for word, _ in top), default=4)
    for word, count in top:
        print(f"  {word.ljust(width)}  {count:>10,}")
    for name, metrics in (("word count (map-side combine, then reduce)", count_metrics),
                          ("top words (range-partitioned sort by count)", top_metrics)):
        print(f"\nstages of the {name} job:")
        print(metrics.table() if metrics is not None else "(no job ran)")
    print(f"\ntotal {elapsed:.2f} s with {args.parallelism} workers")
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from shuffle.wordcount import generate_corpus

    with tempfile.TemporaryDirectory(prefix="shuffle-demo-") as tmp:
        started = time.perf_counter()
        paths = generate_corpus(Path(tmp), args.words, vocabulary=args.vocabulary)
        title = (f"shuffle demo: word count of {args.words:,} Zipf-distributed words in {len(paths)} files "
                 f"(generated in {time.perf_counter() - started:.1f} s), memory {args.memory} per worker")
        return _count_words(args, [str(p) for p in paths], title)


def _run_wordcount(args: argparse.Namespace) -> int:
    return _count_words(args, list(args.files), f"shuffle wordcount: {', '.join(args.files)}")


def _run_explain(args: argparse.Namespace) -> int:
    from shuffle.explain.html import render_html
    from shuffle.explain.text import render_text
    from shuffle.explain.trace import run_trace

    html_path = Path(args.html) if args.html else None
    if html_path is not None and not html_path.parent.is_dir():
        raise ConfigError("--html", args.html, "a file in an existing directory")
    trace = run_trace(args.mode, args.records, args.partitions, args.maps, args.seed, args.codec, args.spill_after)
    print(render_text(trace), end="")
    if html_path is not None:
        html_path.write_text(render_html(trace), encoding="utf-8")
        print(f"wrote {html_path}")
    return 0


def _run_inspect(args: argparse.Namespace) -> int:
    from shuffle.resolver import IndexShuffleBlockResolver

    root = Path(args.directory)
    if not root.is_dir():
        raise InputNotFoundError(str(root), "not a directory")
    indexes = sorted(root.rglob("shuffle_*_0.index"))
    if not indexes:
        print(f"no shuffle files under {root}")
        return 0
    problems = 0
    for index in indexes:
        shuffle_id, map_id = (int(part) for part in index.name.split("_")[1:3])
        resolver = IndexShuffleBlockResolver(index.parent, checksum_algorithm=None, sync=False)
        try:
            offsets = resolver.read_offsets(shuffle_id, map_id)
        except (OSError, ShuffleError) as e:
            print(f"{index}: unreadable index: {e}")
            problems += 1
            continue
        lengths = [b - a for a, b in zip(offsets, offsets[1:])]
        valid = resolver.check_index_and_data(shuffle_id, map_id, len(lengths)) is not None
        verdicts = _verify_checksums(index.parent, shuffle_id, map_id, lengths, resolver) if valid else []
        bad = [r for r, verdict in enumerate(verdicts) if verdict is False]
        state = "INVALID (index and data disagree)" if not valid else (
            f"checksum MISMATCH in partitions {bad}" if bad else
            ("checksums OK" if verdicts else "no checksum file"))
        problems += (not valid) + bool(bad)
        print(f"{index.parent}/shuffle_{shuffle_id}_{map_id}_0: {len(lengths)} partitions, "
              f"{sum(lengths):,} bytes, {state}")
        print("  bytes per partition: " + " ".join(str(n) for n in lengths))
    return 1 if problems else 0


def _verify_checksums(directory: Path, shuffle_id: int, map_id: int, lengths: List[int],
                      resolver: "object") -> List[bool]:
    """Per partition: does the stored checksum match the data? Empty when there is no checksum file."""
    files = sorted(directory.glob(f"shuffle_{shuffle_id}_{map_id}_0.checksum.*"))
    if not files:
        return []
    algorithm = files[0].name.rsplit(".", 1)[1]
    raw = files[0].read_bytes()
    stored = [int.from_bytes(raw[i:i + 8], "big", signed=True) for i in range(0, len(raw), 8)]
    verdicts = []
    for reduce_id in range(len(lengths)):
        data = resolver.read_block(shuffle_id, map_id, reduce_id) if lengths[reduce_id] else b""  # type: ignore[attr-defined]
        verdicts.append(reduce_id < len(stored) and stored[reduce_id] == checksum_of(algorithm, data))
    return verdicts


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
