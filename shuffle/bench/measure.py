"""Timing and memory of one measured run: wall time, and peak RSS of this process and its children.

RSS is sampled by a background thread (psutil) every ``interval`` seconds over
this process and every descendant (workers, fetch processes, a peer's JVM or
Dask workers), so a peak shorter than the interval can be missed; the report
says it is sampled.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Tuple

import psutil

__all__ = ["MemorySampler", "Timed", "timed", "median"]


@dataclass
class MemorySampler:
    """Peak RSS in bytes: of all processes together, and of the largest single process."""

    interval: float = 0.05
    children: bool = True
    peak_total: int = 0
    peak_process: int = 0
    peaks_by_pid: Dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._me = psutil.Process()

    def __enter__(self) -> "MemorySampler":
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        total = 0
        try:
            processes = [self._me] + (self._me.children(recursive=True) if self.children else [])
        except psutil.Error:
            return
        for process in processes:
            try:
                rss = process.memory_info().rss
            except psutil.Error:  # ended between listing and reading
                continue
            total += rss
            if rss > self.peaks_by_pid.get(process.pid, 0):
                self.peaks_by_pid[process.pid] = rss
        self.peak_total = max(self.peak_total, total)
        self.peak_process = max(self.peak_process, max(self.peaks_by_pid.values(), default=0))


@dataclass
class Timed:
    seconds: float
    result: Any
    peak_rss_total: int
    peak_rss_process: int


def timed(func: Callable[[], Any], children: bool = True) -> Timed:
    """Run ``func`` once, timing it and sampling memory (of the child processes too, unless told not to)."""
    with MemorySampler(children=children) as memory:
        started = time.perf_counter()
        result = func()
        seconds = time.perf_counter() - started
    return Timed(seconds, result, memory.peak_total, memory.peak_process)


def median(values: List[float]) -> float:
    return statistics.median(values) if values else float("nan")


def repeat(func: Callable[[], Any], times: int) -> Tuple[List[Timed], Any]:
    """``times`` runs of ``func``; every run must give the same result (returned once)."""
    runs = [timed(func) for _ in range(times)]
    first = runs[0].result
    for run in runs[1:]:
        if run.result != first:
            raise AssertionError(f"runs disagree: {first!r} then {run.result!r}")
    return runs, first
