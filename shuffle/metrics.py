"""Task metrics: what a writer wrote and what a reader read (names as in DESIGN.md §3).

Plain counters, summed with ``+=`` by the code that does the work and merged
with :meth:`merge` when a stage adds up its tasks. They never time anything
themselves: callers measure with ``time.perf_counter_ns``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Dict, TypeVar

__all__ = ["WriteMetrics", "ReadMetrics"]

M = TypeVar("M", "WriteMetrics", "ReadMetrics")


class _Counters:
    def merge(self: M, other: M) -> M:
        """Add ``other``'s counters into this one; peaks take the maximum. Returns self."""
        for field in fields(self):  # type: ignore[arg-type]
            mine, theirs = getattr(self, field.name), getattr(other, field.name)
            value = max(mine, theirs) if field.name.startswith("peak_") else mine + theirs
            setattr(self, field.name, value)
        return self

    def as_dict(self) -> Dict[str, int]:
        return asdict(self)  # type: ignore[call-overload, no-any-return]


@dataclass
class WriteMetrics(_Counters):
    records_written: int = 0
    bytes_written: int = 0
    spill_count: int = 0
    memory_bytes_spilled: int = 0
    disk_bytes_spilled: int = 0
    write_time_ns: int = 0


@dataclass
class ReadMetrics(_Counters):
    records_read: int = 0
    local_blocks_fetched: int = 0
    remote_blocks_fetched: int = 0
    bytes_read: int = 0
    fetch_wait_time_ns: int = 0
    peak_bytes_in_flight: int = 0
    corrupt_blocks_retried: int = 0
    spill_count: int = 0
    memory_bytes_spilled: int = 0
    disk_bytes_spilled: int = 0
