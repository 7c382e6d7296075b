"""Runs the chosen workloads on the engine, on their baselines and on the peers, in one invocation.

For each workload: prepare the input (cached, not timed), run the baseline
``repeat`` times (its summary is the oracle), then each engine mode and each
peer ``repeat`` times, checking every run's summary against the oracle before
its time counts. A context (or a peer's session) is started once per mode and
its start-up time reported apart from the runs.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from shuffle.bench import data
from shuffle.bench.measure import Timed, median, repeat, timed
from shuffle.bench.workloads import WORKLOADS, Workload
from shuffle.errors import ShuffleError

__all__ = ["BenchOptions", "Row", "run_bench", "WorkloadMismatch"]

logger = logging.getLogger(__name__)

QUICK_RECORDS = 1_000_000
QUICK_WORDS = 500_000
DEFAULT_RECORDS = 10_000_000
DEFAULT_WORDS = 5_000_000


class WorkloadMismatch(ShuffleError):
    """A run's result differed from the baseline's: its time does not count."""


@dataclass
class BenchOptions:
    workloads: Sequence[str] = ("W1", "W2", "W3", "W4", "W5")
    records: Optional[int] = None        # W1-W4 rows; W5 words are half as many
    quick: bool = False
    modes: Sequence[str] = ("auto",)
    parallelism: int = 2
    memory: Optional[str] = None
    repeat: int = 3
    peers: Sequence[str] = ()
    columnar: bool = False               # also run W1/W3/W4 on the numpy columnar path
    conf: Dict[str, str] = field(default_factory=dict)
    cache_dir: Optional[Path] = None

    def table_records(self) -> int:
        return self.records or (QUICK_RECORDS if self.quick else DEFAULT_RECORDS)

    def corpus_words(self) -> int:
        if self.records:
            return max(1, self.records // 2)
        return QUICK_WORDS if self.quick else DEFAULT_WORDS


@dataclass
class Row:
    """One system's result on one workload (medians over the repeats)."""

    workload: str
    system: str                          # "shuffle", "baseline", "pyspark", "dask", "disk"
    mode: str                            # the writer asked for, or what the system is
    records: int
    seconds: float
    runs: List[float]
    records_per_s: float
    startup_s: float = 0.0
    mb_shuffled: float = 0.0
    mb_per_s: float = 0.0
    spills: int = 0
    write_mode: str = ""                 # the writer the engine chose
    peak_rss_total_mb: float = 0.0
    peak_rss_process_mb: float = 0.0
    ratios: Dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def run_bench(options: BenchOptions, on_row: Callable[[Row], None] = lambda row: None) -> List[Row]:
    """Every chosen workload on every system, peers last; ``on_row`` sees each row once measured.

    Ratios are complete in the returned rows; a row shown early lacks ratios to peers measured later.
    """
    for name in options.workloads:
        if name not in WORKLOADS:
            raise ShuffleError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
    cache_dir = options.cache_dir or data.default_cache_dir()
    by_workload: Dict[str, List[Row]] = {}
    inputs: Dict[str, Any] = {}
    oracles: Dict[str, Any] = {}
    for name in options.workloads:
        workload = WORKLOADS[name]
        inputs[name] = _inputs(workload, options, cache_dir)
        records = _record_count(inputs[name])
        logger.info("%s: baseline (%s)", name, workload.baseline_name)
        runs, oracles[name] = repeat(lambda: workload.baseline(inputs[name]), options.repeat)
        rows = [_row(name, "baseline", workload.baseline_name, records, runs)]
        for mode in options.modes:
            if workload.combines and mode in ("bypass", "serialized"):
                # As in Spark: neither writer can combine on the map side.
                logger.warning("%s combines on the map side: the %s writer cannot run it, skipped", name, mode)
                continue
            rows.append(_engine_row(workload, mode, inputs[name], records, oracles[name], options))
        if options.columnar and name in _columnar_jobs():
            rows.append(_engine_row(workload, "columnar", inputs[name], records, oracles[name], options,
                                    job=_columnar_jobs()[name]))
        if name == "W3" and len(rows) > 1:
            rows.append(_disk_floor(options, records, int(rows[1].mb_shuffled * 1e6)))
        _add_ratios(rows)
        for row in rows:
            on_row(row)
        by_workload[name] = rows
    # Peers last: a JVM or a worker pool must not sit in memory while the engine is measured.
    for peer in options.peers:
        from shuffle.bench import peers
        for name in options.workloads:
            workload = WORKLOADS[name]
            row = peers.run_peer(peer, workload, inputs[name], _record_count(inputs[name]), oracles[name], options)
            if row is not None:
                by_workload[name].append(row)
                _add_ratios(by_workload[name])
                on_row(row)
    for rows in by_workload.values():
        _add_ratios(rows)
    return [row for name in options.workloads for row in by_workload[name]]


