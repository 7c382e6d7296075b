"""Runs the chosen workloads on the engine, on their baselines and on the peers, in one invocation.

For each workload: prepare the input (cached, not timed), then ``repeat``
rounds of the baseline and every engine mode in turn (the baseline's first
summary is the oracle; every run's summary is checked against it before its
time counts), so ratios are taken run by run. Each mode's context is started
once and its start-up time reported apart. Peers run last, after every
workload, so a JVM or a worker pool never sits beside a measured engine.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from shuffle.bench import data
from shuffle.bench.measure import Timed, median, timed
from shuffle.bench.results import Row, check, make_row
from shuffle.bench.workloads import WORKLOADS, Workload
from shuffle.errors import ShuffleError

__all__ = ["BenchOptions", "run_bench"]

logger = logging.getLogger(__name__)

QUICK_RECORDS = 1_000_000
QUICK_WORDS = 500_000
DEFAULT_RECORDS = 10_000_000
DEFAULT_WORDS = 5_000_000


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
    peer_repeat: Optional[int] = None    # runs per peer (default: repeat); PySpark at 10M rows is slow
    columnar: bool = False               # also run W1/W3/W4 on the numpy columnar path
    conf: Dict[str, str] = field(default_factory=dict)
    cache_dir: Optional[Path] = None

    def table_records(self) -> int:
        return self.records or (QUICK_RECORDS if self.quick else DEFAULT_RECORDS)

    def corpus_words(self) -> int:
        if self.records:
            return max(1, self.records // 2)
        return QUICK_WORDS if self.quick else DEFAULT_WORDS


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
        rows, oracles[name] = _measure_workload(workload, inputs[name], options)
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


def _measure_workload(workload: Workload, inputs: Any, options: BenchOptions) -> Tuple[List[Row], Any]:
    """The baseline and every engine mode, run in turn (baseline, mode 1, mode 2, ... then again).

    Interleaved, so a drift in the machine's speed reaches every system alike;
    ratios are then taken run by run. The baseline's first result is the oracle.
    """
    records = _record_count(inputs)
    engines: List[_Engine] = []
    try:
        for mode in options.modes:
            if workload.combines and mode in ("bypass", "serialized"):
                # As in Spark: neither writer can combine on the map side.
                logger.warning("%s combines on the map side: the %s writer cannot run it, skipped", workload.name, mode)
                continue
            engines.append(_Engine(workload, mode, inputs, options))
        if options.columnar and workload.name in _columnar_jobs():
            engines.append(_Engine(workload, "columnar", inputs, options, job=_columnar_jobs()[workload.name]))
        baseline_runs: List[Timed] = []
        oracle: Any = None
        for i in range(options.repeat):
            # The baseline's own process only: idle engine workers are not its memory.
            run = timed(lambda: workload.baseline(inputs), children=False)
            if i == 0:
                oracle = run.result
            check(workload.name, "baseline (a rerun)", run.result, oracle)
            baseline_runs.append(run)
            for engine in engines:
                engine.run_once(oracle)
    finally:
        for engine in engines:
            engine.close()
    rows = [make_row(workload.name, "baseline", workload.baseline_name, records, baseline_runs, paired=True)]
    rows.extend(engine.row(records) for engine in engines)
    if workload.name == "W3" and len(rows) > 1:
        rows.append(_disk_floor(options, records, int(rows[1].mb_shuffled * 1e6)))
    return rows, oracle


class _Engine:
    """One engine mode on one workload: its context stays open across the runs."""

    def __init__(self, workload: Workload, mode: str, inputs: Any, options: BenchOptions,
                 job: Optional[Callable[[Any, Any], Any]] = None) -> None:
        from shuffle.engine.context import Context

        self.workload, self.mode, self.inputs = workload, mode, inputs
        self.job = job or workload.engine
        conf = dict(options.conf)
        if options.memory is not None:
            conf["spark.executor.memory"] = options.memory
        if mode in ("bypass", "serialized", "sort"):
            conf["shuffle.writer.force"] = mode
        started = time.perf_counter()
        self.ctx = Context(parallelism=options.parallelism, conf=conf, progress=False)
        self.startup = time.perf_counter() - started
        self.runs: List[Timed] = []
        self.metrics: List[Any] = []

    def run_once(self, oracle: Any) -> None:
        logger.info("%s: shuffle, mode %s, run %d", self.workload.name, self.mode, len(self.runs) + 1)
        run = timed(lambda: self.job(self.ctx, self.inputs))
        check(self.workload.name, f"shuffle ({self.mode})", run.result, oracle)
        self.runs.append(run)
        self.metrics.append(self.ctx.last_job_metrics)

    def close(self) -> None:
        self.ctx.stop()

    def row(self, records: int) -> Row:
        last = self.metrics[-1]
        shuffled = sum(s.write.bytes_written for s in last.stages if s.kind == "map")
        spills = sum(s.write.spill_count + s.read.spill_count for s in last.stages)
        chosen = ",".join(sorted({s.write_mode for s in last.stages if s.write_mode}))
        row = make_row(self.workload.name, "shuffle", self.mode, records, self.runs, startup_s=self.startup,
                   mb_shuffled=shuffled / 1e6, spills=spills, write_mode=chosen, paired=True)
        row.mb_per_s = row.mb_shuffled / row.seconds if row.seconds else 0.0
        return row


def _disk_floor(options: BenchOptions, records: int, size: int) -> Row:
    """Writing ``size`` bytes (what the engine's first W3 mode shuffled) to one file, then reading them back.

    Sequential, fsynced as the engine's commits are: the floor W3's target is measured against.
    """
    runs = [_write_read(size) for _ in range(options.repeat)]
    row = make_row("W3", "disk", "write+read", records, runs, mb_shuffled=size / 1e6)
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
    """Each row's time over each other system's (the first row of that system) in the same invocation."""
    references: Dict[str, Row] = {}
    for row in rows:
        references.setdefault(_reference_name(row), row)
    for row in rows:
        row.ratios.clear()
        for system, reference in references.items():
            if reference is row or not reference.seconds:
                continue
            if row.paired and reference.paired and len(row.runs) == len(reference.runs):
                # Run i of each was measured back to back: the median of the pairwise ratios.
                row.ratios[system] = median([a / b for a, b in zip(row.runs, reference.runs) if b])
            else:
                row.ratios[system] = row.seconds / reference.seconds
