"""What a benchmark run produces: a :class:`Row` per system and workload, and the check that makes it count."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List

from shuffle.bench.measure import Timed, median
from shuffle.errors import ShuffleError

__all__ = ["Row", "WorkloadMismatch", "check", "make_row"]


class WorkloadMismatch(ShuffleError):
    """A run's result differed from the baseline's: its time does not count."""


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
    paired: bool = False                 # runs interleaved with the workload's other paired rows

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def make_row(workload: str, system: str, mode: str, records: int, runs: List[Timed], **extra: Any) -> Row:
    """A row from its timed runs: the median time, the largest memory peaks."""
    seconds = median([run.seconds for run in runs])
    return Row(workload, system, mode, records, seconds, [round(r.seconds, 4) for r in runs],
               records / seconds if seconds else 0.0,
               peak_rss_total_mb=max(r.peak_rss_total for r in runs) / 1e6,
               peak_rss_process_mb=max(r.peak_rss_process for r in runs) / 1e6, **extra)


def check(workload: str, system: str, got: Any, oracle: Any) -> None:
    if got != oracle:
        raise WorkloadMismatch(f"{workload} on {system}: result {got!r} differs from the baseline's {oracle!r}")