def _columnar_jobs() -> Dict[str, Callable[[Any, Any], Any]]:
    from shuffle.columnar.bench import COLUMNAR

    return COLUMNAR


def _inputs(workload: Workload, options: BenchOptions, cache_dir: Path) -> Any:
    if workload.input_kind == "table":
        return data.table(options.table_records(), cache_dir)
    return data.corpus(options.corpus_words(), cache_dir)


def _record_count(inputs: Any) -> int:
    return inputs.records if isinstance(inputs, data.Table) else inputs.words


def _row(workload: str, system: str, mode: str, records: int, runs: List[Timed], **extra: Any) -> Row:
    seconds = median([run.seconds for run in runs])
    return Row(workload, system, mode, records, seconds, [round(r.seconds, 4) for r in runs],
               records / seconds if seconds else 0.0,
               peak_rss_total_mb=max(r.peak_rss_total for r in runs) / 1e6,
               peak_rss_process_mb=max(r.peak_rss_process for r in runs) / 1e6, **extra)


def check(workload: str, system: str, got: Any, oracle: Any) -> None:
    if got != oracle:
        raise WorkloadMismatch(f"{workload} on {system}: result {got!r} differs from the baseline's {oracle!r}")


def _engine_row(workload: Workload, mode: str, inputs: Any, records: int, oracle: Any,
                options: BenchOptions, job: Optional[Callable[[Any, Any], Any]] = None) -> Row:
    """The engine on ``workload`` (or on ``job``, the same workload another way), one context for all runs."""
    from shuffle.engine.context import Context

    job = job or workload.engine

    conf = dict(options.conf)
    if options.memory is not None:
        conf["spark.executor.memory"] = options.memory
    if mode in ("bypass", "serialized", "sort"):
        conf["shuffle.writer.force"] = mode
    logger.info("%s: shuffle, mode %s", workload.name, mode)
    started = time.perf_counter()
    with Context(parallelism=options.parallelism, conf=conf, progress=False) as ctx:
        startup = time.perf_counter() - started
        metrics: List[Any] = []

        def once() -> Any:
            summary = job(ctx, inputs)
            metrics.append(ctx.last_job_metrics)
            return summary

        runs, summary = repeat(once, options.repeat)
    check(workload.name, f"shuffle ({mode})", summary, oracle)
    last = metrics[-1]
    shuffled = sum(s.write.bytes_written for s in last.stages if s.kind == "map")
    spills = sum(s.write.spill_count + s.read.spill_count for s in last.stages)
    chosen = ",".join(sorted({s.write_mode for s in last.stages if s.write_mode}))
    row = _row(workload.name, "shuffle", mode, records, runs, startup_s=startup,
               mb_shuffled=shuffled / 1e6, spills=spills, write_mode=chosen)
    row.mb_per_s = row.mb_shuffled / row.seconds if row.seconds else 0.0
    return row


def _disk_floor(options: BenchOptions, records: int, size: int) -> Row:
    """Writing ``size`` bytes (what the engine's first W3 mode shuffled) to one file, then reading them back.

    Sequential, fsynced as the engine's commits are: the floor W3's target is measured against.
    """
    runs = [_write_read(size) for _ in range(options.repeat)]
    row = _row("W3", "disk", "write+read", records, runs, mb_shuffled=size / 1e6)
    row.mb_per_s = row.mb_shuffled / row.seconds if row.seconds else 0.0
    return row


def _write_read(size: int) -> Timed:
    chunk = os.urandom(1 << 20)

    def run() -> None:
        with tempfile.NamedTemporaryFile(prefix="shuffle-bench-disk-") as f:
            left = size
            while left > 0:
                left -= f.write(chunk[:min(left, len(chunk))])
            f.flush()
            os.fsync(f.fileno())
            f.seek(0)
            while f.read(1 << 20):
                pass
    return timed(run)


def _reference_name(row: Row) -> str:
    """What ratios call a row: its system, except that the columnar path is its own reference."""
    return "columnar" if row.mode == "columnar" else row.system


def _add_ratios(rows: List[Row]) -> None:
    """Each row's time over each other system's (the first row of that system) in the same run."""
    references: Dict[str, Row] = {}
    for row in rows:
        references.setdefault(_reference_name(row), row)
    for row in rows:
        row.ratios.clear()
        for system, reference in references.items():
            if reference is not row and reference.seconds:
                row.ratios[system] = row.seconds / reference.seconds
