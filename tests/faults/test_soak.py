"""Soak: 20 million records through ``reduce_by_key`` and ``sort_by_key`` under a 256 MiB worker budget.

Marked slow (``SHUFFLE_SLOW_TESTS=1`` runs it). A sampler thread polls the
resident set of the test process and of every descendant every 50 ms; each
worker's peak must stay within ``spark.executor.memory`` plus
:data:`OVERHEAD`, 96 MiB: the interpreter, numpy, msgpack and the other
imports (about 35 MiB resident before any task, as the idle fork server
shows) plus allocator slack (CPython does not give every freed arena back
to the system). Measured on the development machine (2 cores): workers
peaked at 146 MiB, the driver at 52 MiB, in 17 s (reduce_by_key) + 26 s
(sort_by_key, its count and sample passes included). The driver only generates
the input's partition ids and receives per-partition summaries, so it is
held to :data:`OVERHEAD` alone. Spills must happen on both sides, and each
output is checked record by record against an oracle computed arithmetically
in the workers (the 20 million records never gather in one place).
The peaks and timings are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import operator
import os
import threading
import time
from typing import Any, Dict, Iterator, List, Tuple

import psutil
import pytest

from shuffle import Context

from faults.conftest import session_helpers

MiB = 1 << 20
N = 20_000_000
SLICES = 16
REDUCES = 16
KEYS = 4_000_000                 # reduce_by_key: every key gets N // KEYS ones
STRIDE = 7919                    # prime, coprime with N: x -> x * STRIDE % N permutes range(N)
BUDGET = 256 * MiB
OVERHEAD = 96 * MiB

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("SHUFFLE_SLOW_TESTS"), reason="soak: set SHUFFLE_SLOW_TESTS=1"),
]

# Adaptive map-side combine off: with 4M distinct keys it would stop combining after
# 100k records and stream the rest uncombined, and the point here is the spilling
# combine under a small budget (the adaptive path has its own tests and benchmark).
CONF = {"spark.executor.memory": "256m", "spark.shuffle.sync": "false", "shuffle.mapSideCombine.adaptive": "false"}


class PeakRSS:
    """Samples the RSS of this process and its descendants until stopped; keeps each pid's peak."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peaks: Dict[int, Tuple[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            for proc in [me, *me.children(recursive=True)]:
                try:
                    rss = proc.memory_info().rss
                    name = "driver" if proc.pid == me.pid else " ".join(proc.cmdline())[-60:]
                except psutil.Error:
                    continue
                _, peak = self.peaks.get(proc.pid, ("", 0))
                if rss > peak:
                    self.peaks[proc.pid] = (name, rss)
            self._stop.wait(self.interval)


def _ones(split: int) -> Iterator[Tuple[int, int]]:
    per = N // SLICES
    return ((x % KEYS, 1) for x in range(split * per, (split + 1) * per))


def _permuted(split: int) -> Iterator[Tuple[int, int]]:
    per = N // SLICES
    return ((x * STRIDE % N, x) for x in range(split * per, (split + 1) * per))


def _check_counts(records: Iterator[Tuple[int, int]]) -> Tuple[int, int, int]:
    """(keys, keys with a wrong count, sum of keys) of one reduce partition."""
    keys = wrong = total = 0
    for key, count in records:
        keys += 1
        total += key
        wrong += count != N // KEYS
    return keys, wrong, total


def _check_sorted(records: Iterator[Tuple[int, int]]) -> Tuple[int, Any, Any, int]:
    """(records, first key, last key, faults) of one sorted partition: keys must run up by one."""
    count = faults = 0
    first = last = None
    for key, value in records:
        if first is None:
            first = key
        elif key != last + 1:
            faults += 1
        faults += value * STRIDE % N != key
        last = key
        count += 1
    return count, first, last, faults


def _spills(ctx: Context) -> Tuple[int, int]:
    stages = ctx.last_job_metrics.stages
    return sum(s.write.spill_count for s in stages), sum(s.read.spill_count for s in stages)


def test_twenty_million_records_stay_within_the_memory_budget_and_equal_the_oracle(tmp_path):
    report: List[str] = []
    with PeakRSS() as rss:
        with Context(parallelism=2, conf=CONF, local_dir=tmp_path) as ctx:
            helpers = session_helpers()
            workers = {p.pid for p in psutil.Process().children(recursive=True) if p.ppid() in helpers}
            source = ctx.parallelize(range(SLICES), SLICES)

            started = time.perf_counter()
            counts = source.flat_map(_ones).reduce_by_key(operator.add, REDUCES // 2)
            parts = ctx.run_job(counts, _check_counts)
            reduce_s = time.perf_counter() - started
            reduce_spills = _spills(ctx)
            assert sum(k for k, _, _ in parts) == KEYS
            assert sum(w for _, w, _ in parts) == 0
            assert sum(t for _, _, t in parts) == KEYS * (KEYS - 1) // 2

            started = time.perf_counter()
            ordered = source.flat_map(_permuted).sort_by_key(num_partitions=REDUCES)
            parts = ctx.run_job(ordered, _check_sorted)
            sort_s = time.perf_counter() - started
            sort_spills = _spills(ctx)
            nonempty = [p for p in parts if p[0]]
            assert sum(p[0] for p in parts) == N
            assert sum(p[3] for p in parts) == 0
            assert nonempty[0][1] == 0 and nonempty[-1][2] == N - 1
            assert all(a[2] + 1 == b[1] for a, b in zip(nonempty, nonempty[1:]))
    report.append(f"reduce_by_key: {reduce_s:.1f} s, spills write/read {reduce_spills}")
    report.append(f"sort_by_key (sample, shuffle): {sort_s:.1f} s, spills write/read {sort_spills}")
    for pid, (name, peak) in sorted(rss.peaks.items(), key=lambda item: -item[1][1]):
        role = "driver" if name == "driver" else ("worker" if pid in workers else "helper")
        report.append(f"peak RSS {role:6} pid {pid}: {peak / MiB:.0f} MiB  {name}")
    print("\n" + "\n".join(report))

    assert sum(reduce_spills) > 0, "reduce_by_key never spilled"
    assert sum(sort_spills) > 0, "sort_by_key never spilled"
    for pid, (name, peak) in rss.peaks.items():
        limit = OVERHEAD if name == "driver" else BUDGET + OVERHEAD
        assert peak <= limit, f"{name} (pid {pid}) peaked at {peak / MiB:.0f} MiB > {limit / MiB:.0f} MiB"
